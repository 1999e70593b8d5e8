"""``eqxllm convert SRC DST``: copy a checkpoint between layouts, dtypes and shard sizes.

SRC: a Hugging Face directory or Hub id (any family eqxllm knows), or a training run directory
(``eqxllm train --out``), whose exported ``model/`` is read. DST is always a Hugging Face directory,
with SRC's tokenizer files and ``generation_config.json`` copied as they are.
"""

import argparse
from pathlib import Path

import jax.numpy as jnp

from eqxllm.cli._numbers import shard_size

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint to Hugging Face safetensors layout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="Hugging Face directory, training run directory (its model/) or Hub repo id")
    p.add_argument("dst", help="output directory (created; written atomically)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast floating weights (default: keep)")
    p.add_argument(
        "--max-shard-size", type=shard_size, default="5GB", help="shard above this size, e.g. 500MB (default 5GB)"
    )
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqxllm.checkpoints import from_pretrained, save_pretrained
    from eqxllm.checkpoints.generation_config import GENERATION_CONFIG
    from eqxllm.checkpoints.hub import resolve_pretrained
    from eqxllm.checkpoints.side_files import copy_side_files
    from eqxllm.data.tokenizer import find_tokenizer

    dtype = DTYPES[args.dtype] if args.dtype else None
    src = resolve_pretrained(args.src, revision=args.revision)
    model = from_pretrained(src, dtype=dtype)  # None: keep the stored dtype
    tokenizer = find_tokenizer(src)  # carried along when the source has one
    out = save_pretrained(model, args.dst, max_shard_size=args.max_shard_size, dtype=dtype, tokenizer=tokenizer)
    # the source's tokenizer files and generation_config.json (stop ids, sampling defaults) as they are
    if GENERATION_CONFIG not in copy_side_files(Path(src), out):
        (out / GENERATION_CONFIG).unlink(missing_ok=True)  # an earlier save's, of another model
    print(f"wrote {type(model).__name__} ({model.config.model_type}) to {out}")
    return 0

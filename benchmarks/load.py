"""Time ``eqxllm.from_pretrained`` on a GPT-2 124M-shaped checkpoint, up to the first logits.

A checkpoint with random weights is written first, in a child process so that the measuring process
starts cold: by ``eqxllm.save_pretrained`` (default) or by ``transformers`` (``--writer
transformers``, if installed). Then, in this process:

- cold: ``from_pretrained(dir)`` (the first JAX work in the process: backend start, reading and
  placing every tensor), then a jitted forward of a ``--seq``-token input up to
  ``block_until_ready`` (tracing and compiling included);
- warm: the same load and call again in the same process (compilation cached).

Prints one JSON line: ``load_s``, ``first_logits_s`` and ``cold_total_s`` (cold), ``warm_load_s``,
``warm_first_logits_s`` and ``warm_total_s`` (warm), ``forward_s`` (a third, steady-state call),
``import_s`` (``import eqxllm``), plus what was measured (device, sizes, versions).

    python benchmarks/load.py                       # 124M, float32, 32 tokens
    python benchmarks/load.py --dir path/to/gpt2    # an existing checkpoint instead
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_checkpoint(directory: Path, writer: str) -> None:
    """A GPT-2 124M (``GPT2Config.gpt2_small()``) with random weights, saved in Hugging Face layout."""
    if writer == "transformers":
        import torch
        import transformers

        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(directory)
        return
    import jax

    import eqxllm
    from eqxllm.models import GPT2, GPT2Config

    model = GPT2(GPT2Config.gpt2_small(), key=jax.random.key(0))
    eqxllm.save_pretrained(model, directory)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix == ".safetensors")


def measure(directory: Path, seq: int, dtype_name: str) -> dict:
    t = time.perf_counter()
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import eqxllm

    import_s = time.perf_counter() - t
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]

    @eqx.filter_jit
    def forward(model, ids):
        return model(ids)

    def load_and_call() -> tuple[float, float, object]:
        t0 = time.perf_counter()
        model = eqxllm.from_pretrained(directory, dtype=dtype)
        jax.block_until_ready(eqx.filter(model, eqx.is_array))
        t1 = time.perf_counter()
        ids = jnp.arange(seq, dtype=jnp.int32) % model.config.vocab_size
        forward(model, ids).block_until_ready()
        return t1 - t0, time.perf_counter() - t1, model

    load_s, first_s, model = load_and_call()
    warm_load_s, warm_first_s, model = load_and_call()
    ids = jnp.arange(seq, dtype=jnp.int32) % model.config.vocab_size
    t = time.perf_counter()
    forward(model, ids).block_until_ready()
    forward_s = time.perf_counter() - t
    cfg = model.config
    return {
        "load_s": round(load_s, 4),
        "first_logits_s": round(first_s, 4),
        "cold_total_s": round(load_s + first_s, 4),
        "warm_load_s": round(warm_load_s, 4),
        "warm_first_logits_s": round(warm_first_s, 4),
        "warm_total_s": round(warm_load_s + warm_first_s, 4),
        "forward_s": round(forward_s, 4),
        "import_s": round(import_s, 4),
        "params": int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))),
        "checkpoint_bytes": _size(directory),
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "seq": seq,
        "dtype": dtype_name,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "eqxllm": eqxllm.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="an existing checkpoint directory (default: write a random 124M one)")
    parser.add_argument("--writer", choices=["eqxllm", "transformers"], default="eqxllm")
    parser.add_argument("--seq", type=int, default=32, help="input length of the timed forward (default 32)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.write_only is not None:
        write_checkpoint(args.write_only, args.writer)
        return 0
    with tempfile.TemporaryDirectory(prefix="eqxllm-load-bench-") as tmp:
        directory = args.dir
        writer = "given"
        if directory is None:
            directory, writer = Path(tmp) / "gpt2-124m", args.writer
            print(f"writing a random GPT-2 124M checkpoint with {writer} to {directory}", file=sys.stderr)
            env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
            child = [sys.executable, __file__, "--write-only", str(directory), "--writer", writer]
            subprocess.run(child, check=True, env=env)
        result = measure(directory, args.seq, args.dtype)
        result["writer"] = writer
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the example scripts share: the flags of a preset run, the preset pointed at them, a story told
by a trained model, and the one-line errors of ``eqxllm.cli.guarded``.

Each script imports this module by name (``python examples/X.py`` puts ``examples/`` on the path).
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

import eqxllm
from eqxllm.cli import OneLineParser, guarded
from eqxllm.data import load_tokenizer
from eqxllm.errors import ConfigError
from eqxllm.train import train_preset
from eqxllm.train.config import TrainConfig

_PRESET_S = "the preset's"


def run_parser(doc: str | None, *, out: str | None, minutes: float | None = 10.0) -> argparse.ArgumentParser:
    """A parser with the flags of a preset run: ``--data``, ``--out``, ``--minutes`` and ``--resume``."""
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="hub", help="'hub' (default), a text file or a folder of them")
    parser.add_argument("--out", default=out, help=f"run directory (default: {out or _PRESET_S})")
    shown = _PRESET_S if minutes is None else f"{minutes:g}"
    parser.add_argument("--minutes", type=float, default=minutes, help=f"training time budget (default: {shown})")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    return parser


def preset_run(preset: str, args: argparse.Namespace) -> TrainConfig:
    """Preset ``preset`` pointed at the flags of :func:`run_parser`."""
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"--minutes must be > 0, got {args.minutes}")
    return train_preset(preset).for_run(data=args.data, out=args.out, max_minutes=args.minutes, resume=args.resume)


def tell_stories(model_dir: Path, prompts: list[str], *, max_new_tokens: int, sample: bool = True, joiner: str = ""):
    """Print each prompt, ``joiner`` and its continuation by the model in ``model_dir`` (sampled at
    temperature 0.8 among the top 50 with a fixed key, or greedy); returns the model."""
    model = eqxllm.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    ids = [tokenizer.encode(p).ids for p in prompts]  # several prompts are left-padded together
    batch = ids if len(ids) > 1 else jnp.asarray(ids[0])
    if sample:
        new = eqxllm.generate(
            model, batch, max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, key=jax.random.key(0)
        )
    else:
        new = eqxllm.generate(model, batch, max_new_tokens=max_new_tokens)
    rows = new.tolist() if len(ids) > 1 else [new.tolist()]
    for prompt, tokens in zip(prompts, rows, strict=True):
        print(f"\n{prompt}{joiner}{tokenizer.decode(tokens)}")
    return model


def run_script(name: str, main: Callable[[], None]) -> None:
    """Run ``main`` as script ``name``: a bad flag, file or network is one line and exit status 2."""
    raise SystemExit(guarded(name, main))

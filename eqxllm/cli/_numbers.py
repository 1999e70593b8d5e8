"""argparse types for the numbers flags take: a bad value is refused while parsing, before any model
loads or any output is written, with one line naming the flag (argparse adds it)."""

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: an integer in ``[0, 2**63)``, which ``jax.random.key`` takes."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {value}")
    return value


def _number(text: str, what: str, ok) -> float:
    """``text`` as a float for which ``ok`` holds, else ``ArgumentTypeError`` saying it expected ``what``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def finite_float(text: str) -> float:
    """A finite number of any sign, as ``--length-penalty`` takes."""
    return _number(text, "a finite number", math.isfinite)


def non_negative_float(text: str) -> float:
    """A finite number >= 0, as ``--temperature`` takes."""
    return _number(text, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)


def positive_float(text: str) -> float:
    """A finite number > 0, as ``--repetition-penalty`` takes."""
    return _number(text, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def unit_interval(text: str) -> float:
    """A number in [0, 1], as ``--min-p`` takes."""
    return _number(text, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def probability(text: str) -> float:
    """A probability in (0, 1], as ``--top-p`` takes."""
    return _number(text, "a number in (0, 1]", lambda v: 0 < v <= 1)


def shard_size(text: str) -> str:
    """A shard size such as ``500MB`` or ``2GiB`` (checked now, so a bad one creates nothing)."""
    from eqxllm.checkpoints.checkpoint_dir import parse_size
    from eqxllm.errors import CheckpointError

    try:
        parse_size(text)
    except CheckpointError:
        raise argparse.ArgumentTypeError(f"expected a positive size like 500MB, 5GB or 2GiB, got {text!r}") from None
    return text

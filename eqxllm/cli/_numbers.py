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


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0, as ``--repetition-penalty`` takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1], as ``--min-p`` takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def probability(text: str) -> float:
    """A probability in (0, 1], as ``--top-p`` takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def shard_size(text: str) -> str:
    """A shard size such as ``500MB`` or ``2GiB`` (checked now, so a bad one creates nothing)."""
    from eqxllm.checkpoints.checkpoint_dir import parse_size
    from eqxllm.errors import CheckpointError

    try:
        parse_size(text)
    except CheckpointError:
        raise argparse.ArgumentTypeError(f"expected a positive size like 500MB, 5GB or 2GiB, got {text!r}") from None
    return text

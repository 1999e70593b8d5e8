"""Packed fixed-length training windows, in an order that is a pure function of ``(seed, step)``.

The token array (stories joined by end-of-text ids) is cut into ``num_windows = (len(tokens) - 1) //
seq_len`` windows of ``seq_len + 1`` tokens starting every ``seq_len`` tokens (neighbours share one
token): ``window[:-1]`` is the input and ``window[1:]`` its next-token targets, so no token is wasted.

Epoch ``e`` visits every window once in the order of a permutation drawn from numpy's generator seeded
with ``(seed, e)``; step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` (the
windows left over after the last whole batch wait for a later epoch's shuffle). A resumed run needs
only its step number: there is no iterator state to save. With several processes each takes its
contiguous ``batch_size / process_count`` rows of the global batch, which is how a global array is laid
out over a data-parallel mesh (``jax.make_array_from_process_local_data``).
"""

import functools
from collections.abc import Iterator

import numpy as np
from jaxtyping import Int32, Integer

from eqxllm.errors import ConfigError, DataError


def num_windows(tokens: Integer[np.ndarray, " tokens"], seq_len: int) -> int:
    """How many windows of ``seq_len + 1`` tokens, ``seq_len`` apart, fit in ``tokens``."""
    if seq_len < 1:
        raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
    count = (len(tokens) - 1) // seq_len if len(tokens) else 0
    if count == 0:
        raise DataError(
            f"{len(tokens)} tokens are fewer than one window of seq_len + 1 = {seq_len + 1}; "
            "give more text or a shorter seq_len"
        )
    return count


def num_batches(tokens: Integer[np.ndarray, " tokens"], batch_size: int, seq_len: int) -> int:
    """Steps per epoch: whole global batches of ``batch_size`` windows."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    windows = num_windows(tokens, seq_len)
    if windows < batch_size:
        raise DataError(
            f"{len(tokens)} tokens make {windows} windows of seq_len + 1 = {seq_len + 1}, fewer than one "
            f"batch of {batch_size}; give more text or a smaller batch_size / seq_len"
        )
    return windows // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, windows: int) -> np.ndarray:
    # Cached: a permutation of ~2M windows costs ~20 ms, paid once per epoch instead of once per step.
    order = np.random.default_rng([seed, epoch]).permutation(windows)
    order.flags.writeable = False
    return order


def _process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ConfigError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if batch_size % process_count:
        raise ConfigError(f"batch_size={batch_size} is not a multiple of process_count={process_count}")
    rows = batch_size // process_count
    return slice(process_index * rows, (process_index + 1) * rows)


def _gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    return np.array(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int32)


def batch_at(
    tokens: Integer[np.ndarray, " tokens"],
    step: int | np.integer,
    *,
    batch_size: int,
    seq_len: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Int32[np.ndarray, "batch window"]:
    """This process's rows of the global batch of ``step``: ``[batch_size / process_count, seq_len + 1]``.

    Row ``i`` is one window; train on ``batch[:, :-1]`` with targets ``batch[:, 1:]``.
    """
    if step < 0:
        raise ConfigError(f"step must be >= 0, got {step}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    rows = _process_rows(batch_size, process_index, process_count)
    steps_per_epoch = num_batches(tokens, batch_size, seq_len)
    epoch, index = divmod(int(step), steps_per_epoch)
    order = _epoch_order(seed, epoch, num_windows(tokens, seq_len))
    mine = order[index * batch_size : (index + 1) * batch_size][rows]
    return _gather(tokens, mine * seq_len, seq_len)


def eval_batches(
    tokens: Integer[np.ndarray, " tokens"],
    batch_size: int,
    seq_len: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Int32[np.ndarray, "batch window"]]:
    """Every window of ``tokens`` once, in order, in batches of ``batch_size`` (this process's rows).

    The last batch holds the remaining windows, rounded down to a multiple of ``process_count`` (it is
    left out when that is none), so it may be smaller than ``batch_size``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    _process_rows(batch_size, process_index, process_count)
    windows = num_windows(tokens, seq_len)

    def batches() -> Iterator[np.ndarray]:
        for first in range(0, windows, batch_size):
            size = min(batch_size, windows - first)
            size -= size % process_count
            if size == 0:
                return
            rows = _process_rows(size, process_index, process_count)
            starts = np.arange(first, first + size)[rows] * seq_len
            yield _gather(tokens, starts, seq_len)

    return batches()

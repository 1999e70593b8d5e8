"""Fixed-size batches of rows, so that a loop over a data set compiles one program (two at most)."""

from collections.abc import Iterator
from typing import Any

import numpy as np


def fixed_batches(batch_size: int, *arrays: np.ndarray) -> Iterator[tuple[Any, ...]]:
    """``(real, *chunks)``: ``arrays`` (the same number of rows each) cut into chunks of ``batch_size``
    rows, or of all the rows when there are fewer (two sentences do not pay for 64); the last chunk is
    padded by repeating its last row, and ``real`` counts its rows that are not padding."""
    n = len(arrays[0])
    size = max(1, min(batch_size, n))
    for lo in range(0, n, size):
        chunks = [a[lo : lo + size] for a in arrays]
        real = len(chunks[0])
        if real < size:
            chunks = [np.concatenate([c, np.repeat(c[-1:], size - real, axis=0)]) for c in chunks]
        yield real, *chunks

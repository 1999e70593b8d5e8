"""Prompts in, a left-padded batch out: the checks every generation entry point runs before compiling.

A prompt is one 1-D array of token ids, a 2-D array (a batch of equal lengths), or a list of 1-D
arrays / lists of ints of different lengths. Shorter prompts are padded on the left, so that every
sequence's last prompt token sits in the same slot and new tokens are written in lockstep; the mask
marks real tokens, and the model's KV cache counts positions over real tokens only.
"""

from collections.abc import Sequence

import numpy as np
from jaxtyping import Array, Bool, Int

from eqxllm.errors import InputError

Prompt = (
    Int[Array, "*batch seq"]
    | Int[np.ndarray, "*batch seq"]
    | Sequence[Int[Array, " _len"] | Int[np.ndarray, " _len"] | Sequence[int]]
    | Sequence[int]  # rejected with a clear message: a list is a batch
)


def left_pad(
    prompt: Prompt, *, pad_id: int = 0
) -> tuple[Int[np.ndarray, "batch seq"], Bool[np.ndarray, "batch seq"], bool]:
    """``(ids, mask, single)``: the prompts left-padded with ``pad_id``, the mask of real tokens, and
    whether one 1-D prompt was given (so the result should drop the batch axis)."""
    if _is_array(prompt):
        arr = np.asarray(prompt)
        if arr.ndim not in (1, 2):
            raise InputError(f"a prompt array must be 1-D [seq] or 2-D [batch, seq], got shape {tuple(arr.shape)}")
        _check_integer(arr, "the prompt")
        single = arr.ndim == 1
        arr = arr[None] if single else arr
        if arr.shape[0] == 0:
            raise InputError("got a batch of 0 prompts; pass at least one")
        if arr.shape[1] == 0:
            raise InputError("got an empty prompt (0 tokens); pass at least one token id")
        return arr.astype(np.int32), np.ones(arr.shape, bool), single
    if isinstance(prompt, str | bytes) or not isinstance(prompt, Sequence):
        raise InputError(f"a prompt must be an array of token ids or a list of them, got {type(prompt).__name__}")
    if len(prompt) == 0:
        raise InputError("got a batch of 0 prompts; pass at least one")
    rows = []
    for i, row in enumerate(prompt):
        if isinstance(row, int | np.integer):
            raise InputError(
                "a list prompt is a batch of prompts, but its items are ints: pass a 1-D array for one "
                "prompt, or a list of token lists"
            )
        arr = np.asarray(row)
        if arr.ndim != 1:
            raise InputError(f"prompt {i} of the batch must be 1-D (a list of token ids), got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise InputError(f"prompt {i} of the batch is empty (0 tokens); pass at least one token id")
        _check_integer(arr, f"prompt {i}")
        rows.append(arr.astype(np.int32))
    seq = max(len(r) for r in rows)
    ids = np.full((len(rows), seq), pad_id, np.int32)
    mask = np.zeros((len(rows), seq), bool)
    for i, r in enumerate(rows):
        ids[i, seq - len(r) :] = r
        mask[i, seq - len(r) :] = True
    return ids, mask, False


def check_ids(ids: Int[np.ndarray, "batch seq"], mask: Bool[np.ndarray, "batch seq"], vocab_size: int) -> None:
    """Raise :class:`InputError` naming the first prompt token outside ``[0, vocab_size)``."""
    bad = mask & ((ids < 0) | (ids >= vocab_size))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"prompt {row} holds token id {int(ids[row, col])} at index {col}, outside the vocabulary "
            f"[0, {vocab_size}); encode the text with this model's tokenizer"
        )


def check_context(seq: int, max_new_tokens: int, max_positions: int | None, *, encoder_decoder: bool) -> None:
    """Raise :class:`InputError` when the prompt or the new tokens do not fit in the context
    (``max_positions=None``: a model without a fixed context, such as T5 with relative positions)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if max_positions is None:
        return
    if seq > max_positions:
        raise InputError(
            f"the prompt has {seq} tokens, longer than the model's context (max_positions={max_positions}); truncate it"
        )
    if encoder_decoder:  # the decoder starts afresh: only the new tokens share its context
        if max_new_tokens > max_positions:
            raise InputError(
                f"max_new_tokens={max_new_tokens} exceeds the decoder's context (max_positions={max_positions})"
            )
    elif seq + max_new_tokens > max_positions:
        raise InputError(
            f"the prompt ({seq} tokens) + max_new_tokens={max_new_tokens} = {seq + max_new_tokens} exceeds the "
            f"model's context (max_positions={max_positions}); at most {max_positions - seq} new tokens fit"
        )


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _check_integer(arr: np.ndarray, what: str) -> None:
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} must hold integer token ids, got dtype {arr.dtype}")

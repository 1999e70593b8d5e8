"""Prompts in, a left-padded batch out: the checks every generation entry point runs before compiling.

A prompt is one 1-D array of token ids, a 2-D array (a batch of equal lengths), or a list of 1-D
arrays / lists of ints of different lengths. Shorter prompts are padded on the left, so that every
sequence's last prompt token sits in the same slot and new tokens are written in lockstep; the mask
marks real tokens, and the model's KV cache counts positions over real tokens only.
"""

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, Bool, Int, Shaped

from eqxllm.errors import InputError

# Options given as Python numbers, NumPy scalars or 0-d arrays (all read with ``as_scalar``).
IntOption = int | np.integer | Int[Array, ""] | Int[np.ndarray, ""]
FloatOption = float | int | np.number | Shaped[Array, ""] | Shaped[np.ndarray, ""]
# Stop ids: one id, a sequence of them, or a 1-D integer array (all read with ``token_ids``).
StopIds = IntOption | Sequence[IntOption] | Int[Array, " n"] | Int[np.ndarray, " n"]

Prompt = (
    Int[Array, "*batch seq"]
    | Int[np.ndarray, "*batch seq"]
    | Sequence[Int[Array, " _len"] | Int[np.ndarray, " _len"] | Sequence[int]]
    | Sequence[int]  # rejected with a clear message: a list is a batch
)


def reject_traced(value: Any, name: str) -> None:
    """Raise :class:`InputError` when ``value`` is a JAX tracer: generation checks its arguments and
    pads its prompts on the host, then runs its own compiled loop, so it is called outside ``jax.jit``."""
    if isinstance(value, Tracer):
        raise InputError(
            f"{name} is a traced value: eqxllm's generation compiles its own decoding loop and takes concrete "
            "arguments, so call it outside jax.jit / eqx.filter_jit / jax.vmap (a batch of prompts is a 2-D "
            "array or a list)"
        )


def as_scalar(value: Any, name: str) -> Any:
    """``value`` as a Python ``int`` or ``float`` when it is a NumPy scalar or a 0-d array (JAX or
    NumPy), else unchanged, for the option checks that follow."""
    reject_traced(value, name)
    if isinstance(value, np.generic) or (_is_array(value) and value.shape == ()):
        return np.asarray(value).item()
    return value


def token_ids(value: Any, name: str) -> tuple[int, ...]:
    """Stop ids as a tuple of Python ints: ``value`` is None (none), one id (a Python or NumPy integer,
    or a 0-d integer array), a sequence of them, or a 1-D integer array. A string, a float or a bool
    raises :class:`InputError` naming ``name``, rather than being read digit by digit or truncated."""
    reject_traced(value, name)
    if value is None:
        return ()
    one = _one_id(value)
    if one is not None:
        return (one,)
    if _is_array(value) and value.ndim == 1 and np.issubdtype(value.dtype, np.integer):
        return tuple(int(i) for i in np.asarray(value))
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        ids = [_one_id(item) for item in value]
        if None not in ids:
            return tuple(ids)  # type: ignore[arg-type]
    raise InputError(f"{name} must be a token id (an integer) or a sequence of them, got {value!r}")


def _one_id(value: Any) -> int | None:
    """``value`` as an int when it is one integer (Python, NumPy, or a 0-d integer array), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if (_is_array(value) or isinstance(value, np.generic)) and np.ndim(value) == 0:
        arr = np.asarray(value)
        return int(arr) if np.issubdtype(arr.dtype, np.integer) else None
    return None


def check_pad_id(value: Any) -> int:
    """``pad_token_id`` (a Python or NumPy integer, or a 0-d integer array) as an int that the int32
    tokens can hold (it need not be in the vocabulary: -1 marks padding plainly), else
    :class:`InputError`."""
    value = as_scalar(value, "pad_token_id")
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
        raise InputError(f"pad_token_id must be an integer that int32 tokens hold, got {value!r}")
    return value


def check_key(key: Any) -> None:
    """Raise :class:`InputError` unless ``key`` is None or one JAX random key: a typed key of shape
    ``()`` (``jax.random.key``) or a raw ``uint32[2]`` or ``uint32[4]`` (``jax.random.PRNGKey``). A
    traced key is fine (``jax.vmap`` over keys draws several samples)."""
    if key is None:
        return
    typed = _is_array(key) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if typed and key.shape == ():
        return
    if not typed and _is_array(key) and key.shape in ((2,), (4,)) and key.dtype == np.uint32:
        return  # a raw key of the threefry (2) or rbg (4) implementation
    shown = f"{type(key).__name__} of shape {key.shape}" if _is_array(key) else repr(key)
    raise InputError(f"key must be one random key (jax.random.key(seed)), got {shown}")


def left_pad(
    prompt: Prompt, *, pad_id: int = 0
) -> tuple[Int[np.ndarray, "batch seq"], Bool[np.ndarray, "batch seq"], bool]:
    """``(ids, mask, single)``: the prompts left-padded with ``pad_id``, the mask of real tokens, and
    whether one 1-D prompt was given (so the result should drop the batch axis)."""
    reject_traced(prompt, "the prompt")
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
        reject_traced(row, f"prompt {i} of the batch")
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
    """Raise :class:`InputError` naming the first prompt token outside ``[0, vocab_size)``, by its index
    in the prompt as given (before the left padding)."""
    bad = mask & ((ids < 0) | (ids >= vocab_size))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        index = col - int((~mask[row]).sum())
        raise InputError(
            f"prompt {row} holds token id {int(ids[row, col])} at index {index}, outside the vocabulary "
            f"[0, {vocab_size}); encode the text with this model's tokenizer"
        )


def check_stop_ids(stops: tuple[int, ...], vocab_size: int) -> None:
    """Raise :class:`InputError` naming the first stop id outside ``[0, vocab_size)``: it can never be
    generated, so a run asked to stop on it would not."""
    outside = [i for i in stops if not 0 <= i < vocab_size]
    if outside:
        raise InputError(
            f"stop token id {outside[0]} is outside the vocabulary [0, {vocab_size}): it can never be generated; "
            "pass ids in the vocabulary (or eos_token_id=() to stop only at max_new_tokens)"
        )


def config_stop_ids(config: Any, *, stacklevel: int, warn: bool = True) -> tuple[int, ...]:
    """The config's EOS ids; ids beyond the vocabulary (as some checkpoints that ``transformers`` loads
    carry) can never be generated, so they are dropped with a warning (raised ``stacklevel`` frames up,
    at the caller's call) rather than silently kept."""
    ids = token_ids(config.eos_token_id, "the config's eos_token_id")
    outside = [i for i in ids if not 0 <= i < config.vocab_size]
    if outside and warn:
        warnings.warn(
            f"the model config's eos_token_id {outside} is outside the vocabulary [0, {config.vocab_size}) and can "
            "never be generated: decoding stops only at max_new_tokens (pass eos_token_id= to set stop ids)",
            stacklevel=stacklevel,
        )
    return tuple(i for i in ids if 0 <= i < config.vocab_size)


def check_generates(model: Any) -> None:
    """Raise :class:`InputError` for a model without the decoding protocol's ``decode`` (one that gives
    hidden states, not tokens, such as T5's encoder alone), rather than an ``AttributeError`` deep in
    the loop."""
    if not callable(getattr(model, "decode", None)):
        raise InputError(
            f"a {type(model).__name__} has no decoder to generate with: it gives hidden states "
            "(model(ids, mask=mask)). Generate with a model that writes tokens (for T5, an encoder-decoder "
            "T5ForConditionalGeneration checkpoint)"
        )


def check_context(seq: int, max_new_tokens: IntOption, max_positions: int | None, *, encoder_decoder: bool) -> None:
    """Raise :class:`InputError` when the prompt or the new tokens do not fit in the context
    (``max_positions=None``: a model without a fixed context, such as T5 with relative positions)."""
    max_new_tokens = as_scalar(max_new_tokens, "max_new_tokens")
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

"""Filling a decoder cache with a prompt, whole or a chunk of tokens at a time.

A chunked prefill feeds the first ``seq % chunk`` tokens alone, then the whole chunks in a
``lax.scan``: the same cache and the same last logits as one pass, with the attention scores and
activations of one chunk (``[heads, chunk, cache]``) live at a time instead of the whole prompt's
(``[heads, seq, cache]``). Sampling (:class:`eqxllm.generation.loop.Decoder`) and beam search
(:func:`eqxllm.generation.beam.beam_search`) fill their caches through it.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PyTree

from eqxllm.errors import InputError

# decode(ids [..., n], cache, mask [..., n] or None) -> (out, cache): ``out`` is what the last call gives
Fill = Callable[[Int[Array, "*batch n"], PyTree, Bool[Array, "*batch n"] | None], tuple[Any, PyTree]]


def fill_cache(
    decode: Fill,
    ids: Int[Array, "*batch seq"],
    cache: PyTree,
    mask: Bool[Array, "*batch seq"] | None = None,
    chunk: int | None = None,
) -> tuple[Any, PyTree]:
    """``decode``'s output for the prompt's last chunk and the cache filled with all of ``ids`` (the
    token axis last), fed ``chunk`` tokens at a time (``None``, or a prompt no longer than ``chunk``:
    in one call). ``mask`` (real tokens, or ``None``) is cut into the same pieces."""
    seq = ids.shape[-1]
    if chunk is None or seq <= chunk:
        return decode(ids, cache, mask)
    first, whole = seq % chunk, seq // chunk
    if first:
        _, cache = decode(ids[..., :first], cache, None if mask is None else mask[..., :first])
    # the whole chunks on a leading axis for the scan: [whole, *batch, chunk]
    pieces = lambda x: None if x is None else jnp.moveaxis(x[..., first:].reshape(*x.shape[:-1], whole, chunk), -2, 0)

    def step(carry, piece):
        _, cache = carry
        return decode(piece[0], cache, piece[1]), None

    out = jax.eval_shape(decode, ids[..., :chunk], cache, None if mask is None else mask[..., :chunk])[0]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out)
    (out, cache), _ = jax.lax.scan(step, (zeros, cache), (pieces(ids), pieces(mask)))
    return out, cache


def check_prefill_chunk(chunk: Any) -> int | None:
    """``chunk`` itself when it is ``None`` or an integer >= 1; :class:`InputError` otherwise."""
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise InputError(f"prefill_chunk must be an integer >= 1 (or None), got {chunk!r}")
    return chunk


def cache_dtype(model: eqx.Module):
    """The dtype of the model's floating weights: a KV cache holds keys and values in it."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return leaves[0].dtype if leaves else jnp.float32

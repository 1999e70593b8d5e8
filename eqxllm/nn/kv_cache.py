"""A preallocated key/value cache for one sequence, shared by every decoder-only family."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eqxllm.errors import InputError
from eqxllm.nn.ring_cache import RingCache


class KVCache(eqx.Module):
    """Keys and values of every (stacked) layer for one sequence, written in place as decoding goes.

    ``k``/``v``: ``[layers, max_len, kv_heads, head_dim]``; ``valid`` marks slots holding real tokens
    (left padding stays ``False``); ``index`` is the next slot to write. ``jax.vmap`` over a batch of
    caches gives per-sequence state. Slots, not positions, index the cache: a left-padded prompt's
    positions are ``slot - num_pad``.

    With ``ring`` (sliding-window layers, :mod:`eqxllm.nn.ring_cache`), ``k``/``v`` hold the global
    layers only and ``ring`` the last ``window`` slots of each sliding layer; ``valid`` and ``index``
    still count every slot.
    """

    k: Float[Array, "layers max_len kv_heads head_dim"]
    v: Float[Array, "layers max_len kv_heads head_dim"]
    valid: Bool[Array, " max_len"]
    index: Int[Array, ""]
    ring: RingCache | None = None

    @classmethod
    def empty(cls, *, num_layers: int, max_len: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32) -> "KVCache":
        shape = (num_layers, max_len, num_kv_heads, head_dim)
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            valid=jnp.zeros((max_len,), bool),
            index=jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[1]

    def prepare(
        self, mask: Bool[Array, " seq"]
    ) -> tuple[Int[Array, " seq"], Int[Array, " seq"], Bool[Array, " max_len"]]:
        """For ``seq`` new tokens (``mask`` marks real ones): their positions, their slots, and the
        validity of every slot once they are written. Positions count only real tokens, so a
        left-padded prompt starts at position 0.

        Tokens that do not fit in the remaining slots are refused (:func:`checked_index`):
        ``dynamic_update_slice`` would otherwise clamp the write and silently overwrite earlier slots."""
        seq = mask.shape[0]
        index = checked_index(self.index, seq, self.max_len)
        slots = index + jnp.arange(seq, dtype=jnp.int32)
        prior = jnp.sum(self.valid.astype(jnp.int32))
        positions = jnp.maximum(prior + jnp.cumsum(mask.astype(jnp.int32)) - 1, 0)
        valid = jax.lax.dynamic_update_slice(self.valid, mask, (index,))
        return positions, slots, valid

    def advanced(self, k, v, valid: Bool[Array, " max_len"], seq: int, ring: RingCache | None = None) -> "KVCache":
        """The cache after writing ``seq`` tokens: new layer keys/values (and ring), validity and index."""
        return KVCache(k=k, v=v, valid=valid, index=self.index + seq, ring=ring)


def checked_index(index: Int[Array, ""], seq: int, max_len: int) -> Int[Array, ""]:
    """``index``, the first of ``seq`` new slots of a ``max_len``-slot cache, once they are known to fit.

    More tokens than the whole cache raises :class:`~eqxllm.errors.InputError` at once (the shapes say
    so); tokens past the last slot from ``index`` raise an ``EquinoxRuntimeError`` (also under ``jit``).
    ``dynamic_update_slice`` would otherwise clamp the write back onto earlier slots and overwrite them."""
    advice = "make a longer cache or stop decoding earlier"
    if seq > max_len:
        raise InputError(
            f"KV cache overflow: {seq} new token(s) are more than the {max_len} slots of the cache; {advice}"
        )
    return eqx.error_if(
        index,
        index + seq > max_len,
        f"KV cache overflow: {seq} new token(s) do not fit in the slots left of a {max_len}-slot cache; {advice}",
    )


def write_slots(
    cache: Float[Array, "*layers max_len kv_heads head_dim"],
    new: Float[Array, "seq kv_heads head_dim"],
    index: Int[Array, ""],
    layer: Int[Array, ""] | None = None,
) -> Float[Array, "*layers max_len kv_heads head_dim"]:
    """``cache`` with ``new`` written at slots ``index, ..., index + seq - 1`` (of layer ``layer`` when
    ``cache`` stacks every layer's slots). ``dynamic_update_slice`` of a loop-carried buffer is done in
    place by XLA: one token's keys are written, not the whole cache."""
    zero = jnp.zeros((), jnp.int32)
    if layer is None:
        return jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), (index, zero, zero))
    return jax.lax.dynamic_update_slice(cache, new[None].astype(cache.dtype), (layer, index, zero, zero))

"""Ring buffers of the last ``window`` keys and values, for the cache of sliding-window layers.

A sliding layer (Beltagy et al., 2020, "Longformer"; Mistral, Gemma 2/3) lets query slot ``q`` see key
slot ``s`` only when ``q - s < window``, so its cache needs the last ``window`` slots, not all of them:
slot ``s`` lives at row ``s % window`` of the ring and is overwritten ``window`` slots later. Gemma 3
keeps five sliding layers to each global one, so with a long context most of the cache shrinks from
``max_len`` to ``window`` slots (``transformers`` keeps such layers' caches the same way).

A decoding step writes its slot into the ring, then attends over the ring. A pass of more tokens
attends over the ring as it was before the pass followed by its own ``seq`` keys (:func:`ring_attend`,
with :func:`ring_mask`), and keeps the last ``window`` of them; so a prompt longer than the window
still sees every key inside each query's window.

Which layers slide is a static pattern; a ``lax.cond`` on a scanned flag would copy the whole carried
cache at every layer (measured on XLA:CPU), so the layer scan runs whole periods of the pattern
(:class:`RingLayout`), each layer of a period knowing statically which cache it reads.
"""

from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

# the longest pattern period run unrolled inside the layer scan (Gemma 3's is 6); a stack whose pattern
# repeats less often keeps every layer's slots
MAX_PERIOD = 8

RingKV = tuple[Float[Array, "layers window kv_heads head_dim"], Float[Array, "layers window kv_heads head_dim"]]


class RingCache(eqx.Module):
    """The last ``window`` keys and values of every sliding layer: ``k``/``v`` are
    ``[sliding_layers, window, kv_heads, head_dim]``; slot ``s`` sits at row ``s % window``. Which slots
    are real is read from the owning :class:`~eqxllm.nn.KVCache`'s ``valid`` and ``index``."""

    k: Float[Array, "layers window kv_heads head_dim"]
    v: Float[Array, "layers window kv_heads head_dim"]

    @classmethod
    def empty(cls, *, num_layers: int, window: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32):
        shape = (num_layers, window, num_kv_heads, head_dim)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))

    @property
    def window(self) -> int:
        return self.k.shape[1]


class RingSlot(NamedTuple):
    """What one sliding layer of a cached pass needs: every sliding layer's ring, the slot of the first
    new token, and the layer's row in the ring stack."""

    kv: RingKV
    index: Int[Array, ""]
    layer: Int[Array, ""]


@dataclass(frozen=True)
class RingLayout:
    """Where each layer of a stack that mixes sliding and global layers keeps its cache.

    ``pattern`` is one period of the layers' sliding flags: the stack is ``pattern`` repeated, the
    last repetition possibly cut short. Layer ``g * period + p`` is row :meth:`row` ``(p, g)`` of the
    ring stack when ``pattern[p]`` is true, of the full cache otherwise."""

    pattern: tuple[bool, ...]
    num_layers: int

    @staticmethod
    def of(flags: tuple[bool, ...]) -> "RingLayout | None":
        """The layout of a stack with these sliding flags; None when no layer slides or the pattern
        repeats less often than every :data:`MAX_PERIOD` layers."""
        if not any(flags):
            return None
        for period in range(1, min(MAX_PERIOD, len(flags)) + 1):
            if all(f == flags[i % period] for i, f in enumerate(flags)):
                return RingLayout(tuple(flags[:period]), len(flags))
        return None

    @property
    def period(self) -> int:
        return len(self.pattern)

    def _count(self, sliding: bool, layers: int) -> int:
        full, rest = divmod(layers, self.period)
        return full * self.pattern.count(sliding) + self.pattern[:rest].count(sliding)

    @property
    def num_sliding(self) -> int:
        return self._count(True, self.num_layers)

    @property
    def num_global(self) -> int:
        return self._count(False, self.num_layers)

    def row(self, p: int, g: Int[Array, ""] | int) -> Int[Array, ""]:
        """The cache row of layer ``g * period + p``, among the layers of its kind."""
        sliding = self.pattern[p]
        return jnp.asarray(g * self.pattern.count(sliding) + self.pattern[:p].count(sliding), jnp.int32)


def held_slots(index: Int[Array, ""], window: int) -> Int[Array, " window"]:
    """The slot each ring row holds once slots ``0 .. index - 1`` are written (negative: none yet)."""
    rows = jnp.arange(window, dtype=jnp.int32)
    return index - 1 - jnp.mod(index - 1 - rows, window)


def ring_mask(
    q_slots: Int[Array, " seq"], kv_valid: Bool[Array, " max_len"], index: Int[Array, ""], window: int
) -> Bool[Array, "seq keys"]:
    """The mask of a sliding layer's cached pass over the keys of :func:`ring_attend`. ``q_slots`` are
    the new tokens' slots (``index + arange(seq)``) and ``kv_valid`` the cache's validity once they are
    written. One new token (a decoding step) sees the ring once it is written (``keys = window``):
    its rows holding a real slot inside the window. More (a prompt, a chunk) see the ring as it was
    before the pass, then their own keys (``keys = window + seq``; real, causal, inside the window)."""
    if q_slots.shape[0] == 1:
        held = held_slots(index + 1, window)
        return ((held >= 0) & kv_valid[jnp.maximum(held, 0)])[None, :]  # every held slot is in the window
    held = held_slots(index, window)
    old = (held >= 0) & kv_valid[jnp.maximum(held, 0)]
    old = old[None, :] & (q_slots[:, None] - held[None, :] < window)
    new_valid = jax.lax.dynamic_slice(kv_valid, (index,), q_slots.shape)
    gap = q_slots[:, None] - q_slots[None, :]
    new = new_valid[None, :] & (gap >= 0) & (gap < window)
    return jnp.concatenate([old, new], axis=1)


def _write(
    ring: Float[Array, "layers window kv_heads head_dim"],
    new: Float[Array, "seq kv_heads head_dim"],
    index: Int[Array, ""],
    layer: Int[Array, ""],
) -> Float[Array, "layers window kv_heads head_dim"]:
    """``ring`` with the last ``window`` of the ``seq`` new slots (``index ..``) written into row
    ``layer``; one slot is a ``dynamic_update_slice``, done in place on a loop-carried buffer."""
    window, seq = ring.shape[1], new.shape[0]
    kept = min(seq, window)
    tail = new[seq - kept :].astype(ring.dtype)
    if kept == 1:
        zero = jnp.zeros((), jnp.int32)
        return jax.lax.dynamic_update_slice(ring, tail[None], (layer, (index + seq - 1) % window, zero, zero))
    rows = (index + seq - kept + jnp.arange(kept)) % window
    return ring.at[layer, rows].set(tail)


def ring_attend(
    ring: RingKV,
    k: Float[Array, "seq kv_heads head_dim"],
    v: Float[Array, "seq kv_heads head_dim"],
    index: Int[Array, ""],
    layer: Int[Array, ""],
) -> tuple[Float[Array, "keys kv_heads head_dim"], Float[Array, "keys kv_heads head_dim"], RingKV]:
    """The keys and values a sliding layer's pass attends over, masked by :func:`ring_mask`, and the
    ring with the new slots written. A decoding step writes its slot first (over the one that just left
    the window) and reads the ring row: the write stays in place. A longer pass reads the row as it
    was, then its own keys (``window + seq``), since its writes may overwrite keys its first queries see."""
    written = (_write(ring[0], k, index, layer), _write(ring[1], v, index, layer))
    if k.shape[0] == 1:
        return written[0][layer].astype(k.dtype), written[1][layer].astype(v.dtype), written
    keys = jnp.concatenate([ring[0][layer].astype(k.dtype), k])
    values = jnp.concatenate([ring[1][layer].astype(v.dtype), v])
    return keys, values, written

"""The glue of one forward pass with an optional KV cache, written once for every decoder.

Without a cache, a pass runs a whole (left-padded) sequence: positions count its real tokens and
queries sit at slots ``0..seq-1``. With a :class:`KVCache`, the new tokens are written after the
cached ones and attend over every slot. :func:`token_slots` gives both cases the same three arrays
(positions, query slots, key validity), and :func:`scan_layers` runs the stacked blocks, threading
the whole cache through the scan carry so each layer writes its new slots in place.
:class:`CausalLM` gives every decoder-only model its plain call and its ``decode`` in terms of its one
``forward``.
"""

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.nn.attention import CacheKV
from eqxllm.nn.kv_cache import KVCache
from eqxllm.nn.stack import Stack


class OutputHead(NamedTuple):
    """``logits = softcap * tanh(features @ weight.T / softcap)`` (no cap when ``softcap`` is None);
    ``weight`` is ``[vocab, embed]``, cut to the real vocabulary."""

    weight: Float[Array, "vocab embed"]
    softcap: float | None


class TokenSlots(NamedTuple):
    """Where the tokens of one pass sit: rotary/learned ``positions`` ``[seq]``, their ``q_slots``
    ``[seq]`` in the key axis, and ``kv_valid`` ``[kv_seq]``, the keys that hold real tokens."""

    positions: Int[Array, " seq"]
    q_slots: Int[Array, " seq"]
    kv_valid: Bool[Array, " kv_seq"]


class CacheSlot(NamedTuple):
    """What one layer of a cached pass needs: every layer's keys and values, the slot of the first
    new token, and the layer's index into the stack."""

    kv: CacheKV
    index: Int[Array, ""]
    layer: Int[Array, ""]


def positions_from_mask(mask: Bool[Array, " seq"]) -> Int[Array, " seq"]:
    """Positions that count real tokens only, so a left-padded sequence starts at position 0."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32)) - 1, 0)


def token_slots(mask: Bool[Array, " seq"], positions: Int[Array, " seq"] | None, cache: KVCache | None) -> TokenSlots:
    """The :class:`TokenSlots` of ``seq`` new tokens (``mask`` marks real ones), appended to ``cache``
    when there is one (their positions then continue the cached ones)."""
    if cache is None:
        positions = positions_from_mask(mask) if positions is None else positions
        return TokenSlots(positions, jnp.arange(mask.shape[0]), mask)
    if positions is not None:
        raise InputError("positions come from the cache in a cached pass; pass positions=None")
    return TokenSlots(*cache.prepare(mask))


def check_cache_length(max_len: int, limit: int, limit_name: str) -> None:
    """Refuse a cache longer than the model's context."""
    if max_len > limit:
        raise InputError(
            f"a cache of {max_len} slots (prompt + new tokens) exceeds the context, {limit_name}={limit}; "
            "shorten the prompt or max_new_tokens"
        )


def scan_layers(stack: Stack, layer, x: Any, xs: Any, cache: KVCache | None, slots: TokenSlots):
    """Run ``layer(block, x, x_i, slot) -> (x, kv, y)`` over the stacked blocks (``x_i``: this layer's
    slice of ``xs``; ``slot``: a :class:`CacheSlot`, or None without a cache).

    Returns ``(x, cache, ys)``: the output, the cache with the new tokens written (None without one),
    and the stacked per-layer outputs ``y``.
    """
    if cache is None:

        def body(block, x, inputs):
            x, _, y = layer(block, x, inputs, None)
            return x, y

        x, ys = stack(body, x, xs)
        return x, None, ys

    def cached(block, carry, inputs):
        x, kv = carry
        i, x_i = inputs
        x, kv, y = layer(block, x, x_i, CacheSlot(kv, cache.index, i))
        return (x, kv), y

    layers = jnp.arange(stack.num_layers)
    (x, (k, v)), ys = stack(cached, (x, (cache.k, cache.v)), (layers, xs))
    return x, cache.advanced(k, v, slots.kv_valid, slots.q_slots.shape[0]), ys


class CausalLM(eqx.Module):
    """The two faces of a decoder-only model's one pass, ``forward(input_ids, *, positions, mask, cache,
    key) -> (logits, cache, router_logits)``: the plain call (no cache) and ``decode`` (with one).
    Subclasses (GPT-2, the llama-like decoder) define ``forward`` and ``init_cache``."""

    @abc.abstractmethod
    def forward(
        self,
        input_ids: Int[Array, " seq"],
        *,
        positions: Int[Array, " seq"] | None = None,
        mask: Bool[Array, " seq"] | None = None,
        cache: KVCache | None = None,
        key: PRNGKeyArray | None = None,
        project: bool = True,
    ) -> tuple[Float[Array, "seq out"], KVCache | None, Any]:
        """Logits ``[seq, vocab]``, the cache with the new tokens written (None without one), and any
        per-layer extras (a mixture of experts' router logits; None elsewhere). ``project=False``
        returns the final-normed hidden states ``[seq, embed]`` in place of the logits."""

    def output_head(self) -> OutputHead | None:
        """The projection from :meth:`features` to the logits, for a loss that fuses it with the
        cross-entropy (:mod:`eqxllm.nn.linear_cross_entropy`); None when the head is not a plain
        matrix (e.g. one with LoRA adapters), and the loss then takes the logits."""
        return None

    def features(
        self, input_ids: Int[Array, " seq"], *, key: PRNGKeyArray | None = None
    ) -> tuple[Float[Array, "seq embed"], Any]:
        """The final-normed hidden states that :meth:`output_head` projects to the logits, and the
        per-layer extras of :meth:`forward`."""
        x, _, extras = self.forward(input_ids, key=key, project=False)
        return x, extras

    def __call__(
        self,
        input_ids: Int[Array, " seq"],
        *,
        positions: Int[Array, " seq"] | None = None,
        mask: Bool[Array, " seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "seq vocab"]:
        """Logits for every position. ``mask`` marks real tokens of a (left-)padded sequence; padding
        is never attended to, and positions default to counting real tokens only. ``key`` turns on the
        model's dropout, where it has any."""
        logits, _, _ = self.forward(input_ids, positions=positions, mask=mask, key=key)
        return logits

    def decode(
        self, input_ids: Int[Array, " seq"], cache: KVCache, *, mask: Bool[Array, " seq"] | None = None
    ) -> tuple[Float[Array, "seq vocab"], KVCache]:
        """Run ``seq`` new tokens against a KV cache (prefill or one decoding step); returns their
        logits and the cache with them written."""
        logits, new_cache, _ = self.forward(input_ids, mask=mask, cache=cache)
        assert new_cache is not None
        return logits, new_cache

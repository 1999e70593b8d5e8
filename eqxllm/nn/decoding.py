"""The glue of one forward pass with an optional KV cache, written once for every decoder.

Without a cache, a pass runs a whole (left-padded) sequence: positions count its real tokens and
queries sit at slots ``0..seq-1``. With a :class:`KVCache`, the new tokens are written after the
cached ones and attend over every slot. :func:`begin_pass` checks a pass's token ids and gives both
cases the same three arrays (:class:`TokenSlots`: positions, query slots, key validity), and
:func:`scan_layers` runs the stacked blocks, threading the whole cache through the scan carry so
each layer writes its new slots in place. :class:`CausalLM` gives every decoder-only model its
``forward``, its plain call, its ``decode`` and its ``init_cache`` in terms of its ``_features`` over
resolved slots and its ``_head``; T5's decoder uses the same functions, with its cross-attention
keys and values as per-layer inputs.
"""

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Shaped

from eqxllm.errors import InputError
from eqxllm.nn.attention import CacheKV
from eqxllm.nn.kv_cache import KVCache
from eqxllm.nn.masks import CausalMask, Mask, attention_mask
from eqxllm.nn.stack import Stack


class OutputHead(NamedTuple):
    """``logits = softcap * tanh(features @ weight.T / softcap)`` (no cap when ``softcap`` is None);
    ``weight`` is ``[vocab, embed]``, cut to the real vocabulary."""

    weight: Float[Array, "vocab embed"]
    softcap: float | None


class Dims(NamedTuple):
    """What the shared glue reads of a model: its vocabulary, its context (``None``: no fixed limit)
    with the config field that sets it (named in errors), the layout of its self-attention cache, and
    whether positions index a learned table of ``max_positions`` rows (GPT-2's ``wpe``), so that
    given ``positions`` must lie in ``[0, max_positions)`` (rotary and relative positions have no table)."""

    vocab_size: int
    max_positions: int | None
    limit_name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    position_table: bool = False


class TokenSlots(NamedTuple):
    """Where the tokens of one pass sit: rotary/learned ``positions`` ``[seq]``, their ``q_slots``
    ``[seq]`` in the key axis, and ``kv_valid`` ``[kv_seq]``, the keys that hold real tokens. ``whole``
    (static) says that no padding mask and no cache were given: the keys are the queries' own slots,
    all real, so a causal mask is the triangle alone (:func:`causal_mask`)."""

    positions: Int[Array, " seq"]
    q_slots: Int[Array, " seq"]
    kv_valid: Bool[Array, " kv_seq"]
    whole: bool = False


class CacheSlot(NamedTuple):
    """What one layer of a cached pass needs: every layer's keys and values, the slot of the first
    new token, and the layer's index into the stack."""

    kv: CacheKV
    index: Int[Array, ""]
    layer: Int[Array, ""]


def check_tokens(input_ids: Shaped[Array, "..."], vocab_size: int, max_len: int | None, limit_name: str):
    """Raise :class:`InputError` for ids that are not one sequence of integers (typed ``...`` so that
    wrong shapes and dtypes reach this message, which says to ``vmap``), an empty or over-long sequence
    (at trace time), and an ``EqxRuntimeError`` naming the vocabulary size for ids outside
    ``[0, vocab_size)`` (at run time, also under ``jit``; set ``EQX_ON_ERROR=nan`` to turn the check off)."""
    if input_ids.ndim != 1:
        raise InputError(
            f"expected one sequence of token ids of shape [seq], got shape {tuple(input_ids.shape)}; models take "
            "one sequence: for a batch, wrap the call in jax.vmap (e.g. jax.vmap(model)(ids))"
        )
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise InputError(
            f"token ids must be integers, got dtype {input_ids.dtype}; convert them with .astype(jnp.int32)"
        )
    seq = input_ids.shape[0]
    if seq == 0:
        raise InputError("got an empty sequence of token ids; pass at least one token")
    if max_len is not None and seq > max_len:
        raise InputError(
            f"sequence of {seq} tokens is longer than {limit_name}={max_len}; truncate it or use a model "
            "with a longer context"
        )
    return check_range(input_ids, vocab_size, "token ids", "the vocabulary size")


def check_range(values: Int[Array, " seq"], upper: int, what: str, bound: str) -> Int[Array, " seq"]:
    """``values``, checked to lie in ``[0, upper)``: called eagerly (concrete values), an
    :class:`InputError` naming the first value outside; traced (``jit``, ``vmap``), an
    ``EquinoxRuntimeError`` at run time (set ``EQX_ON_ERROR=nan`` to turn it off). ``what`` names the
    values in the message and ``bound`` says what ``upper`` is."""
    bad = (values < 0) | (values >= upper)
    message = f"{what} must be in [0, {upper}) ({bound}); got"
    try:  # eager (concrete values): a plain InputError, not a runtime callback error
        eager_bad = bool(jnp.any(bad))
    except jax.errors.ConcretizationTypeError:  # traced (jit, vmap): checked at run time below
        eager_bad = False
    if eager_bad:
        raise InputError(f"{message} {int(jnp.asarray(values)[jnp.argmax(bad)])}")
    return eqx.error_if(values, jnp.any(bad), f"{message} one outside")


def check_length(value: Shaped[Array, "..."], seq: int, name: str, of: str = "input_ids") -> None:
    """:class:`InputError` unless ``value`` has one entry per token of ``of`` (``seq`` of them)."""
    if value.shape != (seq,):
        raise InputError(
            f"{name} has shape {tuple(value.shape)} but {of} has {seq} positions; give {name} one entry per token"
        )


def check_mask(
    mask: Shaped[Array, "..."] | None, seq: int, name: str = "mask", of: str = "input_ids"
) -> Bool[Array, " seq"] | None:
    """``mask`` (None, or one flag per token, ``True``/1 for a real token) as booleans; :class:`InputError`
    for a length other than ``seq``, the tokens of ``of``, or a float dtype (typed ``...`` so that they
    reach this message)."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    check_length(mask, seq, name, of)
    if not (jnp.issubdtype(mask.dtype, jnp.bool_) or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise InputError(
            f"{name} must be booleans (or 0/1 integers) marking the real tokens, got dtype {mask.dtype}; "
            f"convert it with {name}.astype(bool)"
        )
    return mask.astype(bool)


def positions_from_mask(mask: Bool[Array, " seq"]) -> Int[Array, " seq"]:
    """Positions that count real tokens only, so a left-padded sequence starts at position 0."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32)) - 1, 0)


def token_slots(
    mask: Bool[Array, " seq"], positions: Int[Array, " seq"] | None, cache: KVCache | None, *, whole: bool = False
) -> TokenSlots:
    """The :class:`TokenSlots` of ``seq`` new tokens (``mask`` marks real ones), appended to ``cache``
    when there is one (their positions then continue the cached ones). ``whole``: ``mask`` is known to
    be all true (none was given); it has no effect with a cache."""
    if cache is None:
        positions = positions_from_mask(mask) if positions is None else positions
        return TokenSlots(positions, jnp.arange(mask.shape[0]), mask, whole=whole)
    if positions is not None:
        raise InputError("positions come from the cache in a cached pass; pass positions=None")
    return TokenSlots(*cache.prepare(mask))


def begin_pass(
    dims: Dims,
    input_ids: Shaped[Array, "..."],
    mask: Shaped[Array, "..."] | None,
    positions: Shaped[Array, "..."] | None,
    cache: KVCache | None,
) -> tuple[Int[Array, " seq"], TokenSlots]:
    """The checked ids of a pass (at most the model's context, or the cache's slots) and their
    :class:`TokenSlots`; no ``mask`` means every token is real. ``mask`` and ``positions`` need one
    entry per token, ``mask`` holds booleans or 0/1 integers (:func:`check_mask`; :class:`InputError`
    otherwise), and given positions into a learned table (``dims.position_table``) must lie inside it
    (:func:`check_range`). The arguments are typed ``...`` so that wrong shapes and dtypes reach these
    messages rather than a broadcasting error."""
    limit = (dims.max_positions, dims.limit_name) if cache is None else (cache.max_len, "the cache length")
    input_ids = check_tokens(input_ids, dims.vocab_size, *limit)
    mask = check_mask(mask, input_ids.shape[0])
    if positions is not None:
        check_length(positions, input_ids.shape[0], "positions")
    if positions is not None and dims.position_table and dims.max_positions is not None:
        positions = check_range(
            positions, dims.max_positions, "positions", f"{dims.limit_name}, the rows of the learned position table"
        )
    whole = mask is None and cache is None
    mask = jnp.ones(input_ids.shape, bool) if mask is None else mask
    return input_ids, token_slots(mask, positions, cache, whole=whole)


def causal_mask(slots: TokenSlots, *, window: int | None = None) -> Mask:
    """The causal self-attention mask of a pass (with a sliding ``window``: only the last ``window``
    keys): a :class:`~eqxllm.nn.masks.CausalMask` for a whole sequence without a cache, so a kernel can
    use the structure, and a plain boolean array otherwise."""
    dense = attention_mask(slots.q_slots, slots.kv_valid, causal=True, window=window)
    return CausalMask(dense, window) if slots.whole else dense


def empty_cache(dims: Dims, max_len: int, dtype=jnp.float32) -> KVCache:
    """An empty self-attention cache of ``max_len`` slots; :class:`InputError` for fewer than one slot or
    more than the model's context."""
    if max_len < 1:
        raise InputError(f"a cache needs max_len >= 1 slots, got {max_len}")
    if dims.max_positions is not None and max_len > dims.max_positions:
        raise InputError(
            f"a cache of {max_len} slots (prompt + new tokens) exceeds the context, "
            f"{dims.limit_name}={dims.max_positions}; shorten the prompt or max_new_tokens"
        )
    return KVCache.empty(
        num_layers=dims.num_layers, max_len=max_len, num_kv_heads=dims.num_kv_heads, head_dim=dims.head_dim, dtype=dtype
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
    """The faces of a decoder-only model's one pass: ``forward`` (logits, cache, extras), the plain call
    (no cache), ``decode`` (with one) and ``init_cache``. Subclasses (GPT-2, the llama-like decoder)
    define ``dims``, ``_features`` and ``_head``."""

    @property
    @abc.abstractmethod
    def dims(self) -> Dims:
        """The model's vocabulary, context and cache layout."""

    @abc.abstractmethod
    def _features(
        self, input_ids: Int[Array, " seq"], slots: TokenSlots, cache: KVCache | None, key: PRNGKeyArray | None
    ) -> tuple[Float[Array, "seq embed"], KVCache | None, Any]:
        """The final-normed hidden states of checked ids at resolved slots, the cache and the extras of
        :meth:`forward`."""

    @abc.abstractmethod
    def _head(self, x: Float[Array, "seq embed"]) -> Float[Array, "seq vocab"]:
        """The logits of final-normed hidden states."""

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
        """The one forward pass: logits ``[seq, vocab]``, the cache with the new tokens written (None
        without one), and any per-layer extras (a mixture of experts' router logits; None elsewhere).
        ``project=False`` returns the final-normed hidden states ``[seq, embed]`` in place of the
        logits. ``key`` turns on the model's dropout, where it has any."""
        input_ids, slots = begin_pass(self.dims, input_ids, mask, positions, cache)
        x, cache, extras = self._features(input_ids, slots, cache, key)
        return (self._head(x) if project else x), cache, extras

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

    def decode_last(
        self, input_ids: Int[Array, " seq"], cache: KVCache, *, mask: Bool[Array, " seq"] | None = None
    ) -> tuple[Float[Array, " vocab"], KVCache]:
        """:meth:`decode` with the logits of the last token alone (a prefill's: the next token's), so
        that the ``[seq, vocab]`` logits of a long prompt are never made (for a 262,144-token
        vocabulary and an 8,192-token prompt they would be 8 GiB in float32)."""
        x, new_cache, _ = self.forward(input_ids, mask=mask, cache=cache, project=False)
        assert new_cache is not None
        return self._head(x[-1:])[0], new_cache

    def init_cache(self, max_len: int, dtype=jnp.float32) -> KVCache:
        """An empty cache for one sequence of up to ``max_len`` tokens (prompt + new ones, within the
        model's context)."""
        return empty_cache(self.dims, max_len, dtype)

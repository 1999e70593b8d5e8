"""One llama-like decoder for Llama, Mistral, Qwen, Mixtral and Gemma 1/2/3 (Touvron et al., 2023,
"LLaMA: Open and Efficient Foundation Language Models").

The shape every family shares: token embeddings, scanned pre-norm blocks (RMSNorm, rotary
grouped-query attention, a gated MLP or a mixture of experts), a final RMSNorm and an output head
tied to the embedding or not. Where the families differ is a switch of :class:`DecoderSpec`, read
from the config's ``decoder`` property; the block and the forward pass are written once.

Layers are scanned (:class:`eqxllm.nn.Stack`); a layer's kind (sliding or global) is a scanned
boolean, and both masks and both rotary tables are computed once per call, selected inside the scan
with ``jnp.where`` when layers differ.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.models.decoder_spec import DecoderSpec
from eqxllm.nn import MLP, Attention, Embedding, KVCache, Linear, RMSNorm, Stack
from eqxllm.nn.attention import Rotary
from eqxllm.nn.decoding import (
    CacheSlot,
    CausalLM,
    Dims,
    OutputHead,
    TokenSlots,
    causal_mask,
    empty_cache,
    scan_layers,
)
from eqxllm.nn.masks import CausalMask, Mask
from eqxllm.nn.moe import MoE
from eqxllm.nn.ring_cache import RingCache, RingLayout, RingSlot, ring_mask

__all__ = ["DecoderBlock", "DecoderLM", "parameter_count"]


class DecoderBlock(eqx.Module):
    """``x + attn(norm(x))``, then ``x + mlp(norm(x))``; with sandwich norms (Gemma 2/3) each
    sub-layer's output is normalised too (``post_attn_norm``, ``post_mlp_norm``) before the add.

    Field names are those of Gemma's block, kept so that training checkpoints stay valid."""

    pre_attn_norm: RMSNorm
    attn: Attention
    post_attn_norm: RMSNorm | None
    pre_mlp_norm: RMSNorm
    mlp: MLP | MoE
    post_mlp_norm: RMSNorm | None

    def __init__(self, spec: DecoderSpec, *, key: PRNGKeyArray):
        attn_key, mlp_key = jax.random.split(key)
        norm = lambda: RMSNorm(spec.hidden_size, eps=spec.norm_eps, unit_offset=spec.unit_offset_norms)  # noqa: E731
        self.pre_attn_norm = norm()
        self.attn = Attention(
            spec.hidden_size, spec.num_heads, num_kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
            use_bias=spec.qkv_bias, out_bias=spec.o_bias, scale=spec.attention_scale, softcap=spec.attn_softcap,
            qk_norm=spec.qk_norm, norm_eps=spec.norm_eps, norm_unit_offset=spec.unit_offset_norms,
            impl=spec.attention_impl, init_std=spec.initializer_range, key=attn_key,
        )  # fmt: skip
        self.post_attn_norm = norm() if spec.sandwich_norms else None
        self.pre_mlp_norm = norm()
        if spec.moe:  # Mixtral: softmax over all experts, then the top-k weights renormalised
            self.mlp = MoE(
                spec.hidden_size, spec.intermediate_size, num_experts=spec.num_experts,
                top_k=spec.num_experts_per_tok, activation=spec.activation, normalize_top_k=True,
                dispatch=spec.moe_dispatch, init_std=spec.initializer_range, key=mlp_key,
            )  # fmt: skip
        else:
            self.mlp = MLP(
                spec.hidden_size, spec.intermediate_size, activation=spec.activation, gated=True,
                use_bias=spec.mlp_bias, init_std=spec.initializer_range, key=mlp_key,
            )  # fmt: skip
        self.post_mlp_norm = norm() if spec.sandwich_norms else None

    def __call__(
        self,
        x: Float[Array, "seq embed"],
        *,
        mask: Mask,
        rotary: Rotary,
        cache: CacheSlot | RingSlot | None = None,
    ) -> tuple[Float[Array, "seq embed"], Any, Float[Array, "seq experts"] | None]:
        """The block's output, the cache with this layer's new keys and values written (None
        without one; a sliding layer's ring with a :class:`RingSlot`), and the router logits of a
        mixture of experts (None for a dense MLP)."""
        kv, index, layer = (None, None, None) if cache is None else cache
        h, kv = self.attn(
            self.pre_attn_norm(x), mask=mask, rotary=rotary, cache=kv, cache_index=index, layer=layer,
            ring=isinstance(cache, RingSlot),
        )  # fmt: skip
        if self.post_attn_norm is not None:
            h = self.post_attn_norm(h)
        x = x + h
        h, router_logits = self._mlp(self.pre_mlp_norm(x))
        if self.post_mlp_norm is not None:
            h = self.post_mlp_norm(h)
        return x + h, kv, router_logits

    def _mlp(self, x: Float[Array, "seq embed"]) -> tuple[Float[Array, "seq embed"], Any]:
        if isinstance(self.mlp, MLP):
            return self.mlp(x), None
        return self.mlp(x)  # a mixture of experts also returns its router logits


class DecoderLM(CausalLM):
    """A llama-like language model: token ids ``[seq]`` -> next-token logits ``[seq, vocab]``.

    ``config`` is a family config with a ``decoder`` property (:class:`DecoderSpec`); the family
    classes (``Llama``, ``Gemma``) only name it."""

    embed: Embedding
    blocks: Stack[DecoderBlock]
    norm: RMSNorm
    lm_head: Linear | None
    config: Any = eqx.field(static=True)

    def __init__(self, config, *, key: PRNGKeyArray):
        embed_key, blocks_key, head_key = jax.random.split(key, 3)
        spec: DecoderSpec = config.decoder
        self.config = config
        self.embed = Embedding(spec.vocab_size, spec.hidden_size, init_std=spec.initializer_range, key=embed_key)
        self.blocks = Stack(lambda k: DecoderBlock(spec, key=k), spec.num_layers, key=blocks_key, remat=spec.remat)
        self.norm = RMSNorm(spec.hidden_size, eps=spec.norm_eps, unit_offset=spec.unit_offset_norms)
        self.lm_head = (
            None
            if spec.tie_word_embeddings
            else Linear(
                spec.hidden_size, spec.vocab_size, use_bias=False, init_std=spec.initializer_range, key=head_key
            )
        )

    @property
    def dims(self) -> Dims:
        spec: DecoderSpec = self.config.decoder
        limit = spec.max_position_embeddings
        return Dims(
            spec.vocab_size, limit, "max_position_embeddings", spec.num_layers, spec.num_kv_heads, spec.head_dim
        )

    def _features(
        self, input_ids: Int[Array, " seq"], slots: TokenSlots, cache: KVCache | None, key: PRNGKeyArray | None
    ) -> tuple[Float[Array, "seq embed"], KVCache | None, Float[Array, "layers seq experts"] | None]:
        """The final-normed hidden states, the updated cache (None without one), and the router
        logits of every mixture-of-experts layer (None for dense models), for an auxiliary loss. These
        models have no dropout (as in the references): ``key`` is accepted for a uniform signature and
        unused. Sliding layers see only the last ``sliding_window`` slots, through their mask; a cache
        from :meth:`init_cache` keeps only those slots for them (a ring), and a plain one every slot."""
        del key
        if cache is not None and cache.ring is not None:
            return self._ring_features(input_ids, slots, cache)
        masks = self._masks(slots)
        rotaries = self._rotaries(slots.positions)

        def layer(block, x, is_sliding, slot):
            return block(x, mask=self._pick(is_sliding, masks), rotary=self._pick(is_sliding, rotaries), cache=slot)

        flags = jnp.asarray(self.config.decoder.sliding_flags, dtype=bool)
        x, cache, router_logits = scan_layers(self.blocks, layer, self._embed(input_ids), flags, cache, slots)
        return self.norm(x), cache, router_logits

    def _ring_features(self, input_ids: Int[Array, " seq"], slots: TokenSlots, cache: KVCache):
        """:meth:`_features` over a cache whose sliding layers keep rings: the layers run a period of
        the sliding pattern at a time, so each knows statically which cache it reads and writes."""
        spec: DecoderSpec = self.config.decoder
        layout = RingLayout.of(spec.sliding_flags)
        ring = cache.ring
        if (
            layout is None
            or ring is None
            or (ring.k.shape[0], ring.window, cache.k.shape[0])
            != (layout.num_sliding, spec.sliding_window, layout.num_global)
        ):  # dynamic_update_slice would clamp the rows of a smaller stack and overwrite others silently
            raise InputError(
                "this cache's rings do not fit the model's sliding layers (another model's cache?); make it with "
                "model.init_cache"
            )
        masks = ring_mask(slots.q_slots, slots.kv_valid, cache.index, ring.window), causal_mask(slots)
        rotaries = self._rotaries(slots.positions)

        def layer(block, carry, p, g):
            x, full_kv, ring_kv = carry
            if layout.pattern[p]:
                slot = RingSlot(ring_kv, cache.index, layout.row(p, g))
                x, ring_kv, y = block(x, mask=masks[0], rotary=rotaries[0], cache=slot)
            else:
                slot = CacheSlot(full_kv, cache.index, layout.row(p, g))
                x, full_kv, y = block(x, mask=masks[1], rotary=rotaries[1], cache=slot)
            return (x, full_kv, ring_kv), y

        carry = (self._embed(input_ids), (cache.k, cache.v), (ring.k, ring.v))
        (x, (k, v), (rk, rv)), router_logits = self.blocks.scan_periods(layer, carry, layout.period)
        cache = cache.advanced(k, v, slots.kv_valid, input_ids.shape[0], RingCache(k=rk, v=rv))
        return self.norm(x), cache, router_logits

    def init_cache(self, max_len: int, dtype=jnp.float32) -> KVCache:
        """An empty cache for one sequence of up to ``max_len`` tokens. Sliding layers keep only their
        last ``sliding_window`` slots (:mod:`eqxllm.nn.ring_cache`) when that is fewer than ``max_len``
        and their pattern repeats at least every :data:`~eqxllm.nn.ring_cache.MAX_PERIOD` layers
        (Mistral, Gemma 2/3); every other layer keeps ``max_len`` slots."""
        spec: DecoderSpec = self.config.decoder
        layout = RingLayout.of(spec.sliding_flags)
        window = spec.sliding_window
        if layout is None or window is None or window >= max_len:
            return super().init_cache(max_len, dtype)
        full = empty_cache(self.dims._replace(num_layers=layout.num_global), max_len, dtype)
        ring = RingCache.empty(
            num_layers=layout.num_sliding, window=window, num_kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
            dtype=dtype,
        )  # fmt: skip
        return KVCache(k=full.k, v=full.v, valid=full.valid, index=full.index, ring=ring)

    # pieces of the forward pass -------------------------------------------------------------------
    def _masks(self, slots: TokenSlots):
        """``(local, global)`` masks; the same one twice when no layer slides."""
        spec: DecoderSpec = self.config.decoder
        full = causal_mask(slots)
        if not any(spec.sliding_flags):
            return full, full
        # transformers' sliding_window_overlay keeps kv_idx > q_idx - window, i.e. q - k < window
        return causal_mask(slots, window=spec.sliding_window), full

    def _rotaries(self, positions: Int[Array, " seq"]):
        """``(local, global)`` rotary tables; the same pair twice when sliding layers share the global one."""
        spec: DecoderSpec = self.config.decoder
        full = spec.rope.angles(positions, spec.head_dim)
        if spec.local_rope is None:
            return full, full
        return spec.local_rope.angles(positions, spec.head_dim), full

    def _pick(self, is_sliding: Bool[Array, ""], pair):
        """The local member of a ``(local, global)`` pair on sliding layers, the global one elsewhere;
        chosen statically when every layer is of one kind."""
        local, full = pair
        flags = self.config.decoder.sliding_flags
        if local is full or not any(flags):
            return full
        if all(flags):
            return local
        if isinstance(local, CausalMask) and isinstance(full, CausalMask):
            return CausalMask.pick(is_sliding, local, full)
        return jax.tree.map(lambda a, b: jnp.where(is_sliding, a, b), local, full)

    def _embed(self, input_ids: Int[Array, " seq"]) -> Float[Array, "seq embed"]:
        x = self.embed(input_ids)
        if not self.config.decoder.embed_scale:
            return x
        # the reference keeps the normaliser as a tensor of the activation dtype: sqrt(3072) is 55.5 in bf16
        return x * jnp.asarray(math.sqrt(self.config.decoder.hidden_size), dtype=x.dtype)

    def output_head(self) -> OutputHead | None:
        if self.lm_head is not None and (type(self.lm_head) is not Linear or self.lm_head.bias is not None):
            return None  # LoRA adapters on the head, or a bias: the loss takes the logits
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return OutputHead(weight, self.config.decoder.final_softcap)

    def _head(self, x: Float[Array, "seq embed"]) -> Float[Array, "seq vocab"]:
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
        cap = self.config.decoder.final_softcap
        if cap is not None:
            logits = (cap * jnp.tanh(logits.astype(jnp.float32) / cap)).astype(logits.dtype)
        return logits


def parameter_count(model_cls: type, config) -> int:
    """How many parameters ``model_cls(config)`` holds, counted on an abstract model (nothing is allocated)."""
    skeleton = eqx.filter_eval_shape(model_cls, config, key=jax.random.key(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(skeleton) if isinstance(x, jax.ShapeDtypeStruct))

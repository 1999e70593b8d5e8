"""Gemma 1, 2 and 3 (text): Gemma Team (2024a, 2024b, 2025), "Gemma: Open Models Based on Gemini
Research and Technology", "Gemma 2: Improving Open Language Models at a Practical Size", "Gemma 3
Technical Report".

How this family differs: RMSNorm with a ``1 + w`` scale (zero-initialised weights), computed in
float32; token embeddings multiplied by ``sqrt(hidden_size)`` (rounded to the activation dtype, as
the reference does); rotary positions; a GeGLU MLP with tanh GELU; multi-query or grouped-query
attention whose ``head_dim`` is independent of the width; the output head tied to the embedding.
Gemma 2 adds norms after attention and after the MLP, tanh soft-caps on attention logits and final
logits, ``query_pre_attn_scalar**-0.5`` as attention scale, and alternating sliding-window (local)
and global layers. Gemma 3 adds RMSNorms on queries and keys, drops the soft-caps, and gives local
layers their own rotary base (10k) while global layers use ``rope_theta`` (1M) with optional linear
scaling; its layer pattern is five local layers per global one.

Layers are scanned (:class:`eqxllm.nn.Stack`); a layer's kind is a scanned boolean, and both masks
and both rotary tables are computed once per call, selected inside the scan with ``jnp.where``.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.models._checks import check_tokens
from eqxllm.models.gemma_config import GEMMA_PRESETS, GemmaConfig
from eqxllm.nn import MLP, Attention, Embedding, KVCache, Linear, RMSNorm, Stack, attention_mask
from eqxllm.nn.attention import CacheKV, Rotary
from eqxllm.nn.positions import rotary_angles

__all__ = ["GEMMA_PRESETS", "Gemma", "GemmaBlock", "GemmaConfig"]


class GemmaBlock(eqx.Module):
    """Gemma 1: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. Gemma 2/3 also normalise each
    sub-layer's output before adding it back (``post_attn_norm``, ``post_mlp_norm``)."""

    pre_attn_norm: RMSNorm
    attn: Attention
    post_attn_norm: RMSNorm | None
    pre_mlp_norm: RMSNorm
    mlp: MLP
    post_mlp_norm: RMSNorm | None

    def __init__(self, cfg: GemmaConfig, *, key: PRNGKeyArray):
        attn_key, mlp_key = jax.random.split(key)
        norm = lambda: RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, unit_offset=True)  # noqa: E731
        sandwich = cfg.generation >= 2
        self.pre_attn_norm = norm()
        self.attn = Attention(
            cfg.hidden_size,
            cfg.num_attention_heads,
            num_kv_heads=cfg.num_key_value_heads,
            head_dim=cfg.head_dim,
            use_bias=cfg.attention_bias,
            scale=cfg.attention_scale,
            qk_norm=cfg.generation == 3,
            norm_eps=cfg.rms_norm_eps,
            norm_unit_offset=True,
            softcap=cfg.attn_logit_softcapping,
            impl=cfg.attention_impl,
            init_std=cfg.initializer_range,
            key=attn_key,
        )
        self.post_attn_norm = norm() if sandwich else None
        self.pre_mlp_norm = norm()
        self.mlp = MLP(
            cfg.hidden_size,
            cfg.intermediate_size,
            activation=cfg.hidden_activation,
            gated=True,
            use_bias=False,
            init_std=cfg.initializer_range,
            key=mlp_key,
        )
        self.post_mlp_norm = norm() if sandwich else None

    def __call__(
        self,
        x: Float[Array, "seq embed"],
        *,
        mask: Bool[Array, "seq kv_seq"],
        rotary: Rotary,
        cache: CacheKV | None = None,
        cache_index: Int[Array, ""] | None = None,
        layer: Int[Array, ""] | None = None,
    ) -> tuple[Float[Array, "seq embed"], CacheKV | None]:
        h, cache = self.attn(
            self.pre_attn_norm(x), mask=mask, rotary=rotary, cache=cache, cache_index=cache_index, layer=layer
        )
        if self.post_attn_norm is not None:
            h = self.post_attn_norm(h)
        x = x + h
        h = self.mlp(self.pre_mlp_norm(x))
        if self.post_mlp_norm is not None:
            h = self.post_mlp_norm(h)
        return x + h, cache


class Gemma(eqx.Module):
    """A Gemma language model (any generation): token ids ``[seq]`` -> next-token logits ``[seq, vocab]``."""

    embed: Embedding
    blocks: Stack[GemmaBlock]
    norm: RMSNorm
    lm_head: Linear | None
    config: GemmaConfig = eqx.field(static=True)

    def __init__(self, config: GemmaConfig, *, key: PRNGKeyArray):
        embed_key, blocks_key, head_key = jax.random.split(key, 3)
        self.config = config
        self.embed = Embedding(config.vocab_size, config.hidden_size, init_std=config.initializer_range, key=embed_key)
        self.blocks = Stack(
            lambda k: GemmaBlock(config, key=k), config.num_hidden_layers, key=blocks_key, remat=config.remat
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, unit_offset=True)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(
                config.hidden_size,
                config.vocab_size,
                use_bias=False,
                init_std=config.initializer_range,
                key=head_key,
            )
        )

    def __call__(
        self,
        input_ids: Int[Array, " seq"],
        *,
        positions: Int[Array, " seq"] | None = None,
        mask: Bool[Array, " seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "seq vocab"]:
        """Logits for every position. ``mask`` marks real tokens of a (left-)padded sequence; padding
        is never attended to, and positions default to counting real tokens only. Gemma has no
        dropout (as in the reference), so ``key`` is accepted for a uniform signature and unused."""
        del key
        seq = input_ids.shape[0]
        cfg = self.config
        input_ids = check_tokens(input_ids, cfg.vocab_size, cfg.max_position_embeddings, "max_position_embeddings")
        mask = jnp.ones((seq,), bool) if mask is None else mask
        if positions is None:
            positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32)) - 1, 0)
        masks = self._masks(jnp.arange(seq), mask)
        rotaries = self._rotaries(positions)

        def body(block, x, is_sliding):
            x, _ = block(x, mask=_pick(is_sliding, masks), rotary=_pick(is_sliding, rotaries))
            return x, None

        x, _ = self.blocks(body, self._embed(input_ids), self._sliding_flags())
        return self._head(x)

    def decode(
        self, input_ids: Int[Array, " seq"], cache: KVCache, *, mask: Bool[Array, " seq"] | None = None
    ) -> tuple[Float[Array, "seq vocab"], KVCache]:
        """Run ``seq`` new tokens against a KV cache (prefill or one decoding step); returns their
        logits and the cache with them written. The cache keeps every slot; sliding layers see only
        the last ``sliding_window`` slots through their mask."""
        seq = input_ids.shape[0]
        input_ids = check_tokens(input_ids, self.config.vocab_size, cache.max_len, "the cache length")
        mask = jnp.ones((seq,), bool) if mask is None else mask
        positions, slots, valid = cache.prepare(mask)
        masks = self._masks(slots, valid)
        rotaries = self._rotaries(positions)

        # the whole cache rides in the scan carry and each layer writes its new slots in place
        def body(block, carry, inputs):
            is_sliding, layer = inputs
            x, kv = carry
            kw = dict(cache=kv, cache_index=cache.index, layer=layer)
            return block(x, mask=_pick(is_sliding, masks), rotary=_pick(is_sliding, rotaries), **kw), None

        layers = jnp.arange(self.config.num_hidden_layers)
        carry = (self._embed(input_ids), (cache.k, cache.v))
        (x, (k, v)), _ = self.blocks(body, carry, (self._sliding_flags(), layers))
        return self._head(x), cache.advanced(k, v, valid, seq)

    def init_cache(self, max_len: int, dtype=jnp.float32) -> KVCache:
        """An empty cache for one sequence of up to ``max_len`` (<= ``max_position_embeddings``) tokens."""
        cfg = self.config
        if max_len > cfg.max_position_embeddings:
            raise ValueError(
                f"a cache of {max_len} slots exceeds max_position_embeddings={cfg.max_position_embeddings}"
            )
        return KVCache.empty(
            num_layers=cfg.num_hidden_layers,
            max_len=max_len,
            num_kv_heads=cfg.num_key_value_heads,
            head_dim=cfg.head_dim,
            dtype=dtype,
        )

    # pieces shared by __call__ and decode ---------------------------------------------------------
    def _sliding_flags(self) -> Bool[Array, " layers"]:
        return jnp.asarray(self.config.sliding_flags, dtype=bool)

    def _masks(self, q_slots: Int[Array, " seq"], kv_valid: Bool[Array, " kv_seq"]):
        """``(local, global)`` masks; the same array twice when no layer slides."""
        full = attention_mask(q_slots, kv_valid, causal=True)
        if not any(self.config.sliding_flags):
            return full, full
        # transformers' sliding_window_overlay keeps kv_idx > q_idx - window, i.e. q - k < window
        return attention_mask(q_slots, kv_valid, causal=True, window=self.config.sliding_window), full

    def _rotaries(self, positions: Int[Array, " seq"]):
        """``(local, global)`` rotary tables: Gemma 3's local layers have their own base and no scaling."""
        cfg = self.config
        scale = 1.0 if cfg.rope_scaling is None else cfg.rope_scaling
        full = rotary_angles(positions, cfg.head_dim, base=cfg.rope_theta, scale=scale)
        if cfg.generation < 3:
            return full, full
        return rotary_angles(positions, cfg.head_dim, base=cfg.local_rope_theta), full

    def _embed(self, input_ids: Int[Array, " seq"]) -> Float[Array, "seq embed"]:
        x = self.embed(input_ids)
        # the reference keeps the normaliser as a tensor of the activation dtype: sqrt(3072) is 55.5 in bf16
        return x * jnp.asarray(math.sqrt(self.config.hidden_size), dtype=x.dtype)

    def _head(self, x: Float[Array, "seq embed"]) -> Float[Array, "seq vocab"]:
        x = self.norm(x)
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = (cap * jnp.tanh(logits.astype(jnp.float32) / cap)).astype(logits.dtype)
        return logits


def _pick(is_sliding: Bool[Array, ""], pair):
    """The local member of a ``(local, global)`` pair on sliding layers, the global one elsewhere."""
    local, full = pair
    if local is full:
        return full
    return jax.tree.map(lambda a, b: jnp.where(is_sliding, a, b), local, full)

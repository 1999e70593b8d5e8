"""Multi-head attention: self, causal and cross attention, MQA/GQA, rotary positions, an additive
bias, query/key norms, soft-capping, and a KV cache slot, all in one module."""

import math

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from eqxllm.nn.attention_kernel import AttentionImpl, check_impl, dot_product_attention
from eqxllm.nn.kv_cache import checked_index, write_slots
from eqxllm.nn.linear import Linear
from eqxllm.nn.masks import Mask
from eqxllm.nn.materialize import materialize
from eqxllm.nn.norms import RMSNorm
from eqxllm.nn.positions import apply_rotary
from eqxllm.nn.ring_cache import ring_attend

LayerKV = tuple[Float[Array, "kv_seq kv_heads head_dim"], Float[Array, "kv_seq kv_heads head_dim"]]
Rotary = tuple[Float[Array, "seq head_dim"], Float[Array, "seq head_dim"]]
# one layer's cache slots, or every layer's (``[layers, max_len, ...]``, written at one ``layer``)
CacheKV = tuple[Float[Array, "*layers max_len kv_heads head_dim"], Float[Array, "*layers max_len kv_heads head_dim"]]


class Attention(eqx.Module):
    """Multi-head attention (Vaswani et al., 2017) with grouped key/value heads (Ainslie et al., 2023).

    ``num_kv_heads`` = ``num_heads`` is MHA, 1 is MQA (Shazeer, 2019), anything dividing it is GQA.
    ``head_dim`` is independent of the model width (Gemma). ``scale`` defaults to ``1/sqrt(head_dim)``;
    T5 uses ``1.0`` (its init absorbs it). ``qk_norm`` adds RMSNorms on queries and keys (Gemma 3).
    ``softcap`` caps logits with ``c * tanh(x / c)`` (Gemma 2). Masks and biases are built by the
    caller, once per forward, so that scanned layers share them.

    Shapes: ``x [seq, embed]``, ``context [kv_seq, kv_embed]`` (cross attention) -> ``[seq, embed]``.
    """

    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear
    q_norm: RMSNorm | None
    k_norm: RMSNorm | None
    num_heads: int = eqx.field(static=True)
    num_kv_heads: int = eqx.field(static=True)
    head_dim: int = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    softcap: float | None = eqx.field(static=True)
    impl: AttentionImpl = eqx.field(static=True)
    dropout_rate: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        kv_dim: int | None = None,
        use_bias: bool = False,
        out_bias: bool | None = None,
        scale: float | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        norm_unit_offset: bool = False,
        softcap: float | None = None,
        impl: AttentionImpl = "xla",
        dropout_rate: float = 0.0,
        init_std: float = 0.02,
        out_init_std: float | None = None,
        key: PRNGKeyArray,
    ):
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}; give head_dim")
            head_dim = dim // num_heads
        kv_dim = dim if kv_dim is None else kv_dim
        out_bias = use_bias if out_bias is None else out_bias
        qk, kk, vk, ok = jax.random.split(key, 4)
        self.q_proj = Linear(dim, num_heads * head_dim, use_bias=use_bias, init_std=init_std, key=qk)
        self.k_proj = Linear(kv_dim, num_kv_heads * head_dim, use_bias=use_bias, init_std=init_std, key=kk)
        self.v_proj = Linear(kv_dim, num_kv_heads * head_dim, use_bias=use_bias, init_std=init_std, key=vk)
        o_std = init_std if out_init_std is None else out_init_std
        self.o_proj = Linear(num_heads * head_dim, dim, use_bias=out_bias, init_std=o_std, key=ok)
        self.q_norm = RMSNorm(head_dim, eps=norm_eps, unit_offset=norm_unit_offset) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps=norm_eps, unit_offset=norm_unit_offset) if qk_norm else None
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        self.softcap = softcap
        check_impl(impl)
        self.impl = impl
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        self.dropout_rate = dropout_rate

    def project_kv(self, context: Float[Array, "kv_seq kv_embed"], rotary: Rotary | None = None) -> LayerKV:
        """Keys and values of ``context`` (with key norm and rotation applied), e.g. to cache an encoder's."""
        k = self.k_proj(context).reshape(context.shape[0], self.num_kv_heads, self.head_dim)
        v = self.v_proj(context).reshape(context.shape[0], self.num_kv_heads, self.head_dim)
        if self.k_norm is not None:
            k = self.k_norm(k)
        if rotary is not None:
            k = apply_rotary(k, *rotary)
        return k, v

    def __call__(
        self,
        x: Float[Array, "seq embed"],
        *,
        mask: Mask | None,
        context: Float[Array, "kv_seq kv_embed"] | None = None,
        kv: LayerKV | None = None,
        rotary: Rotary | None = None,
        bias: Float[Array, "heads seq kv_seq"] | None = None,
        cache: CacheKV | None = None,
        cache_index: Int[Array, ""] | None = None,
        layer: Int[Array, ""] | None = None,
        ring: bool = False,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "seq embed"], CacheKV | None]:
        """Attend from ``x`` to itself, to ``context``, or to precomputed ``kv`` (cached cross attention).

        With ``cache`` (``[max_len, kv_heads, head_dim]`` keys and values) the new keys and values are
        written at ``cache_index`` and the queries attend over every slot; ``mask`` is then
        ``[seq, max_len]``; new slots past the last one raise (:func:`~eqxllm.nn.kv_cache.checked_index`)
        instead of overwriting earlier ones. With ``layer`` as well, ``cache`` holds every layer's keys and values
        (``[layers, max_len, kv_heads, head_dim]``) and only this layer's new slots are written: carried
        through the layer scan, the whole cache is then updated in place instead of being sliced out and
        stacked back (a full copy per token); its room is checked once per pass by
        :meth:`~eqxllm.nn.KVCache.prepare`, not per layer. With ``ring`` the stacked ``cache`` is instead
        every sliding layer's ring of the last ``window`` slots (:mod:`eqxllm.nn.ring_cache`): the
        queries attend over row ``layer`` as it was, then the new keys (``mask`` is
        ``[seq, window + seq]``), and the new slots are written into the ring. ``key`` turns on dropout of the attention probabilities
        (``dropout_rate``). Returns the output and the updated cache (None without one).
        """
        seq = x.shape[0]
        q = self.q_proj(x).reshape(seq, self.num_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if rotary is not None:
            q = apply_rotary(q, *rotary)
        if kv is None:
            k, v = self.project_kv(x if context is None else context, rotary if context is None else None)
        else:
            k, v = kv
        new_cache = None
        if cache is not None:
            if cache_index is None:
                raise ValueError("a KV cache needs cache_index, the slot of the first new token")
            if ring:
                if layer is None:
                    raise ValueError("a ring cache stacks every sliding layer's rows: give layer, this one's row")
                k, v, new_cache = ring_attend(cache, k, v, cache_index, layer)
            else:
                if layer is None:  # a caller's own cache; a stacked one is checked once per pass, by KVCache.prepare
                    cache_index = checked_index(cache_index, k.shape[0], cache[0].shape[0])
                new_cache = (write_slots(cache[0], k, cache_index, layer), write_slots(cache[1], v, cache_index, layer))
                k, v = (c if layer is None else c[layer] for c in new_cache)
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        out = dot_product_attention(
            q, k, v, mask=mask, bias=bias, scale=self.scale, softcap=self.softcap, impl=self.impl,
            dropout_rate=self.dropout_rate, key=key,
        )  # fmt: skip
        out = out.reshape(seq, self.num_heads * self.head_dim)
        if seq == 1:  # a decoding step: hand the output projection a plain vector
            out = materialize(out)
        return self.o_proj(out), new_cache

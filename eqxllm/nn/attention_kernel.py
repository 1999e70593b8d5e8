"""The one dispatch point for scaled dot-product attention.

``"xla"`` is a plain einsum/softmax path that supports everything (soft-capping included) and runs
anywhere; ``"jax"`` calls ``jax.nn.dot_product_attention`` (XLA on CPU, cuDNN flash attention on
GPU with ``"cudnn"``). Both give the same results up to float rounding; the tests check it.
"""

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

AttentionImpl = Literal["xla", "jax", "cudnn"]


def dot_product_attention(
    q: Float[Array, "seq heads head_dim"],
    k: Float[Array, "kv_seq kv_heads head_dim"],
    v: Float[Array, "kv_seq kv_heads head_dim"],
    *,
    mask: Bool[Array, "seq kv_seq"] | None = None,
    bias: Float[Array, "heads seq kv_seq"] | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    impl: AttentionImpl = "xla",
) -> Float[Array, "seq heads head_dim"]:
    """``softmax(cap(scale * q k^T) + bias, masked) v`` (Vaswani et al., 2017), grouped over kv heads.

    ``softcap`` applies ``c * tanh(logits / c)`` before the bias and mask (Gemma 2). Logits and softmax
    run in float32. A query row whose keys are all masked (left padding) gets a uniform average
    instead of NaN; its output is meaningless and must be ignored by the caller.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
    if impl != "xla" and softcap is None:
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            bias=None if bias is None else bias.astype(q.dtype),
            mask=None if mask is None else mask[None],
            scale=scale,
            implementation=None if impl == "jax" else "cudnn",
        )
    group = heads // kv_heads
    qg = q.reshape(q.shape[0], kv_heads, group, q.shape[2])
    logits = jnp.einsum("qhgd,khd->hgqk", qg, k, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32).reshape(kv_heads, group, *bias.shape[1:])
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("hgqk,khd->qhgd", weights, v)
    return out.reshape(q.shape)

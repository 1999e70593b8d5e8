"""The one dispatch point for scaled dot-product attention.

``"xla"`` is a plain einsum/softmax path that supports everything (soft-capping included) and runs
anywhere; ``"jax"`` calls ``jax.nn.dot_product_attention`` (XLA on CPU, cuDNN flash attention on
GPU with ``"cudnn"``). Both give the same results up to float rounding; the tests check it. A
:class:`~eqxllm.nn.masks.CausalMask` reaches ``jax.nn.dot_product_attention`` as ``is_causal`` (and a
``local_window_size``), not as an array, so cuDNN runs its causal kernel instead of adding a dense bias.
"""

from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxllm.nn.dropout import dropout
from eqxllm.nn.masks import CausalMask, Mask

AttentionImpl = Literal["xla", "jax", "cudnn"]
ATTENTION_IMPLS: tuple[str, ...] = get_args(AttentionImpl)


def check_impl(impl: str) -> None:
    """Raise ``ValueError`` for an ``impl`` that is not an :data:`AttentionImpl` (any other string would
    otherwise reach ``jax.nn.dot_product_attention`` as a request for cuDNN)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl {impl!r} is unknown; expected one of {list(ATTENTION_IMPLS)}")


def dot_product_attention(
    q: Float[Array, "seq heads head_dim"],
    k: Float[Array, "kv_seq kv_heads head_dim"],
    v: Float[Array, "kv_seq kv_heads head_dim"],
    *,
    mask: Mask | None = None,
    bias: Float[Array, "heads seq kv_seq"] | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    impl: AttentionImpl = "xla",
    dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "seq heads head_dim"]:
    """``softmax(cap(scale * q k^T) + bias, masked) v`` (Vaswani et al., 2017), grouped over kv heads.

    ``mask`` (``True`` = may attend) is a boolean array or a :class:`~eqxllm.nn.masks.CausalMask`.
    ``softcap`` applies ``c * tanh(logits / c)`` before the bias and mask (Gemma 2). Logits and softmax
    run in float32. A query row whose keys are all masked (left padding) gets a uniform average
    instead of NaN; its output is meaningless and must be ignored by the caller.

    With ``key`` and ``dropout_rate > 0``, the attention probabilities are dropped out (each zeroed
    with probability ``dropout_rate``, the rest scaled by ``1 / (1 - rate)``), as GPT-2's ``attn_pdrop``
    and T5's ``dropout_rate`` do in training; that always takes the ``"xla"`` path, since
    ``jax.nn.dot_product_attention`` has no dropout.
    """
    check_impl(impl)
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
    dropping = key is not None and dropout_rate > 0.0
    causal, mask = (mask, mask.dense) if isinstance(mask, CausalMask) else (None, mask)
    if impl != "xla" and softcap is None and not dropping:

        def fused(window: int | None):
            return jax.nn.dot_product_attention(
                q,
                k,
                v,
                bias=None if bias is None else bias.astype(q.dtype),
                mask=None if mask is None or causal is not None else mask[None],
                scale=scale,
                is_causal=causal is not None,
                local_window_size=None if window is None else (window - 1, 0),  # q - k < window
                implementation=None if impl == "jax" else "cudnn",
            )

        if causal is None or causal.windowed is None:
            return fused(None if causal is None else causal.window)
        # a scanned layer of a mixed stack: its own kernel, sliding or global (one runs per layer)
        return jax.lax.cond(causal.windowed, lambda: fused(causal.window), lambda: fused(None))
    if q.shape[0] == 1 and not dropping:
        return _one_query(q, k, v, mask=mask, bias=bias, scale=scale, softcap=softcap)
    group = heads // kv_heads
    qg = q.reshape(q.shape[0], kv_heads, group, q.shape[2])
    logits = jnp.einsum("qhgd,khd->hgqk", qg, k, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32).reshape(kv_heads, group, *bias.shape[1:])
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, key).astype(v.dtype)
    out = jnp.einsum("hgqk,khd->qhgd", weights, v)
    return out.reshape(q.shape)


def _one_query(q, k, v, *, mask, bias, scale, softcap):
    """The ``"xla"`` path for a single query (a decoding step), in float32 and on the stored
    ``[kv_seq, kv_heads, head_dim]`` layout of a KV cache.

    The einsums above make XLA:CPU copy every layer's cache into heads-major order at every token
    (their dots batch over heads, which must then be the major axis), which costs more than the
    attention itself. Here no dot batches over heads. Logits: with one query head per key head, an
    elementwise product reduced by a dot with a ones vector (a plain ``sum`` goes to a slow XLA:CPU
    reduction kernel); with shared key heads (GQA/MQA), one ``[kv_seq, kv_heads * head_dim]`` matmul
    against the block-diagonal matrix of the queries. Output: one ``[heads, kv_seq] @ [kv_seq,
    kv_heads * head_dim]`` matmul whose diagonal blocks (each head with its own value head) are kept.
    The zero blocks cost ``kv_heads`` times the (small) flops of one query. Same results up to rounding.
    """
    kv_seq, kv_heads, head_dim = k.shape
    heads = q.shape[1]
    group = heads // kv_heads
    f32 = jnp.float32
    qg = q[0].reshape(kv_heads, group, head_dim).astype(f32)
    k = k.astype(f32)
    if group == 1:
        prod = (qg[None, :, 0] * k).reshape(kv_seq * heads, head_dim)
        logits = (prod @ jnp.ones((head_dim,), f32)).reshape(kv_seq, heads)
    else:
        eye = jnp.eye(kv_heads, dtype=f32)
        block_diag = eye[:, None, :, None] * jnp.transpose(qg, (2, 0, 1))[None]  # [kv_heads, head_dim, kv_heads, group]
        logits = k.reshape(kv_seq, kv_heads * head_dim) @ block_diag.reshape(kv_heads * head_dim, heads)
    logits = logits * scale
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    if bias is not None:
        logits = logits + bias[:, 0, :].T.astype(f32)
    if mask is not None:
        logits = jnp.where(mask[0][:, None], logits, jnp.finfo(f32).min)
    weights = jax.nn.softmax(logits, axis=0).astype(v.dtype)  # [kv_seq, heads]
    every = weights.T @ v.reshape(kv_seq, kv_heads * head_dim)  # [heads, kv_heads * head_dim]
    every = every.reshape(kv_heads, group, kv_heads, head_dim)
    out = jnp.diagonal(every, axis1=0, axis2=2)  # [group, head_dim, kv_heads]
    return jnp.transpose(out, (2, 0, 1)).reshape(q.shape).astype(q.dtype)

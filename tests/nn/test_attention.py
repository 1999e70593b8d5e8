"""The ``Attention`` module against a NumPy forward pass built from its own q/k/v/o weights: self and
cross attention, MHA/GQA/MQA, T5's scale, soft-capping, query/key norms, rotary positions, and the KV
cache path matching the full causal pass."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.nn import Attention, KVCache, attention_mask
from eqxllm.nn.positions import rotary_angles

from ._reference import apply_rope, attention, linear, np64, randomize, rms_norm, rotary_cos_sin

DIM, SEQ = 32, 6


def _make(num_heads=4, *, seed=0, **kwargs) -> Attention:
    att = Attention(DIM, num_heads, key=jax.random.key(seed), **kwargs)
    return randomize(att, jax.random.key(seed + 100), std=0.3)


def _x(seq=SEQ, dim=DIM, seed=1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (seq, dim), jnp.float32)


def _reference(att: Attention, x, *, mask, context=None, rotary=None, bias=None) -> np.ndarray:
    """Project, (norm), (rotate), attend, merge heads, project out: all in float64 NumPy."""
    x = np64(x)
    src = x if context is None else np64(context)
    q = linear(x, att.q_proj).reshape(len(x), att.num_heads, att.head_dim)
    k = linear(src, att.k_proj).reshape(len(src), att.num_kv_heads, att.head_dim)
    v = linear(src, att.v_proj).reshape(len(src), att.num_kv_heads, att.head_dim)
    if att.q_norm is not None:
        q = rms_norm(q, np64(att.q_norm.weight), att.q_norm.eps, att.q_norm.unit_offset)
        k = rms_norm(k, np64(att.k_norm.weight), att.k_norm.eps, att.k_norm.unit_offset)
    if rotary is not None:
        q = apply_rope(q, *rotary)
        k = apply_rope(k, *rotary)
    mask = None if mask is None else np.asarray(mask)
    bias = None if bias is None else np64(bias)
    out = attention(q, k, v, mask=mask, bias=bias, scale=att.scale, softcap=att.softcap)
    return linear(out.reshape(len(x), -1), att.o_proj)


def _causal(seq=SEQ) -> jax.Array:
    return attention_mask(jnp.arange(seq), jnp.ones(seq, bool), causal=True)


@pytest.mark.parametrize(
    ("num_heads", "kwargs"),
    [
        (4, dict(use_bias=True)),  # GPT-2 style MHA with biases
        (4, dict(num_kv_heads=2, head_dim=16)),  # GQA, head_dim independent of the width (Gemma)
        (8, dict(num_kv_heads=1)),  # MQA
        (4, dict(use_bias=True, out_bias=False)),
    ],
    ids=["mha-bias", "gqa-head_dim", "mqa", "no-out-bias"],
)
def test_self_attention(num_heads, kwargs):
    att = _make(num_heads, **kwargs)
    assert att.scale == pytest.approx(1 / math.sqrt(att.head_dim))
    assert att.q_proj.weight.shape == (num_heads * att.head_dim, DIM)
    assert att.k_proj.weight.shape == (att.num_kv_heads * att.head_dim, DIM)
    assert (att.o_proj.bias is not None) == kwargs.get("out_bias", kwargs.get("use_bias", False))
    x = _x()
    out, cache = att(x, mask=_causal())
    assert out.shape == (SEQ, DIM) and cache is None
    np.testing.assert_allclose(np64(out), _reference(att, x, mask=_causal()), rtol=1e-5, atol=1e-5)


def test_bidirectional_without_mask():
    att = _make(4)
    x = _x()
    out, _ = att(x, mask=None)
    np.testing.assert_allclose(np64(out), _reference(att, x, mask=None), rtol=1e-5, atol=1e-5)


def test_t5_scale_and_bias():
    att = _make(4, scale=1.0)
    assert att.scale == 1.0
    x = _x()
    bias = jax.random.normal(jax.random.key(5), (4, SEQ, SEQ), jnp.float32)
    out, _ = att(x, mask=None, bias=bias)
    np.testing.assert_allclose(np64(out), _reference(att, x, mask=None, bias=bias), rtol=1e-5, atol=1e-5)


def test_softcap():
    att = _make(4, num_kv_heads=2, softcap=2.0, scale=1.0)
    x = 3.0 * _x()
    out, _ = att(x, mask=_causal())
    np.testing.assert_allclose(np64(out), _reference(att, x, mask=_causal()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unit_offset", [False, True])
def test_qk_norm(unit_offset):
    att = _make(4, num_kv_heads=2, qk_norm=True, norm_unit_offset=unit_offset)
    assert att.q_norm.weight.shape == (att.head_dim,) and att.k_norm.unit_offset == unit_offset
    x = _x()
    out, _ = att(x, mask=_causal())
    np.testing.assert_allclose(np64(out), _reference(att, x, mask=_causal()), rtol=1e-5, atol=1e-5)


def test_rotary_inside():
    att = _make(4, num_kv_heads=2)
    x = _x()
    cos, sin = rotary_cos_sin(np.arange(SEQ), att.head_dim)
    rotary = (jnp.asarray(cos, jnp.float32), jnp.asarray(sin, jnp.float32))
    out, _ = att(x, mask=_causal(), rotary=rotary)
    ref = _reference(att, x, mask=_causal(), rotary=(cos, sin))
    np.testing.assert_allclose(np64(out), ref, rtol=1e-5, atol=1e-5)
    plain, _ = att(x, mask=_causal())
    assert np.max(np.abs(np64(plain) - ref)) > 1e-3


def test_cross_attention_other_length_and_width():
    kv_dim, ctx_len = 24, 9
    att = _make(4, num_kv_heads=2, kv_dim=kv_dim, use_bias=True)
    assert att.k_proj.weight.shape == (2 * att.head_dim, kv_dim)
    x, context = _x(), _x(ctx_len, kv_dim, seed=2)
    mask = jnp.broadcast_to(jnp.arange(ctx_len) < 7, (SEQ, ctx_len))  # encoder padding at the end
    out, _ = att(x, mask=mask, context=context)
    assert out.shape == (SEQ, DIM)
    ref = _reference(att, x, mask=mask, context=context)
    np.testing.assert_allclose(np64(out), ref, rtol=1e-5, atol=1e-5)
    # precomputed keys/values (a cached encoder output) give the same result
    via_kv, _ = att(x, mask=mask, kv=att.project_kv(context))
    np.testing.assert_allclose(np.asarray(via_kv), np.asarray(out), rtol=0, atol=1e-6)


def _decode(att, cache: KVCache, chunk, chunk_mask):
    """One call through the cache, as a decoder-only model does it: positions from the cache, a mask
    over all slots, rotary angles of the new tokens' positions."""
    positions, slots, valid = cache.prepare(chunk_mask)
    mask = attention_mask(slots, valid, causal=True)
    rotary = rotary_angles(positions, att.head_dim)
    out, (k, v) = att(chunk, mask=mask, rotary=rotary, cache=(cache.k[0], cache.v[0]), cache_index=cache.index)
    return out, cache.advanced(k[None], v[None], valid, chunk.shape[0])


@pytest.mark.parametrize("pad", [0, 2], ids=["unpadded", "left-padded"])
def test_kv_cache_chunks_equal_full_causal_pass(pad):
    att = _make(4, num_kv_heads=2, use_bias=True)
    seq, prompt = 7, 4
    x = _x(seq)
    full, _ = att(x, mask=_causal(seq), rotary=rotary_angles(jnp.arange(seq), att.head_dim))

    cache = KVCache.empty(num_layers=1, max_len=12, num_kv_heads=2, head_dim=att.head_dim)
    garbage = 5.0 * _x(pad, seed=9)  # padding content must not leak into any real token
    chunk = jnp.concatenate([garbage, x[:prompt]])
    chunk_mask = jnp.arange(pad + prompt) >= pad
    out, cache = _decode(att, cache, chunk, chunk_mask)
    np.testing.assert_allclose(np.asarray(out[pad:]), np.asarray(full[:prompt]), rtol=0, atol=1e-5)

    step = eqx.filter_jit(_decode)
    for t in range(prompt, seq):
        out, cache = step(att, cache, x[t : t + 1], jnp.ones(1, bool))
        np.testing.assert_allclose(np.asarray(out[0]), np.asarray(full[t]), rtol=0, atol=1e-5)
    assert int(cache.index) == pad + seq
    # the cache holds the rotated keys of the real tokens in slots pad..pad+seq
    k_full, v_full = att.project_kv(x, rotary_angles(jnp.arange(seq), att.head_dim))
    np.testing.assert_allclose(np.asarray(cache.k[0, pad : pad + seq]), np.asarray(k_full), atol=1e-5)
    np.testing.assert_allclose(np.asarray(cache.v[0, pad : pad + seq]), np.asarray(v_full), atol=1e-5)


def test_cache_needs_an_index():
    att = _make(4)
    cache = KVCache.empty(num_layers=1, max_len=8, num_kv_heads=4, head_dim=att.head_dim)
    with pytest.raises(ValueError, match="cache_index"):
        att(_x(2), mask=jnp.ones((2, 8), bool), cache=(cache.k[0], cache.v[0]))


def test_a_raw_cache_refuses_writes_past_its_last_slot():
    """A ``(k, v)`` cache given directly: ``dynamic_update_slice`` would clamp 6 tokens at slot 8 of 10
    onto slots 4..9, overwriting 4..7. The index is checked at run time (also under jit), a chunk
    longer than the cache at once."""
    att = _make(4, num_kv_heads=2)
    cache = KVCache.empty(num_layers=1, max_len=10, num_kv_heads=2, head_dim=att.head_dim)
    slots = (cache.k[0], cache.v[0])

    def call(att, x, index):
        return att(x, mask=jnp.ones((x.shape[0], 10), bool), cache=slots, cache_index=index)[1]

    call(att, _x(6), jnp.array(4))  # exactly fills the cache: fine
    with pytest.raises(RuntimeError, match="KV cache overflow: 6 new token"):
        call(att, _x(6), jnp.array(8))
    with pytest.raises(RuntimeError, match="KV cache overflow: 6 new token"):
        jax.block_until_ready(eqx.filter_jit(call)(att, _x(6), jnp.array(8)))
    with pytest.raises(InputError, match="KV cache overflow: 11 new token.* more than the 10 slots"):
        call(att, _x(11), jnp.array(0))


def test_constructor_checks():
    with pytest.raises(ValueError, match="num_heads=6 is not a multiple of num_kv_heads=4"):
        Attention(DIM, 6, num_kv_heads=4, head_dim=8, key=jax.random.key(0))
    with pytest.raises(ValueError, match="width 32 is not divisible by num_heads=5"):
        Attention(DIM, 5, key=jax.random.key(0))
    assert Attention(DIM, 5, head_dim=8, key=jax.random.key(0)).q_proj.weight.shape == (40, DIM)


def test_an_unknown_impl_is_refused_when_built(monkeypatch):
    # as users call it: without the suite's jaxtyping hook, whose Literal check would answer first
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    with pytest.raises(ValueError, match="attention impl 'Flash' is unknown"):
        Attention(DIM, 4, impl="Flash", key=jax.random.key(0))  # type: ignore[arg-type]

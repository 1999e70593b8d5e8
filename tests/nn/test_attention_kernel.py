"""``dot_product_attention`` against a NumPy reference: MHA, GQA, MQA, masks, bias, T5's scale 1,
Gemma 2's soft-capping, the two implementations agreeing, fully masked rows, and causal masks passed
by their structure."""

import math

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from eqxllm.nn import dot_product_attention
from eqxllm.nn.masks import CausalMask

from ._reference import attention, np64

SEQ, KV_SEQ, HEAD_DIM = 5, 7, 8
HEADS = [(4, 4), (8, 2), (8, 1)]
HEAD_IDS = ["mha", "gqa", "mqa"]


def _qkv(heads, kv_heads, seed=0, q_scale=1.0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = q_scale * jax.random.normal(kq, (SEQ, heads, HEAD_DIM), jnp.float32)
    k = jax.random.normal(kk, (KV_SEQ, kv_heads, HEAD_DIM), jnp.float32)
    v = jax.random.normal(kv, (KV_SEQ, kv_heads, HEAD_DIM), jnp.float32)
    return q, k, v


def _mask(seed=3) -> jax.Array:
    """A random mask in which every query keeps at least one key."""
    m = jax.random.bernoulli(jax.random.key(seed), 0.6, (SEQ, KV_SEQ))
    return m.at[jnp.arange(SEQ), jnp.arange(SEQ)].set(True)


def _bias(heads, seed=4) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (heads, SEQ, KV_SEQ), jnp.float32)


@pytest.mark.parametrize("impl", ["xla", "jax"])
@pytest.mark.parametrize(("heads", "kv_heads"), HEADS, ids=HEAD_IDS)
def test_plain_attention(heads, kv_heads, impl):
    q, k, v = _qkv(heads, kv_heads)
    scale = 1 / math.sqrt(HEAD_DIM)
    out = dot_product_attention(q, k, v, scale=scale, impl=impl)
    assert out.shape == q.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(np64(out), attention(np64(q), np64(k), np64(v), scale=scale), atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "jax"])
@pytest.mark.parametrize(("heads", "kv_heads"), HEADS, ids=HEAD_IDS)
def test_mask_and_bias(heads, kv_heads, impl):
    q, k, v = _qkv(heads, kv_heads)
    mask, bias = _mask(), _bias(heads)
    out = dot_product_attention(q, k, v, mask=mask, bias=bias, scale=0.3, impl=impl)
    ref = attention(np64(q), np64(k), np64(v), mask=np.asarray(mask), bias=np64(bias), scale=0.3)
    np.testing.assert_allclose(np64(out), ref, atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "jax"])
def test_t5_scale_one(impl):
    """T5 does not divide the logits by sqrt(head_dim)."""
    q, k, v = _qkv(4, 4)
    bias = _bias(4)
    out = dot_product_attention(q, k, v, bias=bias, scale=1.0, impl=impl)
    ref = attention(np64(q), np64(k), np64(v), bias=np64(bias), scale=1.0)
    np.testing.assert_allclose(np64(out), ref, atol=1e-5)
    scaled = attention(np64(q), np64(k), np64(v), bias=np64(bias), scale=1 / math.sqrt(HEAD_DIM))
    assert np.max(np.abs(np64(out) - scaled)) > 1e-2


@pytest.mark.parametrize("impl", ["xla", "jax"])
@pytest.mark.parametrize(("heads", "kv_heads"), HEADS, ids=HEAD_IDS)
def test_softcap(heads, kv_heads, impl):
    """Large logits (queries scaled up) so that the cap of 5 really bites; "jax" falls back to XLA."""
    q, k, v = _qkv(heads, kv_heads, q_scale=4.0)
    mask, bias = _mask(), _bias(heads)
    out = dot_product_attention(q, k, v, mask=mask, bias=bias, scale=0.5, softcap=5.0, impl=impl)
    args = dict(mask=np.asarray(mask), bias=np64(bias), scale=0.5)
    ref = attention(np64(q), np64(k), np64(v), softcap=5.0, **args)
    np.testing.assert_allclose(np64(out), ref, atol=1e-5)
    uncapped = attention(np64(q), np64(k), np64(v), **args)
    assert np.max(np.abs(np64(out) - uncapped)) > 1e-2


@pytest.mark.parametrize(("heads", "kv_heads"), HEADS, ids=HEAD_IDS)
def test_xla_and_jax_agree(heads, kv_heads):
    q, k, v = _qkv(heads, kv_heads, seed=7, q_scale=2.0)
    kwargs = dict(mask=_mask(8), bias=_bias(heads, 9), scale=1 / math.sqrt(HEAD_DIM))
    a = dot_product_attention(q, k, v, impl="xla", **kwargs)
    b = dot_product_attention(q, k, v, impl="jax", **kwargs)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize(("heads", "kv_heads"), HEADS, ids=HEAD_IDS)
def test_single_query_decoding_path(heads, kv_heads, softcap):
    """One query (a decoding step) takes the transpose-free path: same result as the reference."""
    q, k, v = _qkv(heads, kv_heads, q_scale=4.0)
    q, mask, bias = q[:1], _mask()[:1], _bias(heads)[:, :1]
    out = dot_product_attention(q, k, v, mask=mask, bias=bias, scale=0.5, softcap=softcap)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref = attention(np64(q), np64(k), np64(v), mask=np.asarray(mask), bias=np64(bias), scale=0.5, softcap=softcap)
    np.testing.assert_allclose(np64(out), ref, atol=1e-5)
    low = dot_product_attention(
        q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), mask=mask, scale=0.5
    )
    assert low.dtype == jnp.bfloat16
    ref = attention(np64(q), np64(k), np64(v), mask=np.asarray(mask), scale=0.5)
    np.testing.assert_allclose(np64(low), ref, atol=5e-2)


@pytest.mark.parametrize("impl", ["xla", "jax"])
def test_fully_masked_rows_are_finite(impl):
    """Left padding leaves query rows with no visible key: no NaN, and other rows are unaffected."""
    q, k, v = _qkv(8, 2)
    mask = _mask().at[0].set(False).at[3].set(False)
    bias = _bias(8)
    out = dot_product_attention(q, k, v, mask=mask, bias=bias, scale=0.35, impl=impl)
    assert np.all(np.isfinite(np.asarray(out)))
    ref = attention(np64(q), np64(k), np64(v), mask=np.asarray(mask), bias=np64(bias), scale=0.35)
    live = [1, 2, 4]
    np.testing.assert_allclose(np64(out)[live], ref[live], atol=1e-5)
    grads = jax.grad(lambda q: dot_product_attention(q, k, v, mask=mask, scale=0.35, impl=impl).sum())(q)
    assert np.all(np.isfinite(np.asarray(grads)))


def test_bfloat16_inputs_keep_their_dtype():
    q, k, v = (a.astype(jnp.bfloat16) for a in _qkv(8, 2))
    out = dot_product_attention(q, k, v, mask=_mask(), scale=0.35)
    assert out.dtype == jnp.bfloat16
    ref = attention(np64(q), np64(k), np64(v), mask=np.asarray(_mask()), scale=0.35)
    np.testing.assert_allclose(np64(out), ref, atol=3e-2)


def test_heads_must_be_a_multiple_of_kv_heads():
    q = jnp.zeros((SEQ, 6, HEAD_DIM))
    k = v = jnp.zeros((KV_SEQ, 4, HEAD_DIM))
    with pytest.raises(ValueError, match=r"query heads \(6\) must be a multiple of key/value heads \(4\)"):
        dot_product_attention(q, k, v)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_agrees_with_xla_in_bfloat16():
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (128, 8, 64), jnp.bfloat16)
    k = jax.random.normal(kk, (128, 2, 64), jnp.bfloat16)
    v = jax.random.normal(kv, (128, 2, 64), jnp.bfloat16)
    mask = jnp.tril(jnp.ones((128, 128), bool))
    a = dot_product_attention(q, k, v, mask=mask, scale=0.125, impl="xla")
    b = dot_product_attention(q, k, v, mask=mask, scale=0.125, impl="cudnn")
    np.testing.assert_allclose(np64(a), np64(b), atol=2e-2)


@pytest.mark.parametrize("impl", ["xla", "jax"])
def test_dropout_on_probabilities(impl):
    """With one-hot values the output is the probability matrix itself: with a key, each entry is
    either dropped (0) or scaled by 1 / (1 - rate), about ``rate`` of them are dropped, and no key
    (or rate 0) changes nothing. Both implementations take the same path when dropping."""
    heads, kv_heads, rate = 4, 2, 0.3
    q, k, _ = _qkv(heads, kv_heads)
    v = jnp.broadcast_to(jnp.eye(KV_SEQ, HEAD_DIM)[:, None, :], (KV_SEQ, kv_heads, HEAD_DIM))  # one-hot rows
    mask = _mask()
    attend = lambda **kw: np.asarray(dot_product_attention(q, k, v, mask=mask, scale=0.35, impl=impl, **kw))[
        ..., :KV_SEQ
    ]  # noqa: E731
    probs = attend()  # [seq, heads, kv_seq]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(attend(dropout_rate=rate), probs)
    np.testing.assert_array_equal(attend(dropout_rate=0.0, key=jax.random.key(1)), probs)
    dropped = [attend(dropout_rate=rate, key=key) for key in jax.random.split(jax.random.key(7), 200)]
    p = probs
    for d in dropped[:5]:
        kept = d != 0
        np.testing.assert_allclose(d[kept], p[kept] / (1 - rate), rtol=1e-5)
    visible = np.broadcast_to(np.asarray(mask)[:, None, :], p.shape)
    zero_fraction = np.mean(np.stack(dropped)[:, visible] == 0)
    assert abs(zero_fraction - rate) < 0.02
    sigma = p * np.sqrt(rate / (1 - rate) / len(dropped))  # the standard error of each mean below
    assert np.all(np.abs(np.mean(dropped, axis=0) - p) <= 4 * sigma + 1e-6)  # unbiased
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        from eqxllm.nn import Attention

        Attention(16, 2, dropout_rate=1.0, key=jax.random.key(0))


def _causal(seq: int, window: int | None) -> np.ndarray:
    q, k = np.arange(seq)[:, None], np.arange(seq)[None, :]
    return (k <= q) & (q - k < (window or seq))


@pytest.mark.parametrize("impl", ["xla", "jax"])
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize(("heads", "kv_heads"), HEADS, ids=HEAD_IDS)
def test_causal_mask_equals_its_dense_mask(heads, kv_heads, window, impl):
    """A CausalMask attends exactly as the boolean triangle (and window) it stands for, on both paths."""
    q, k, v = _qkv(heads, kv_heads)
    k, v = k[:SEQ], v[:SEQ]
    dense = _causal(SEQ, window)
    out = dot_product_attention(q, k, v, mask=CausalMask(jnp.asarray(dense), window), scale=0.4, impl=impl)
    ref = attention(np64(q), np64(k), np64(v), mask=dense, scale=0.4)
    np.testing.assert_allclose(np64(out), ref, atol=1e-5)


@pytest.mark.parametrize("window", [None, 3])
def test_causal_mask_reaches_jax_as_its_structure(attention_calls, window):
    """cuDNN's causal kernel needs ``is_causal`` (and a left window) without a mask: a dense mask would
    be turned into an added [seq, kv_seq] bias."""
    q, k, v = _qkv(4, 2)
    k, v = k[:SEQ], v[:SEQ]
    dense = jnp.asarray(_causal(SEQ, window))
    dot_product_attention(q, k, v, mask=CausalMask(dense, window), scale=0.4, impl="jax")
    dot_product_attention(q, k, v, mask=dense, scale=0.4, impl="jax")
    structured, plain = attention_calls
    assert structured["mask"] is None and structured["is_causal"] is True
    assert structured["local_window_size"] == (None if window is None else (window - 1, 0))
    assert plain["mask"] is not None and plain["is_causal"] is False and plain["local_window_size"] is None


@pytest.mark.parametrize("impl", ["xla", "jax"])
def test_a_scanned_flag_picks_the_window(impl):
    """In a stack mixing sliding and global layers, each layer's flag (traced) picks its mask or kernel."""
    q, k, v = _qkv(4, 2)
    k, v = k[:SEQ], v[:SEQ]
    local, full = (CausalMask(jnp.asarray(_causal(SEQ, w)), w) for w in (2, None))

    @jax.jit
    def attend(flag):
        return dot_product_attention(q, k, v, mask=CausalMask.pick(flag, local, full), scale=0.4, impl=impl)

    for flag, window in ((True, 2), (False, None)):
        ref = attention(np64(q), np64(k), np64(v), mask=_causal(SEQ, window), scale=0.4)
        np.testing.assert_allclose(np64(attend(jnp.asarray(flag))), ref, atol=1e-5)


def test_an_unknown_impl_is_refused(monkeypatch):
    """Any string but "xla" used to reach jax.nn.dot_product_attention as a request for cuDNN. Called
    as users call it: without the suite's jaxtyping hook, whose Literal check would answer first."""
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    q = jnp.zeros((SEQ, 4, HEAD_DIM))
    k = v = jnp.zeros((KV_SEQ, 2, HEAD_DIM))
    with pytest.raises(
        ValueError, match=r"attention impl 'flash' is unknown; expected one of \['xla', 'jax', 'cudnn'\]"
    ):
        dot_product_attention(q, k, v, impl="flash")  # type: ignore[arg-type]

"""RMSNorm (``w`` and Gemma's ``1 + w``) and LayerNorm against NumPy, in float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import LayerNorm, RMSNorm

from ._reference import np64, randomize, rms_norm

DIM = 16


def _inputs(dtype) -> jax.Array:
    x = 2.0 * jax.random.normal(jax.random.key(1), (3, 5, DIM), jnp.float32) + 0.5
    # one small row, where eps is not negligible next to mean(x^2)
    x = x.at[0, 0].multiply(1e-3)
    return x.astype(dtype)


def _layer_norm(x, w, b, eps):
    """Ba et al. (2016): ``(x - mean) / sqrt(var + eps) * w + b``, biased variance."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * w
    return y if b is None else y + b


def _assert_bf16_rounding_of(out: jax.Array, ref: np.ndarray):
    """``out`` is ``ref`` rounded to bfloat16: exactly for almost every entry, and never more than one
    bfloat16 step away (float32 ``rsqrt`` vs float64 can flip a rounding tie). Computing in bfloat16
    instead would miss by several steps on many entries."""
    assert out.dtype == jnp.bfloat16
    expected = np.asarray(jnp.asarray(ref, jnp.float32).astype(jnp.bfloat16), np.float64)
    got = np.asarray(out, np.float64)
    ulp = np.abs(expected) * 2.0**-7 + 1e-30
    assert np.all(np.abs(got - expected) <= ulp)
    assert np.mean(got == expected) >= 0.99


@pytest.mark.parametrize("unit_offset", [False, True], ids=["w", "1+w"])
def test_rmsnorm_float32_matches_reference(unit_offset):
    norm = randomize(RMSNorm(DIM, eps=1e-6, unit_offset=unit_offset), jax.random.key(0))
    x = _inputs(jnp.float32)
    out = norm(x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    ref = rms_norm(np64(x), np64(norm.weight), 1e-6, unit_offset)
    np.testing.assert_allclose(np64(out), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unit_offset", [False, True], ids=["w", "1+w"])
def test_rmsnorm_bfloat16_is_float32_result_rounded(unit_offset):
    norm = randomize(RMSNorm(DIM, eps=1e-6, unit_offset=unit_offset), jax.random.key(0))
    x = _inputs(jnp.bfloat16)
    ref = rms_norm(np64(x), np64(norm.weight), 1e-6, unit_offset)
    _assert_bf16_rounding_of(norm(x), ref)


def test_rmsnorm_unit_offset_differs_from_plain_weight():
    plain = randomize(RMSNorm(DIM), jax.random.key(0))
    gemma = RMSNorm(DIM, unit_offset=True)
    gemma = jax.tree.map(lambda _: plain.weight, gemma)  # same stored w, scale 1 + w
    x = _inputs(jnp.float32)
    np.testing.assert_allclose(np64(gemma(x)), np64(plain(x)) + rms_norm(np64(x), 1.0, 1e-6, False), atol=1e-5)


@pytest.mark.parametrize("unit_offset", [False, True])
def test_rmsnorm_default_init_is_pure_normalisation(unit_offset):
    x = _inputs(jnp.float32)
    ref = rms_norm(np64(x), np.ones(DIM), 1e-6, False)
    np.testing.assert_allclose(np64(RMSNorm(DIM, unit_offset=unit_offset)(x)), ref, rtol=1e-5, atol=1e-6)


def test_rmsnorm_eps_is_used():
    x = _inputs(jnp.float32)
    out = RMSNorm(DIM, eps=1e-2)(x)
    np.testing.assert_allclose(np64(out), rms_norm(np64(x), np.ones(DIM), 1e-2, False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_bias", [True, False])
def test_layernorm_float32_matches_reference(use_bias):
    norm = randomize(LayerNorm(DIM, eps=1e-5, use_bias=use_bias), jax.random.key(2))
    assert (norm.bias is None) == (not use_bias)
    x = _inputs(jnp.float32)
    out = norm(x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    b = None if norm.bias is None else np64(norm.bias)
    ref = _layer_norm(np64(x), np64(norm.weight), b, 1e-5)
    np.testing.assert_allclose(np64(out), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_bias", [True, False])
def test_layernorm_bfloat16_is_float32_result_rounded(use_bias):
    norm = randomize(LayerNorm(DIM, eps=1e-5, use_bias=use_bias), jax.random.key(2))
    x = _inputs(jnp.bfloat16)
    b = None if norm.bias is None else np64(norm.bias)
    _assert_bf16_rounding_of(norm(x), _layer_norm(np64(x), np64(norm.weight), b, 1e-5))


def test_layernorm_default_init_standardises():
    x = _inputs(jnp.float32)
    out = np64(LayerNorm(DIM)(x))
    np.testing.assert_allclose(out[1:].mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[1:].std(-1), 1.0, atol=1e-4)

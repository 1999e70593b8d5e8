"""Linear: ``x W^T + b`` over the last axis, any leading axes, PyTorch's ``[out, in]`` layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import Linear

from ._reference import np64, randomize


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)], ids=["vector", "seq", "batch-seq"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_matches_matmul_with_leading_axes(lead, use_bias):
    layer = randomize(Linear(6, 4, use_bias=use_bias, key=jax.random.key(0)), jax.random.key(1))
    assert layer.weight.shape == (4, 6)
    assert (layer.bias is None) == (not use_bias)
    x = jax.random.normal(jax.random.key(2), (*lead, 6), jnp.float32)
    out = layer(x)
    assert out.shape == (*lead, 4)
    ref = np64(x) @ np64(layer.weight).T + (0.0 if layer.bias is None else np64(layer.bias))
    np.testing.assert_allclose(np64(out), ref, rtol=1e-5, atol=1e-6)


def test_linear_init():
    layer = Linear(256, 128, use_bias=True, init_std=0.05, key=jax.random.key(0))
    assert layer.weight.dtype == jnp.float32
    assert abs(float(jnp.std(layer.weight)) - 0.05) < 0.05 * 0.05
    assert abs(float(jnp.mean(layer.weight))) < 0.005
    np.testing.assert_array_equal(np.asarray(layer.bias), 0.0)


def test_linear_keeps_the_activation_dtype():
    layer = randomize(Linear(6, 4, use_bias=True, key=jax.random.key(0)), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (3, 6), jnp.float32)
    out = layer(x.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np64(out), np64(layer(x)), rtol=5e-2, atol=5e-2)

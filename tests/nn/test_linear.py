"""Linear: ``x W^T + b`` over the last axis, any leading axes, PyTorch's ``[out, in]`` layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import Linear
from eqxllm.nn.linear import project

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


def _project_cases():
    w = jax.random.normal(jax.random.key(3), (5, 6))
    rows = jax.random.normal(jax.random.key(4), (3, 1, 6))
    return w, rows


@pytest.mark.parametrize("batch", [1, 3])
def test_project_of_one_row_matches_matmul_alone_and_under_vmap(batch):
    w, rows = _project_cases()
    rows = rows[:batch]
    np.testing.assert_allclose(project(rows[0], w), rows[0] @ w.T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda r: project(r, w))(rows), rows @ w.T, rtol=1e-6, atol=1e-6)
    ws = jnp.stack([w + i for i in range(batch)])  # a weight per row: the plain batched product
    np.testing.assert_allclose(jax.vmap(project)(rows, ws), rows @ ws.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    loss = lambda r, v: jnp.sum(jnp.sin(jax.vmap(lambda x: project(x, v))(r)))
    got = jax.grad(loss, argnums=(0, 1))(rows, w)
    want = jax.grad(lambda r, v: jnp.sum(jnp.sin(r @ v.T)), argnums=(0, 1))(rows, w)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_project_of_a_batch_of_rows_puts_the_weight_on_the_left():
    w, rows = _project_cases()
    text = jax.jit(jax.vmap(lambda r: project(r, w))).lower(rows).as_text()
    assert "(tensor<5x6xf32>, tensor<3x6xf32>) -> tensor<5x3xf32>" in text
    assert text.count('stablehlo.gather"') == 1  # keeps XLA from folding the transpose back

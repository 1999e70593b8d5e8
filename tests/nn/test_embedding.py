"""Embedding lookup and the tied output head ``attend``."""

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.nn import Embedding

from ._reference import np64


def test_lookup_returns_rows():
    emb = Embedding(11, 4, init_std=1.0, key=jax.random.key(0))
    assert emb.weight.shape == (11, 4)
    ids = jnp.array([3, 0, 10, 3], jnp.int32)
    out = emb(ids)
    assert out.shape == (4, 4)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(emb.weight)[[3, 0, 10, 3]])


def test_lookup_under_vmap_over_a_batch():
    emb = Embedding(11, 4, key=jax.random.key(0))
    ids = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.int32)
    out = jax.vmap(emb)(ids)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(emb.weight)[np.asarray(ids)])


def test_attend_is_x_times_weight_transposed():
    emb = Embedding(11, 4, init_std=1.0, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 4), jnp.float32)
    out = emb.attend(x)
    assert out.shape == (5, 11)
    np.testing.assert_allclose(np64(out), np64(x) @ np64(emb.weight).T, rtol=1e-5, atol=1e-5)
    # under vmap as in a batched loss
    batched = jax.vmap(emb.attend)(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(np64(batched[1]), 2 * np64(x) @ np64(emb.weight).T, rtol=1e-5, atol=1e-5)


def test_init_std():
    emb = Embedding(512, 64, init_std=0.02, key=jax.random.key(0))
    assert abs(float(jnp.std(emb.weight)) - 0.02) < 0.02 * 0.03

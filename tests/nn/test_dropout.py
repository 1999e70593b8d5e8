"""Dropout: identity without a key, inverted scaling with one."""

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.nn import dropout


def test_identity_without_key_or_rate():
    x = jax.random.normal(jax.random.key(0), (4, 8))
    assert dropout(x, 0.5, None) is x
    assert dropout(x, 0.0, jax.random.key(1)) is x


def test_drops_and_rescales():
    x = jnp.ones((64, 64), jnp.float32) * 3.0
    out = np.asarray(dropout(x, 0.25, jax.random.key(1)))
    assert set(np.unique(out)) == {0.0, 4.0}  # kept entries scaled by 1 / (1 - 0.25)
    assert abs(np.mean(out == 0.0) - 0.25) < 0.03
    assert out.dtype == np.float32
    assert not np.array_equal(out, np.asarray(dropout(x, 0.25, jax.random.key(2))))

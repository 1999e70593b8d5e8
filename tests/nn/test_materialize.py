"""``materialize``: an identity for values and gradients, a gather for one vector, nothing in a batch."""

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.nn.materialize import materialize


def _gathers(fn, *args) -> int:
    return jax.jit(fn).lower(*args).as_text().count('stablehlo.gather"')


def test_values_and_gradients_are_the_identity_alone_and_under_vmap():
    x = jax.random.normal(jax.random.key(0), (1, 48))
    np.testing.assert_array_equal(materialize(x), x)
    for batch in (1, 3):
        xs = jax.random.normal(jax.random.key(batch), (batch, 1, 48))
        np.testing.assert_array_equal(jax.vmap(materialize)(xs), xs)
        grads = jax.vmap(jax.grad(lambda v: jnp.sum(jnp.sin(materialize(v)))))(xs)
        np.testing.assert_allclose(grads, jnp.cos(xs), rtol=1e-6)
    _, tangent = jax.jvp(materialize, (x,), (2 * x,))
    np.testing.assert_array_equal(tangent, 2 * x)


def test_a_gather_for_one_vector_and_none_for_a_batch():
    one = jnp.ones((1, 48))
    assert _gathers(materialize, one) == 1
    assert _gathers(jax.vmap(materialize), one[None]) == 1  # a batch of one sequence is one vector
    assert _gathers(jax.vmap(materialize), jnp.ones((4, 1, 48))) == 0  # a batch: matrix products

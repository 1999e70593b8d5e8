"""Latent paths: exact ends, slerp against its definition, per-token against whole-code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.vae.interpolate import interpolate, interpolation_path, lerp, slerp


def _pair(seed=0, shape=(3, 5)):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, shape), jax.random.normal(k2, shape) * 2.0


@pytest.mark.parametrize("method,per_token", [("linear", True), ("slerp", True), ("slerp", False)])
def test_path_ends_are_the_inputs(method, per_token):
    a, b = _pair()
    path = interpolation_path(a, b, 6, method=method, per_token=per_token)
    assert path.shape == (6, 3, 5)
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    assert not np.allclose(path[2], a) and not np.allclose(path[2], b)


def test_lerp_midpoint():
    a, b = _pair()
    np.testing.assert_allclose(lerp(a, b, 0.5), (a + b) / 2, rtol=1e-6)


def test_slerp_follows_the_great_circle():
    a, b = jnp.asarray([[1.0, 0.0]]), jnp.asarray([[0.0, 3.0]])
    # 90 degrees apart: the midpoint is at 45 degrees, weights sin(pi/4) / sin(pi/2) on each end
    np.testing.assert_allclose(slerp(a, b, 0.5), [[np.sqrt(0.5), 3 * np.sqrt(0.5)]], rtol=1e-6)
    # unit vectors stay unit vectors all along
    u, v = jnp.asarray([[0.6, 0.8, 0.0]]), jnp.asarray([[0.0, 0.0, 1.0]])
    for t in np.linspace(0, 1, 7):
        assert float(jnp.linalg.norm(slerp(u, v, t))) == pytest.approx(1.0, rel=1e-5)
    # parallel rows: a lerp, no NaN
    np.testing.assert_allclose(slerp(a, 2 * a, 0.5), 1.5 * a, rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 2.0, -1.0, None])  # the same row, parallel, opposite, unrelated
def test_slerp_has_finite_gradients_even_between_parallel_rows(scale):
    # the interpolation loss differentiates through slerp, and a batch can pair a sentence with itself
    a = jnp.asarray([[0.3, -1.2, 0.8]])
    b = jnp.asarray([[1.0, 0.5, -0.2]]) if scale is None else scale * a
    ga, gb = jax.grad(lambda x, y: jnp.sum(jnp.sin(slerp(x, y, 0.4))), argnums=(0, 1))(a, b)
    assert np.isfinite(np.asarray(ga)).all() and np.isfinite(np.asarray(gb)).all()
    if scale is not None:  # a lerp there: the gradient is lerp's
        want = jax.grad(lambda x, y: jnp.sum(jnp.sin(0.6 * x + 0.4 * y)), argnums=(0, 1))(a, b)
        np.testing.assert_allclose(ga, want[0], rtol=1e-5)
        np.testing.assert_allclose(gb, want[1], rtol=1e-5)


def test_per_token_slerp_differs_from_whole_code_slerp():
    a, b = _pair(1)
    per_token = interpolate(a, b, 0.3, per_token=True)
    whole = interpolate(a, b, 0.3, per_token=False)
    for i in range(3):  # per token: each row is the slerp of its own pair
        np.testing.assert_allclose(per_token[i], slerp(a[i : i + 1], b[i : i + 1], 0.3)[0], rtol=1e-5)
    np.testing.assert_allclose(whole.reshape(1, -1), slerp(a.reshape(1, -1), b.reshape(1, -1), 0.3), rtol=1e-5)
    assert not np.allclose(per_token, whole)


def test_bad_arguments():
    a, b = _pair()
    with pytest.raises(InputError, match="steps >= 2"):
        interpolation_path(a, b, 1)
    with pytest.raises(InputError, match="shapes"):
        interpolate(a, b[:2], 0.5)
    with pytest.raises(InputError, match="'linear' or 'slerp'"):
        interpolate(a, b, 0.5, method="cubic")  # type: ignore[arg-type]

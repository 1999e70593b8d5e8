"""Activations by their Hugging Face names, against their defining formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import ACTIVATIONS, activation


def _gelu_exact(x):
    """Hendrycks & Gimpel (2016): ``x * Phi(x)`` with the Gaussian CDF written with erf."""
    return np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])


def _gelu_tanh(x):
    """The tanh approximation (GPT-2's ``gelu_new``)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x):
    return x / (1.0 + np.exp(-x))


REFERENCES = {
    "gelu": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_tanh": _gelu_tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": _silu,
    "swish": _silu,
}

X = np.linspace(-6.0, 6.0, 241)


def test_every_activation_has_a_reference_here():
    assert set(ACTIVATIONS) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_formula(name):
    out = activation(name)(jnp.asarray(X, jnp.float32))
    assert out.dtype == jnp.float32 and out.shape == X.shape
    # 1e-6 is well below the ~5e-4 gap between exact and tanh GELU, so a swap would fail
    np.testing.assert_allclose(np.asarray(out, np.float64), REFERENCES[name](X), rtol=1e-6, atol=1e-6)


def test_exact_and_tanh_gelu_differ():
    x = jnp.asarray(X, jnp.float32)
    gap = np.max(np.abs(np.asarray(activation("gelu")(x)) - np.asarray(activation("gelu_new")(x))))
    assert 1e-4 < gap < 1e-3


def test_unknown_activation_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown activation 'gleu'") as info:
        activation("gleu")
    for name in ACTIVATIONS:
        assert repr(name) in str(info.value)


SMOOTH = ("gelu", "gelu_new", "silu")
AUTODIFF = {  # the same functions left to JAX's autodiff
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": lambda x: x * jax.nn.sigmoid(x),
}


@pytest.mark.parametrize("name", SMOOTH)
def test_closed_form_slope_matches_a_central_difference(name):
    h = 1e-5
    slope = jax.grad(lambda x: jnp.sum(activation(name)(x)))(jnp.asarray(X, jnp.float32))
    numeric = (REFERENCES[name](X + h) - REFERENCES[name](X - h)) / (2 * h)  # float64
    np.testing.assert_allclose(np.asarray(slope, np.float64), numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SMOOTH)
def test_first_and_second_derivatives_equal_autodiff(name):
    x = jnp.asarray(X, jnp.float32)
    ours, theirs = activation(name), AUTODIFF[name]
    d_ours, d_theirs = ours, theirs
    for _ in range(2):  # first, then second derivative, elementwise
        d_ours, d_theirs = jax.grad(d_ours), jax.grad(d_theirs)
        np.testing.assert_allclose(jax.vmap(d_ours)(x), jax.vmap(d_theirs)(x), rtol=1e-5, atol=1e-5)
    # forward mode through the same rule
    _, tangent = jax.jvp(ours, (x,), (jnp.full_like(x, 2.0),))
    np.testing.assert_allclose(tangent, 2.0 * jax.vmap(jax.grad(theirs))(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SMOOTH)
def test_reverse_mode_keeps_one_array_for_the_backward_pass(name):
    # what jax.vjp closes over is what a training step stores per activation (per layer, in a scan)
    x = jnp.asarray(np.linspace(-3.0, 3.0, 64).reshape(8, 8), jnp.float32)

    def kept(fn):
        _, pullback = jax.vjp(fn, x)
        return sum(leaf.shape == x.shape for leaf in jax.tree_util.tree_leaves(pullback))

    assert kept(activation(name)) == 1
    if name == "gelu_new":
        assert kept(AUTODIFF[name]) > 1  # what the closed form saves


@pytest.mark.parametrize("name", SMOOTH)
def test_bfloat16_stays_bfloat16(name):
    x = jnp.asarray(X, jnp.bfloat16)
    slope = jax.grad(lambda v: jnp.sum(activation(name)(v).astype(jnp.float32)))(x)
    assert slope.dtype == jnp.bfloat16
    assert activation(name)(x).dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(activation(name)(x), np.float32), REFERENCES[name](X), atol=0.05, rtol=0.02)

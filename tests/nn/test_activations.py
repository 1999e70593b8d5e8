"""Activations by their Hugging Face names, against their defining formulas."""

import math

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

"""Plain and gated feed-forward blocks against NumPy, from their weights."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import MLP

from ._reference import linear, np64, randomize

DIM, HIDDEN = 12, 20

ACTS = {
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "gelu": np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}

CASES = [
    ("gelu_new", False, True),  # GPT-2
    ("relu", False, False),  # T5 v1.0
    ("silu", True, False),  # SwiGLU (Llama)
    ("gelu", True, False),  # GeGLU, exact erf (T5 v1.1)
    ("gelu_new", True, True),  # GeGLU, tanh (Gemma), with biases
    ("relu", False, True),
]


def _mlp_ref(mlp: MLP, x: np.ndarray, act) -> np.ndarray:
    """Vaswani et al. (2017) ``W2 act(W1 x)``; gated (Shazeer, 2020) ``W2 (act(Wg x) * (W1 x))``."""
    up = linear(x, mlp.up)
    hidden = act(up) if mlp.gate is None else act(linear(x, mlp.gate)) * up
    return linear(hidden, mlp.down)


@pytest.mark.parametrize(("act", "gated", "use_bias"), CASES)
def test_mlp_matches_reference(act, gated, use_bias):
    mlp = MLP(DIM, HIDDEN, activation=act, gated=gated, use_bias=use_bias, key=jax.random.key(0))
    assert (mlp.gate is not None) == gated
    assert (mlp.up.bias is not None) == use_bias and (mlp.down.bias is not None) == use_bias
    assert mlp.up.weight.shape == (HIDDEN, DIM) and mlp.down.weight.shape == (DIM, HIDDEN)
    mlp = randomize(mlp, jax.random.key(1), std=0.4)
    x = jax.random.normal(jax.random.key(2), (7, DIM), jnp.float32)
    out = mlp(x)
    assert out.shape == (7, DIM) and out.dtype == jnp.float32
    np.testing.assert_allclose(np64(out), _mlp_ref(mlp, np64(x), ACTS[act]), rtol=1e-5, atol=1e-5)


def test_gate_and_up_are_not_interchangeable():
    """The activation goes on the gate branch only: swapping the two weights changes the output."""
    mlp = randomize(
        MLP(DIM, HIDDEN, activation="silu", gated=True, use_bias=False, key=jax.random.key(0)),
        jax.random.key(1),
    )
    swapped = eqx.tree_at(lambda m: (m.up, m.gate), mlp, (mlp.gate, mlp.up))
    x = jax.random.normal(jax.random.key(2), (7, DIM), jnp.float32)
    assert np.max(np.abs(np.asarray(mlp(x)) - np.asarray(swapped(x)))) > 1e-3


def test_unknown_activation_fails_at_construction():
    with pytest.raises(ValueError, match="unknown activation 'gelu2'"):
        MLP(DIM, HIDDEN, activation="gelu2", gated=False, use_bias=True, key=jax.random.key(0))


@pytest.mark.parametrize(("act", "gated", "use_bias"), CASES[:3])
def test_one_position_the_decoding_path_matches_the_reference_and_its_gradient(act, gated, use_bias):
    # one position takes the decoding path: the hidden vector goes through an identity gather
    mlp = MLP(DIM, HIDDEN, activation=act, gated=gated, use_bias=use_bias, key=jax.random.key(0))
    mlp = randomize(mlp, jax.random.key(1), std=0.4)
    rows = jax.random.normal(jax.random.key(2), (4, DIM), jnp.float32)
    one = eqx.filter_jit(lambda m, v: m(v))(mlp, rows[:1])
    np.testing.assert_allclose(np64(one), _mlp_ref(mlp, np64(rows[:1]), ACTS[act]), rtol=1e-5, atol=1e-5)
    # an identity for gradients too: the one-position gradient equals that row's gradient inside a
    # longer sequence (which does not take the path)
    grad = jax.grad(lambda v: jnp.sum(mlp(v) ** 2))
    np.testing.assert_allclose(grad(rows[:1])[0], grad(rows)[0], rtol=1e-5, atol=1e-6)

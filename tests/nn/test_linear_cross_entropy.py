"""The fused head + cross-entropy equals the unfused one in value and gradient, and never holds the
whole logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.nn.linear_cross_entropy import linear_cross_entropy

B, S, D, V = 4, 24, 16, 50


@pytest.fixture(scope="module")
def inputs():
    k = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(k[0], (B, S, D))
    weight = jax.random.normal(k[1], (V, D))
    targets = jax.random.randint(k[2], (B, S), 0, V)
    mask = jax.random.bernoulli(k[3], 0.7, (B, S))
    return hidden, weight, targets.at[0, 0].set(-100), mask.at[0, 0].set(False)  # a padding target, masked


def _unfused(hidden, weight, targets, mask, softcap):
    logits = hidden @ weight.T
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    return cross_entropy(logits, targets, mask)[0]


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("chunk_tokens", [8, 30, 4096])  # one position per example, uneven, one chunk
def test_value_and_gradients_equal_the_unfused_loss(inputs, softcap, chunk_tokens):
    hidden, weight, targets, mask = inputs
    ref_loss, ref_grads = jax.value_and_grad(_unfused, argnums=(0, 1))(hidden, weight, targets, mask, softcap)

    def fused(h, w):
        return linear_cross_entropy(h, w, targets, mask, softcap=softcap, chunk_tokens=chunk_tokens)[0]

    loss, grads = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(hidden, weight)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    total, count = linear_cross_entropy(hidden, weight, targets, mask, softcap=softcap, chunk_tokens=chunk_tokens)
    np.testing.assert_allclose(total, ref_loss, rtol=1e-6)  # the primal path (no gradient) too
    assert float(count) == float(mask.sum())


def test_a_frozen_weight_gets_no_gradient_work(inputs):
    """Differentiating the hidden states alone (a frozen head) gives the same hidden gradient."""
    hidden, weight, targets, mask = inputs
    got = jax.grad(lambda h: linear_cross_entropy(h, weight, targets, mask)[0])(hidden)
    want = jax.grad(lambda h: _unfused(h, weight, targets, mask, None))(hidden)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_bfloat16_hidden_states_keep_their_dtype_and_a_float32_loss(inputs):
    hidden, weight, targets, mask = inputs
    h16 = hidden.astype(jnp.bfloat16)
    loss, grad = jax.value_and_grad(lambda h: linear_cross_entropy(h, weight, targets, mask)[0])(h16)
    ref = _unfused(h16, weight.astype(jnp.bfloat16), targets, mask, None)
    assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(loss, ref, rtol=1e-2)


def test_the_whole_logits_are_never_live():
    """Compiled value-and-gradient: the fused version's scratch memory stays well under the one
    ``[batch, seq, vocab]`` float32 logits array that the unfused version materialises."""
    b, s, d, v = 8, 256, 32, 2048
    hidden = jnp.zeros((b, s, d))
    weight = jnp.zeros((v, d))
    targets = jnp.zeros((b, s), jnp.int32)
    logits_bytes = b * s * v * 4

    def scratch(fn):
        compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(hidden, weight).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    unfused = scratch(lambda h, w: cross_entropy(h @ w.T, targets)[0])
    fused = scratch(lambda h, w: linear_cross_entropy(h, w, targets, chunk_tokens=256)[0])
    assert unfused >= logits_bytes
    assert fused < logits_bytes / 2  # a few chunk-sized [256, vocab] buffers

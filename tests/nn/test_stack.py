"""``Stack``: stacked parameters, scan equal to a Python loop, remat policies that change memory but
not results, and a program size independent of depth."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import MLP, LayerNorm, Linear, Stack

DIM = 8


class Block(eqx.Module):
    """A pre-norm residual MLP block: enough structure (norm, matmuls, nonlinearity) to exercise remat."""

    norm: LayerNorm
    mlp: MLP
    proj: Linear

    def __init__(self, *, key):
        k1, k2 = jax.random.split(key)
        self.norm = LayerNorm(DIM)
        self.mlp = MLP(DIM, 16, activation="gelu_new", gated=False, use_bias=True, init_std=0.3, key=k1)
        self.proj = Linear(DIM, DIM, use_bias=False, init_std=0.3, key=k2)

    def __call__(self, x):
        return x + self.proj(jnp.tanh(self.mlp(self.norm(x))))


def _body(block, x, scale):
    y = block(x) * (1.0 if scale is None else scale)
    return y, jnp.sum(y)


@functools.cache  # modules are immutable: build each stack once for the whole file
def _stack(n=4, remat="none"):
    return Stack(lambda k: Block(key=k), n, key=jax.random.key(0), remat=remat)


def _x():
    return jax.random.normal(jax.random.key(1), (5, DIM), jnp.float32)


def test_leaves_gain_a_layers_axis():
    stack = _stack(4)
    single = Block(key=jax.random.key(0))
    stacked_leaves = jax.tree.leaves(eqx.filter(stack.blocks, eqx.is_array))
    single_leaves = jax.tree.leaves(eqx.filter(single, eqx.is_array))
    assert len(stacked_leaves) == len(single_leaves) > 0
    for s, b in zip(stacked_leaves, single_leaves, strict=True):
        assert s.shape == (4, *b.shape) and s.dtype == b.dtype
    # each layer was built from its own key
    w = np.asarray(stack.blocks.proj.weight)
    assert not np.allclose(w[0], w[1])


def _layer(stack: Stack, i: int):
    dynamic, static = eqx.partition(stack.blocks, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda a: a[i], dynamic), static)


def test_scan_equals_python_loop():
    stack = _stack(4)
    scales = jnp.array([1.0, 0.5, 2.0, -1.0])
    x = _x()
    out, sums = stack(_body, x, scales)
    expected, expected_sums = x, []
    for i in range(4):
        expected = _layer(stack, i)(expected) * scales[i]
        expected_sums.append(jnp.sum(expected))
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sums), np.asarray(expected_sums), rtol=1e-5, atol=1e-5)


def test_scan_without_per_layer_inputs():
    stack = _stack(3)
    out, sums = stack(_body, _x())
    assert sums.shape == (3,)
    expected = _x()
    for i in range(3):
        expected = _layer(stack, i)(expected)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-6, atol=1e-6)


def _loss(stack, x):
    out, _ = stack(_body, x, None)
    return jnp.sum(out**2)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_changes_nothing_but_memory(remat):
    plain = _stack(3)
    rematted = plain.with_remat(remat)
    assert rematted.remat == remat and plain.remat == "none"
    built = Stack(lambda k: Block(key=k), 3, key=jax.random.key(0), remat=remat)
    assert built.remat == remat
    assert eqx.tree_equal(eqx.filter(built, eqx.is_array), eqx.filter(rematted, eqx.is_array))
    x = _x()
    np.testing.assert_array_equal(np.asarray(rematted(_body, x)[0]), np.asarray(plain(_body, x)[0]))
    g_plain = eqx.filter_grad(_loss)(plain, x)
    g_remat = eqx.filter_grad(_loss)(rematted, x)
    # the gradients agree to rounding: XLA may fuse the recomputed forward pass differently from the
    # stored one (seen on an AMD EPYC CPU: 1 ulp in float32), so exact equality is not promised
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # the policy really is in the program (a no-op remat would pass the equalities above)
    grad_jaxpr = str(jax.make_jaxpr(lambda s: eqx.filter_grad(_loss)(s, x))(rematted))
    assert "checkpoint" in grad_jaxpr or "remat" in grad_jaxpr
    assert "checkpoint" not in str(jax.make_jaxpr(lambda s: eqx.filter_grad(_loss)(s, x))(plain))


def test_unknown_remat_policy():
    with pytest.raises(ValueError, match=r"unknown remat policy 'some'; expected one of \['dots', 'full', 'none'\]"):
        _stack(2, remat="some")
    with pytest.raises(ValueError, match="unknown remat policy 'Full'"):
        _stack(3).with_remat("Full")


def _count_equations(jaxpr) -> int:
    """Equations of a jaxpr and every sub-jaxpr (scan bodies, pjit, custom rules)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += _count_equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += _count_equations(sub)
    return total


@pytest.mark.parametrize("remat", ["none", "dots"])
def test_program_size_does_not_grow_with_depth(remat):
    x = _x()

    def size(n):
        stack = _stack(n).with_remat(remat)
        return _count_equations(jax.make_jaxpr(lambda s: eqx.filter_grad(_loss)(s, x))(stack).jaxpr)

    two, eight = size(2), size(8)
    assert two == eight > 0

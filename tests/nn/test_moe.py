"""The mixture-of-experts layer: against arithmetic, grouped against dense dispatch (values and
gradients), against transformers' Mixtral and Qwen3-MoE blocks and auxiliary loss, stacked and scanned."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import ConfigError
from eqxllm.nn import MoE, Stack, load_balancing_loss

from ._reference import randomize

DIM, HIDDEN, EXPERTS = 16, 24, 8


def _moe(top_k: int, dispatch: str, seed: int = 0, num_experts: int = EXPERTS, **kw) -> MoE:
    moe = MoE(DIM, HIDDEN, num_experts=num_experts, top_k=top_k, dispatch=dispatch, key=jax.random.key(seed), **kw)
    return randomize(moe, jax.random.key(seed + 100), std=0.3)


def _with_dispatch(moe: MoE, dispatch: str) -> MoE:
    """The same weights under another dispatch (a static field, so rebuilt and refilled)."""
    num_experts, dim, hidden = moe.gate.shape
    other = MoE(
        dim,
        hidden,
        num_experts=num_experts,
        top_k=moe.top_k,
        normalize_top_k=moe.normalize_top_k,
        dispatch=dispatch,  # type: ignore[arg-type]
        key=jax.random.key(0),
    )
    arrays = lambda m: (m.router.weight, m.gate, m.up, m.down)  # noqa: E731
    return eqx.tree_at(arrays, other, arrays(moe))


def _loss(moe_and_x):
    moe, x = moe_and_x
    y, logits = jax.vmap(moe)(x)
    return jnp.sum(jnp.sin(y)) + 0.1 * jnp.sum(logits**2)


# gradients with respect to every weight and the input, compiled once per module structure
_value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss))
_apply = eqx.filter_jit(lambda moe, x: moe(x))
_apply_vmap = eqx.filter_jit(lambda moe, x: jax.vmap(moe)(x))
_route = eqx.filter_jit(lambda moe, x: moe.route(x))


def _close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("top_k", [1, 2, EXPERTS])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_equals_dense_values_and_gradients(top_k, seed):
    grouped = _moe(top_k, "grouped", seed)
    dense = _with_dispatch(grouped, "dense")
    x = jax.random.normal(jax.random.key(seed + 7), (3, 11, DIM))
    (value_g, (grad_g, x_grad_g)), (value_d, (grad_d, x_grad_d)) = (
        _value_and_grad((grouped, x)),
        _value_and_grad((dense, x)),
    )
    _close(value_g, value_d)
    _close(grad_g, grad_d)
    _close(x_grad_g, x_grad_d)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in (grad_g.gate, grad_g.up, grad_g.down, grad_g.router.weight))


def test_grouped_equals_dense_when_every_token_picks_the_same_experts():
    """A zero router gives equal probabilities; ``lax.top_k`` then picks the lowest expert indices, so
    every token lands in experts 0 and 1: the most unbalanced groups, with several blocks each."""
    grouped = eqx.tree_at(lambda m: m.router.weight, _moe(2, "grouped"), jnp.zeros((EXPERTS, DIM)))
    x = jax.random.normal(jax.random.key(3), (2, 40, DIM))
    experts, weights, _ = _route(grouped, x)
    assert np.array_equal(np.asarray(experts), np.broadcast_to([0, 1], (2, 40, 2)))
    np.testing.assert_allclose(np.asarray(weights), 0.5)
    _close(_value_and_grad((grouped, x)), _value_and_grad((_with_dispatch(grouped, "dense"), x)))


def test_leading_axes_equal_vmap():
    moe = _moe(2, "grouped")
    x = jax.random.normal(jax.random.key(4), (3, 9, DIM))
    y, logits = _apply(moe, x)
    y_v, logits_v = _apply_vmap(moe, x)
    assert y.shape == x.shape and logits.shape == (3, 9, EXPERTS) and logits.dtype == jnp.float32
    _close((y, logits), (y_v, logits_v))


def test_bfloat16_activations():
    moe = _moe(2, "grouped")
    x = jax.random.normal(jax.random.key(5), (6, DIM)).astype(jnp.bfloat16)
    y, logits = _apply(moe, x)
    assert y.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    y_d, _ = _apply(_with_dispatch(moe, "dense"), x)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_d, np.float32), atol=2e-2)


@pytest.mark.parametrize("normalize", [True, False])
def test_two_experts_top_one_by_hand(normalize):
    """Router = identity, so token ``[a, b]`` picks expert 0 iff ``a > b`` with probability
    ``sigmoid(|a - b|)``; expert e has one hidden unit: ``gate = g_e . x``, ``up = u_e . x``, and
    ``down`` writes ``silu(gate) * up`` onto ``d_e``."""
    moe = MoE(2, 1, num_experts=2, top_k=1, normalize_top_k=normalize, key=jax.random.key(0))
    g, u, d = (
        np.array([[1.0, 0.5], [-1.0, 2.0]]),
        np.array([[1.0, 1.0], [0.5, -1.0]]),
        np.array([[1.0, 0.0], [2.0, 3.0]]),
    )
    moe = eqx.tree_at(
        lambda m: (m.router.weight, m.gate, m.up, m.down),
        moe,
        (jnp.eye(2), jnp.asarray(g)[:, :, None], jnp.asarray(u)[:, :, None], jnp.asarray(d)[:, None, :]),
    )
    x = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 1.5]])
    y, logits = _apply(moe, jnp.asarray(x, jnp.float32))
    expected = []
    for a, b in x:
        e = 0 if a > b else 1
        weight = 1.0 if normalize else 1.0 / (1.0 + math.exp(-abs(a - b)))
        gate, up = g[e] @ [a, b], u[e] @ [a, b]
        expected.append(weight * gate / (1.0 + math.exp(-gate)) * up * d[e])
    np.testing.assert_allclose(np.asarray(logits), x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y), np.array(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(_apply(_with_dispatch(moe, "dense"), jnp.asarray(x, jnp.float32))[0]), y, rtol=1e-6
    )


def _copy_into_torch(block, moe: MoE):
    torch = pytest.importorskip("torch")
    gate_up = np.concatenate([np.asarray(moe.gate), np.asarray(moe.up)], axis=2).transpose(0, 2, 1)
    with torch.no_grad():
        block.gate.weight.copy_(torch.from_numpy(np.array(moe.router.weight)))
        block.experts.gate_up_proj.copy_(torch.from_numpy(np.array(gate_up)))
        block.experts.down_proj.copy_(torch.from_numpy(np.array(np.asarray(moe.down).transpose(0, 2, 1))))


def _parity(block, moe: MoE):
    torch = pytest.importorskip("torch")
    _copy_into_torch(block, moe)
    x = np.array(jax.random.normal(jax.random.key(9), (2, 13, DIM)))
    with torch.no_grad():
        expected = block(torch.from_numpy(x)).numpy()
        _, _, chosen = block.gate(torch.from_numpy(x.reshape(-1, DIM)))
    experts, _, _ = _route(moe, jnp.asarray(x))
    assert np.array_equal(np.asarray(experts).reshape(-1, moe.top_k), chosen.numpy())
    y, _ = _apply_vmap(moe, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dispatch", ["grouped", "dense"])
def test_matches_transformers_mixtral_block(dispatch):
    pytest.importorskip("torch")
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    from transformers import MixtralConfig

    cfg = MixtralConfig(hidden_size=DIM, intermediate_size=HIDDEN, num_local_experts=EXPERTS, num_experts_per_tok=2)
    cfg.router_jitter_noise = 0.0
    _parity(mixtral.MixtralSparseMoeBlock(cfg).eval(), _moe(2, dispatch))


def test_matches_transformers_qwen3_moe_block_without_renormalisation():
    pytest.importorskip("torch")
    qwen = pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe")
    from transformers import Qwen3MoeConfig

    cfg = Qwen3MoeConfig(
        hidden_size=DIM, moe_intermediate_size=HIDDEN, num_experts=EXPERTS, num_experts_per_tok=3, norm_topk_prob=False
    )
    _parity(qwen.Qwen3MoeSparseMoeBlock(cfg).eval(), _moe(3, "grouped", normalize_top_k=False))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("top_k", [1, 2])
def test_load_balancing_loss_matches_transformers(masked, top_k):
    torch = pytest.importorskip("torch")
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    batch, layers, seq = 3, 4, 7
    logits = np.asarray(jax.random.normal(jax.random.key(11), (batch, layers, seq, EXPERTS)))
    mask = np.asarray(jax.random.bernoulli(jax.random.key(12), 0.7, (batch, seq))) if masked else None
    expected = mixtral.load_balancing_loss_func(
        tuple(torch.from_numpy(np.ascontiguousarray(logits[:, i].reshape(-1, EXPERTS))) for i in range(layers)),
        EXPERTS,
        top_k,
        None if mask is None else torch.from_numpy(mask.astype(np.int64)),
    )
    got = load_balancing_loss(jnp.asarray(logits), top_k, None if mask is None else jnp.asarray(mask)[:, None, :])
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)


def test_load_balancing_loss_of_perfect_balance_is_top_k():
    """Uniform probabilities and assignments spread evenly: ``E * sum_e (k / E) (1 / E) = k``."""
    logits = jnp.log(jnp.full((4, 4), 0.25)).at[jnp.arange(4), jnp.arange(4)].add(1e-3)
    np.testing.assert_allclose(float(load_balancing_loss(logits, 1)), 1.0, rtol=1e-3)


@pytest.mark.parametrize(
    ("num_experts", "top_k", "match"),
    [(0, 1, "num_experts must be at least 1"), (4, 0, "top_k must be between 1 and"), (4, 5, "num_experts=4, got 5")],
)
def test_bad_configurations(num_experts, top_k, match):
    with pytest.raises(ConfigError, match=match):
        MoE(DIM, HIDDEN, num_experts=num_experts, top_k=top_k, key=jax.random.key(0))


def test_bad_dispatch_and_activation():
    # the type checker of the test run or the constructor's own check, whichever comes first
    with pytest.raises((ConfigError, TypeError), match="sparse"):
        MoE(DIM, HIDDEN, num_experts=4, top_k=2, dispatch="sparse", key=jax.random.key(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown activation"):
        MoE(DIM, HIDDEN, num_experts=4, top_k=2, activation="swiglu", key=jax.random.key(0))


def test_stacked_blocks_in_a_scan():
    """Blocks built with ``eqx.filter_vmap`` (a leading ``layers`` axis on every leaf) and run by
    ``jax.lax.scan`` equal the same blocks applied one by one, in value and gradient."""
    layers = 3
    stack = Stack(
        lambda k: MoE(DIM, HIDDEN, num_experts=4, top_k=2, init_std=0.1, key=k), layers, key=jax.random.key(0)
    )
    assert stack.blocks.gate.shape == (layers, 4, DIM, HIDDEN) and stack.blocks.router.weight.shape == (layers, 4, DIM)

    def scanned(stack, x):
        def body(block, h, _):
            y, logits = block(h)
            return h + y, logits

        h, logits = stack(body, x)
        return jnp.sum(h**2) + load_balancing_loss(logits, 2), logits

    def looped(stack, x):
        h, all_logits = x, []
        for i in range(layers):
            block = jax.tree.map(lambda a, i=i: a[i] if eqx.is_array(a) else a, stack.blocks)
            y, logits = block(h)
            h, all_logits = h + y, [*all_logits, logits]
        return jnp.sum(h**2) + load_balancing_loss(jnp.stack(all_logits), 2), jnp.stack(all_logits)

    x = jax.random.normal(jax.random.key(1), (10, DIM))
    (value_s, logits_s), grad_s = eqx.filter_jit(eqx.filter_value_and_grad(scanned, has_aux=True))(stack, x)
    (value_l, logits_l), grad_l = eqx.filter_jit(eqx.filter_value_and_grad(looped, has_aux=True))(stack, x)
    assert logits_s.shape == (layers, 10, 4)
    _close((value_s, logits_s), (value_l, logits_l))
    _close(grad_s, grad_l)


def test_vmap_over_experts_weights_too():
    """Mapping over the modules themselves (a different MoE per example) takes the plain per-example
    map: equal to applying each module alone, in value and gradient."""
    make = lambda k: randomize(MoE(DIM, HIDDEN, num_experts=EXPERTS, top_k=2, key=k), k, std=0.3)  # noqa: E731
    blocks = eqx.filter_vmap(make)(jax.random.split(jax.random.key(0), 2))
    x = jax.random.normal(jax.random.key(6), (2, 9, DIM))

    def mapped(blocks, x):
        return jnp.sum(jnp.sin(eqx.filter_vmap(lambda m, x: m(x)[0])(blocks, x)))

    def one_by_one(blocks, x):
        parts = [jax.tree.map(lambda a, i=i: a[i] if eqx.is_array(a) else a, blocks)(x[i])[0] for i in range(2)]
        return jnp.sum(jnp.sin(jnp.stack(parts)))

    _close(
        eqx.filter_jit(eqx.filter_value_and_grad(mapped))(blocks, x),
        eqx.filter_jit(eqx.filter_value_and_grad(one_by_one))(blocks, x),
    )

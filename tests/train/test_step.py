"""The compiled train step: learning, no recompilation, donation, accumulation, mixed precision, eval."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eqxllm.errors import ConfigError
from eqxllm.train import (
    cross_entropy,
    init_opt_state,
    learning_rate_schedule,
    make_eval_step,
    make_optimizer,
    make_train_step,
    next_token_loss,
)
from eqxllm.train.loss import completion_loss

from ._common import OPTIM, copy_tree, fixed_batch, params_numpy, tiny_model


def test_training_reduces_loss_compiles_once_and_donates():
    model = tiny_model()
    cfg = dataclasses.replace(OPTIM, learning_rate=1e-2)
    optimizer = make_optimizer(cfg, model)
    opt_state = init_opt_state(optimizer, model)
    # assert_max_traces inside the jit: a second trace (a recompilation) raises
    step = make_train_step(next_token_loss, optimizer, max_traces=1)
    batch = jnp.asarray(fixed_batch())
    losses = []
    first_model, first_state = model, opt_state
    for i in range(6):
        model, opt_state, metrics = step(model, opt_state, batch, jax.random.key(i))
        assert all(isinstance(v, jax.Array) for v in metrics.values())  # no host values in the loop
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.3, losses
    np.testing.assert_allclose(float(metrics["learning_rate"]), float(learning_rate_schedule(cfg)(5)), rtol=1e-6)
    assert float(metrics["tokens"]) == batch.shape[0] * (batch.shape[1] - 1)
    assert float(metrics["grad_norm"]) > 0
    # model and optimizer state were donated (their buffers reused); the batch was not, and was fed again
    assert first_model.wte.weight.is_deleted() and jax.tree.leaves(first_state)[1].is_deleted()
    assert not batch.is_deleted()
    # the guard is armed: a new batch shape would compile again
    with pytest.raises(RuntimeError, match="traced"):
        step(model, opt_state, batch[:, :9], jax.random.key(9))


EVAL_STEP = make_eval_step(next_token_loss)  # shared, so its compilations are too


def _masked_loss(model, batch, key):
    """A next-token loss over a ``{"ids", "mask"}`` batch whose rows hold different token counts."""
    logits = jax.vmap(lambda ids: model(ids))(batch["ids"][:, :-1])
    total, count = cross_entropy(logits, batch["ids"][:, 1:], batch["mask"][:, 1:])
    return total / count, {"loss": total / count, "tokens": count}


def test_accumulation_equals_one_big_batch():
    ids = fixed_batch(batch=8)
    # rows 0, 2, 4, 6 form one micro-batch and rows 1, 3, 5, 7 the other: give them unequal token
    # counts, so averaging micro-batch means without token weights would be wrong
    lengths = np.array([17, 3, 17, 5, 12, 4, 17, 9])
    mask = np.arange(17)[None, :] < lengths[:, None]
    batch = {"ids": jnp.asarray(ids), "mask": jnp.asarray(mask)}
    model = tiny_model()
    # plain SGD with rate 1: the parameter change is the gradient itself, compared without Adam's
    # amplification of rounding in near-zero gradients
    optimizer = optax.sgd(1.0)
    results = {}
    for accum in (1, 2):
        step = make_train_step(_masked_loss, optimizer, accum_steps=accum)
        start = copy_tree(model)
        new_model, _, metrics = step(start, init_opt_state(optimizer, start), batch, None)
        results[accum] = (params_numpy(new_model), metrics)
    (p1, m1), (p2, m2) = results[1], results[2]
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
    assert float(m1["tokens"]) == float(m2["tokens"]) == (lengths - 1).sum()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(p1, params_numpy(model), strict=True))
    assert moved > 1e-3
    for a, b in zip(p1, p2, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


def test_a_batch_with_no_scored_token_is_a_zero_update_with_or_without_accumulation():
    tokens = jnp.asarray(fixed_batch(batch=4))
    batch = {"tokens": tokens, "loss_mask": jnp.zeros(tokens.shape, jnp.int32)}  # all prompt
    model, optimizer = tiny_model(), optax.sgd(1.0)
    for accum in (1, 2):
        step = make_train_step(completion_loss, optimizer, accum_steps=accum)
        new, _, metrics = step(copy_tree(model), init_opt_state(optimizer, model), batch, None)
        assert (float(metrics["loss"]), float(metrics["grad_norm"]), float(metrics["tokens"])) == (0.0, 0.0, 0.0)
        for a, b in zip(params_numpy(new), params_numpy(model), strict=True):
            np.testing.assert_array_equal(a, b)  # not NaN: accumulation divided by a zero weight


def test_batch_must_split_into_micro_batches():
    model = tiny_model()
    optimizer = optax.sgd(0.1)
    step = make_train_step(next_token_loss, optimizer, accum_steps=4)
    with pytest.raises(ConfigError, match=r"batch size 6 is not divisible by accum_steps=4"):
        step(model, init_opt_state(optimizer, model), jnp.asarray(fixed_batch(batch=6)), None)
    with pytest.raises(ConfigError, match="accum_steps must be >= 1, got 0"):
        make_train_step(next_token_loss, optimizer, accum_steps=0)


def test_bfloat16_compute_keeps_float32_master_weights():
    model = tiny_model()
    batch = jnp.asarray(fixed_batch())
    total, tokens = EVAL_STEP(model, batch)
    f32_loss = total / tokens
    optimizer = make_optimizer(OPTIM, model)
    step = make_train_step(next_token_loss, optimizer, compute_dtype=jnp.bfloat16)
    before = params_numpy(model)
    new_model, opt_state, metrics = step(copy_tree(model), init_opt_state(optimizer, model), batch, None)
    leaves = jax.tree.leaves(eqx.filter(new_model, eqx.is_inexact_array))
    assert all(x.dtype == jnp.float32 for x in leaves)
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(opt_state))
    assert metrics["loss"].dtype == jnp.float32
    diff = abs(float(metrics["loss"]) - float(f32_loss))
    assert 0 < diff < 0.02 * float(f32_loss)  # computed in bfloat16, and close to the float32 loss
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(params_numpy(new_model), before, strict=True))


def test_eval_step_sums_losses_and_tokens():
    model = tiny_model()
    batch = jnp.asarray(fixed_batch())
    total, tokens = EVAL_STEP(model, batch)
    first, n_first = EVAL_STEP(model, batch[:4])
    second, n_second = EVAL_STEP(model, batch[4:])
    mean, _ = eqx.filter_jit(next_token_loss)(model, batch, None)
    assert float(tokens) == 8 * 16 and float(n_first + n_second) == float(tokens)
    np.testing.assert_allclose(float(total), float(mean) * 128, rtol=1e-5)
    np.testing.assert_allclose(float(first + second), float(total), rtol=1e-5)

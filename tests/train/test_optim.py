"""The optimizer: config checks, the schedule, and which leaves get weight decay."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import ConfigError
from eqxllm.train import (
    OptimConfig,
    current_learning_rate,
    decay_mask,
    init_opt_state,
    learning_rate_schedule,
    make_optimizer,
)

from ._common import tiny_model


def _decaying(model) -> dict[str, bool]:
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(model))[0]
    return {jax.tree_util.keystr(path): bool(flag) for path, flag in flat}


def test_gpt2_decay_mask_lists_only_linear_weights():
    flags = _decaying(tiny_model())
    # the mask covers exactly the optimized leaves
    params = eqx.filter(tiny_model(), eqx.is_inexact_array)
    assert len(flags) == len(jax.tree.leaves(params))
    decayed = sorted(path for path, flag in flags.items() if flag)
    assert decayed == [
        ".blocks.blocks.attn.k_proj.weight",
        ".blocks.blocks.attn.o_proj.weight",
        ".blocks.blocks.attn.q_proj.weight",
        ".blocks.blocks.attn.v_proj.weight",
        ".blocks.blocks.mlp.down.weight",
        ".blocks.blocks.mlp.up.weight",
    ]
    # stacked norm scales are 2-D, yet do not decay; nor do embeddings and position tables
    for path in (".blocks.blocks.ln_1.weight", ".wte.weight", ".wpe.weight", ".ln_f.weight"):
        assert flags[path] is False


def test_untied_head_and_swiglu_gate_decay():
    decayed = {p for p, f in _decaying(tiny_model(tie_word_embeddings=False, mlp="swiglu")).items() if f}
    assert ".lm_head.weight" in decayed and ".blocks.blocks.mlp.gate.weight" in decayed
    assert ".wte.weight" not in decayed


def test_mixture_of_experts_matrices_decay():
    from eqxllm.models import Llama, config_preset

    mixtral = Llama(config_preset("mixtral-tiny"), key=jax.random.key(0))
    flags = _decaying(mixtral)
    for name in ("gate", "up", "down", "router.weight"):
        assert flags[f".blocks.blocks.mlp.{name}"] is True, name
    assert not any(flag for path, flag in flags.items() if "norm" in path or "embed" in path)


def test_weight_decay_reaches_only_masked_leaves():
    # zero gradients: Adam's step is zero, so any change is weight decay alone
    cfg = OptimConfig(learning_rate=0.1, warmup_steps=0, total_steps=10, weight_decay=0.5, grad_clip_norm=None)
    model = tiny_model()
    opt = make_optimizer(cfg, model)
    params = eqx.filter(model, eqx.is_inexact_array)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, init_opt_state(opt, model), params)
    for (path, update), param, flag in zip(
        jax.tree_util.tree_flatten_with_path(updates)[0],
        jax.tree.leaves(params),
        jax.tree.leaves(decay_mask(model)),
        strict=True,
    ):
        expected = -0.1 * 0.5 * np.asarray(param) if flag else np.zeros(param.shape)
        np.testing.assert_allclose(
            np.asarray(update), expected, rtol=1e-6, atol=1e-9, err_msg=jax.tree_util.keystr(path)
        )


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(float(lr(60)), 1e-4 + 0.5 * (1e-3 - 1e-4), rtol=1e-5)  # cosine midpoint
    np.testing.assert_allclose([float(lr(110)), float(lr(500))], [1e-4, 1e-4], rtol=1e-5)


def test_optimizer_state_records_the_learning_rate():
    cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, total_steps=110)
    model = tiny_model()
    opt = make_optimizer(cfg, model)
    params = eqx.filter(model, eqx.is_inexact_array)
    state = init_opt_state(opt, model)
    for _ in range(3):
        _, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
    # the third update (step index 2) used lr(2) = 2e-4
    np.testing.assert_allclose(float(current_learning_rate(state)), 2e-4, rtol=1e-6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"learning_rate": 0.0}, r"learning_rate must be > 0, got 0.0"),
        ({"warmup_steps": 100, "total_steps": 100}, r"total_steps must be > warmup_steps=100, got 100"),
        ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be in \[0, 1\], got 1.5"),
        ({"b2": 1.0}, r"b2 must be in \[0, 1\), got 1.0"),
        ({"weight_decay": -0.1}, r"weight_decay must be >= 0"),
        ({"grad_clip_norm": 0.0}, r"grad_clip_norm must be > 0 or None"),
    ],
)
def test_bad_optim_config_is_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        OptimConfig(**changes)

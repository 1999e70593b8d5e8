"""YaRN rotary scaling (Peng et al., 2023): the inverse frequencies and the attention factor against
transformers' ``ROPE_INIT_FUNCTIONS["yarn"]`` for each option, the config.json round trip
(only yarn's keys, no transformers warning), and the errors for bad values. Logit parity of a yarn
model, both directions, is in ``test_llama_parity.py``."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.checkpoints.llama import config_from_hf, config_to_hf
from eqxllm.errors import ConfigError
from eqxllm.models import LlamaConfig
from eqxllm.nn.positions import RopeScaling, rotary_angles

HEAD_DIM = 128
THETA = 1e6
# Qwen2.5/Qwen3's long-context setting, then each option of transformers' _compute_yarn_parameters
_QWEN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768)
PARAMS = {
    "defaults": _QWEN,
    "betas": dict(_QWEN, beta_fast=16.0, beta_slow=2),
    "equal-betas": dict(_QWEN, beta_fast=4.0, beta_slow=4.0),
    "betas-none-or-0": dict(_QWEN, beta_fast=None, beta_slow=0),  # transformers: `or 32` / `or 1`
    "mscale-ratio": dict(_QWEN, factor=40.0, mscale=1.0, mscale_all_dim=0.707),
    "mscale-alone": dict(_QWEN, mscale=0.707),  # ignored without mscale_all_dim
    "attention-factor": dict(_QWEN, attention_factor=1.25, mscale=1.0, mscale_all_dim=0.5),
    "no-truncate": dict(_QWEN, truncate=False),
    "factor-1": dict(_QWEN, factor=1.0),
    "factor-from-lengths": dict(_QWEN, factor=None),  # max_position_embeddings / original
    "original-from-max": dict(rope_type="yarn", factor=2.0),  # original = max_position_embeddings
}


def _hf_config(params: dict, **changes):
    transformers = pytest.importorskip("transformers")
    kwargs = dict(hidden_size=256, num_attention_heads=2, head_dim=HEAD_DIM, max_position_embeddings=131072)
    return transformers.LlamaConfig(**{**kwargs, **changes}, rope_parameters={**params, "rope_theta": THETA})


def _ours(params: dict, **changes) -> tuple[np.ndarray, float]:
    cfg = config_from_hf(_hf_config(params, **changes).to_dict())
    s = cfg.rope_scaling
    assert isinstance(s, RopeScaling) and s.rope_type == "yarn"
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, HEAD_DIM, 2, dtype=jnp.float32) / HEAD_DIM))
    return np.asarray(s.scale(inv, cfg.rope_theta)), s.attention_scale


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_frequencies_and_attention_factor_equal_transformers(name):
    pytest.importorskip("torch")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inv_ref, factor_ref = ROPE_INIT_FUNCTIONS["yarn"](_hf_config(PARAMS[name]))
    inv, factor = _ours(PARAMS[name])
    np.testing.assert_allclose(inv, inv_ref.numpy(), rtol=1e-6)
    assert factor == pytest.approx(factor_ref, rel=1e-12)


def test_options_change_the_result():
    """The cases above are not one case: each option moves the frequencies or the factor."""
    inv, factor = _ours(PARAMS["defaults"])
    plain = 1.0 / (THETA ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM))
    assert np.allclose(inv[:8], plain[:8], rtol=1e-6) and np.allclose(inv[-8:], plain[-8:] / 4, rtol=1e-6)
    assert factor == pytest.approx(0.1 * np.log(4.0) + 1)
    for name in ("betas", "equal-betas", "no-truncate"):
        assert np.abs(_ours(PARAMS[name])[0] / inv - 1).max() > 1e-3, name
    for name in ("mscale-ratio", "attention-factor", "factor-1"):
        assert abs(_ours(PARAMS[name])[1] - factor) > 1e-3, name


def test_attention_factor_scales_cos_and_sin():
    s = RopeScaling(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, attention_factor=1.5)
    cos, sin = rotary_angles(jnp.arange(40), 16, base=100.0, scaling=s)
    np.testing.assert_allclose(np.asarray(cos**2 + sin**2), 1.5**2, rtol=1e-6)
    # jit-friendly: the table is a function of traced positions
    jitted = jax.jit(lambda p: rotary_angles(p, 16, base=100.0, scaling=s))(jnp.arange(40))
    np.testing.assert_allclose(np.asarray(jitted[0]), np.asarray(cos), rtol=1e-6)


def test_round_trip_keeps_only_yarn_keys_and_transformers_reads_them_silently():
    transformers = pytest.importorskip("transformers")
    cfg = LlamaConfig(
        model_type="qwen2", hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=128,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32, beta_fast=16,
                          mscale=1.0, mscale_all_dim=0.5, attention_factor=1, truncate=False),
    )  # fmt: skip
    hf = json.loads(json.dumps(config_to_hf(cfg)))
    expected = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32, beta_fast=16, beta_slow=1.0,
                    mscale=1.0, mscale_all_dim=0.5, attention_factor=1.0, truncate=False)  # fmt: skip
    assert hf["rope_scaling"] == expected
    assert hf["rope_parameters"] == {**expected, "rope_theta": 10000.0}
    assert config_from_hf(hf).rope_scaling == cfg.rope_scaling
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        read = transformers.Qwen2Config(**hf)
    finally:
        root.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert read.rope_parameters == {**expected, "rope_theta": 10000.0}


def test_missing_original_takes_max_position_embeddings():
    cfg = LlamaConfig(max_position_embeddings=4096, rope_scaling={"rope_type": "yarn", "factor": 2.0})
    assert isinstance(cfg.rope_scaling, RopeScaling) and cfg.rope_scaling.original_max_position_embeddings == 4096
    # config.json without max_position_embeddings: the model type's default (Qwen2: 32768), as transformers
    read = config_from_hf({"model_type": "qwen2", "rope_scaling": {"type": "yarn", "factor": 4.0}})
    assert read.rope_scaling == RopeScaling(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(factor="4"), r"rope scaling factor must be a number, got '4' \(str\)"),
        (dict(factor=0.5), "yarn rope scaling factor must be >= 1, got 0.5"),
        (dict(factor=0), "rope scaling factor must be positive"),
        (dict(original_max_position_embeddings=0), "original_max_position_embeddings must be positive"),
        (dict(beta_fast=1.0, beta_slow=2.0), "needs 0 < beta_slow <= beta_fast, got beta_fast=1.0 and beta_slow=2.0"),
        (dict(beta_slow=-1.0), "needs 0 < beta_slow <= beta_fast"),
        (dict(beta_fast=True), r"rope scaling beta_fast must be a number, got True \(bool\)"),
        (dict(attention_factor=0.0), "yarn rope scaling attention_factor must be positive, got 0.0"),
        (dict(attention_factor="1.2"), "rope scaling attention_factor must be a number"),
        (dict(mscale=[1]), "rope scaling mscale must be a number"),
        (dict(mscale_all_dim="1"), "rope scaling mscale_all_dim must be a number"),
        (dict(truncate="false"), r"rope scaling truncate must be true or false, got 'false' \(str\)"),
        (dict(truncate=None), "rope scaling truncate must be true or false, got None"),
    ],
)
def test_bad_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        config_from_hf({"model_type": "qwen2", "rope_scaling": {**_QWEN, **changes}})


def test_bad_records():
    with pytest.raises(ConfigError, match="lacks a field"):
        config_from_hf({"model_type": "qwen2", "rope_scaling": {"rope_type": "yarn"}})
    with pytest.raises(ConfigError, match="rope scaling beta_fast is not a field of linear scaling"):
        RopeScaling(rope_type="linear", factor=2.0, beta_fast=16.0)
    s = RopeScaling(rope_type="yarn", factor=4.0, original_max_position_embeddings=16)
    with pytest.raises(ValueError, match="needs the rotary base as a Python number"):
        rotary_angles(jnp.arange(4), 16, base=jnp.asarray(100.0), scaling=s)

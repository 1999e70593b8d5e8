"""T5 configs, presets, config translation and every failure mode with its exception (no transformers needed)."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.checkpoints import t5 as t5_ckpt
from eqxllm.errors import ConfigError, InputError, MissingKeyError, ShapeMismatchError
from eqxllm.models import PRESETS, T5, T5_PRESETS, T5Config, config_preset


def _num_params(cfg: T5Config) -> int:
    model = eqx.filter_eval_shape(T5, cfg, key=jax.random.key(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model))


@pytest.mark.parametrize(
    ("name", "expected"),
    # transformers' T5ForConditionalGeneration parameter counts for the Hub checkpoints of these names
    [("t5-small", 60_506_624), ("t5-base", 222_903_552), ("t5-v1_1-small", 76_961_152), ("flan-t5-base", 247_577_856)],
)
def test_preset_sizes_match_the_published_models(name, expected):
    assert name in PRESETS
    assert _num_params(config_preset(name)) == expected


def test_transformer_base_preset_is_the_papers_base_model():
    cfg = config_preset("transformer-base")
    assert (cfg.num_layers, cfg.decoder_layers, cfg.d_model, cfg.num_heads, cfg.d_ff) == (6, 6, 512, 8, 2048)
    assert cfg.positions == "sinusoidal" and cfg.norm == "layer_post" and cfg.scale_attention
    assert not cfg.hf_expressible
    # Vaswani et al. (2017), Table 3: 65M parameters for the base model (with their 37k shared vocabulary)
    assert abs(_num_params(cfg) - 65e6) < 0.05 * 65e6


@pytest.mark.parametrize("name", sorted(T5_PRESETS))
def test_config_translation_round_trips(name):
    cfg = T5_PRESETS[name]()
    hf = json.loads(json.dumps(t5_ckpt.config_to_hf(cfg)))  # what config.json holds
    assert hf["model_type"] == ("t5" if cfg.hf_expressible else "eqxllm_transformer")
    assert t5_ckpt.config_from_hf(hf) == cfg


def test_tied_unscaled_head_survives_translation():
    cfg = T5Config.tiny().replace(scale_decoder_outputs=False)
    assert t5_ckpt.config_from_hf(t5_ckpt.config_to_hf(cfg)) == cfg


@pytest.mark.parametrize(
    ("hf", "tied", "scaled"),
    [
        ({"tie_word_embeddings": True}, True, True),  # v4, v1.0
        ({"tie_word_embeddings": False}, False, False),  # v4, v1.1 / Flan
        ({"tie_word_embeddings": True, "scale_decoder_outputs": False}, False, False),  # v5, v1.1 / Flan
        ({}, True, True),  # transformers' defaults
    ],
)
def test_head_flags_from_v4_and_v5_configs(hf, tied, scaled):
    cfg = t5_ckpt.config_from_hf({"model_type": "t5", **hf})
    assert (cfg.tie_word_embeddings, cfg.scales_decoder_outputs) == (tied, scaled)


def test_missing_decoder_ids_is_a_clear_error():
    model = T5(T5Config.tiny(), key=jax.random.key(0))
    with pytest.raises(InputError, match="decoder_input_ids"):
        model(jnp.arange(5))


@pytest.mark.parametrize(
    "changes",
    [
        dict(relative_attention_num_buckets=2),
        dict(relative_attention_num_buckets=32, relative_attention_max_distance=16),
        dict(relative_attention_num_buckets=8, relative_attention_max_distance=4),
    ],
)
def test_relative_bias_out_of_range_is_a_config_error(changes):
    with pytest.raises(ConfigError, match="relative_attention"):
        T5Config(**changes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(feed_forward_proj="gated-nonsense"), "feed_forward_proj"),
        (dict(feed_forward_proj="relu-gated"), "feed_forward_proj"),
        (dict(d_model=0), "d_model"),
        (dict(num_decoder_layers=0), "num_decoder_layers"),
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(norm="post"), "norm"),
        (dict(positions="sinusoidal", d_model=31), "even d_model"),
        (dict(vocab_size=10, eos_token_id=10), "eos_token_id"),
    ],
)
def test_bad_config_is_a_config_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        T5Config(**changes)


def test_config_and_weights_that_disagree_raise_shape_mismatch(tmp_path):
    eqxllm.save_pretrained(T5(T5Config.tiny(), key=jax.random.key(0)), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["d_ff"] = 96  # the file's feed-forward weights are 128 wide
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ShapeMismatchError, match="DenseReluDense"):
        eqxllm.from_pretrained(tmp_path)


def test_config_with_more_layers_than_weights_raises_missing_key(tmp_path):
    eqxllm.save_pretrained(T5(T5Config.tiny(), key=jax.random.key(0)), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_decoder_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingKeyError, match="decoder.block.2"):
        eqxllm.from_pretrained(tmp_path)


def test_t5_model_type_with_transformer_options_is_refused():
    hf = t5_ckpt.config_to_hf(T5Config.transformer_tiny())
    hf["model_type"] = "t5"
    with pytest.raises(ConfigError, match="model_type 't5'"):
        t5_ckpt.config_from_hf(hf)


def test_token_ids_outside_the_vocabulary_are_refused():
    model = T5(T5Config.tiny(), key=jax.random.key(0))
    with pytest.raises(Exception, match="vocabulary size"):
        jax.block_until_ready(model(jnp.array([1, 2, 512]), jnp.array([0, 1])))
    with pytest.raises(InputError, match="empty"):
        model.encode(jnp.zeros((0,), jnp.int32))


@pytest.mark.usefixtures("unchecked_annotations")
def test_masks_of_another_length_or_a_float_dtype_are_refused():
    model = T5(T5Config.tiny(), key=jax.random.key(0))
    ids, dec, memory = jnp.array([5, 6, 7, 1]), jnp.array([0, 9]), jnp.zeros((4, model.config.d_model))
    with pytest.raises(InputError, match=r"mask has shape \(3,\) but input_ids has 4 positions"):
        model(ids, dec, mask=jnp.ones(3, bool))
    with pytest.raises(InputError, match=r"encoder_mask has shape \(3,\) but encoder_out has 4 positions"):
        model.decode_full(memory, dec, encoder_mask=jnp.ones(3, bool))
    with pytest.raises(InputError, match=r"got dtype float32; convert it with mask.astype\(bool\)"):
        model.decode_full(memory, dec, decoder_mask=jnp.ones(2))
    with pytest.raises(InputError, match="encoder_mask must be booleans"):
        model.init_decoder_cache(memory, jnp.ones(4), 2)


def test_decoding_beyond_the_cache_is_refused():
    model = T5(T5Config.tiny(), key=jax.random.key(0))
    cache = model.init_decoder_cache(model.encode(jnp.arange(4)), None, 2)
    with pytest.raises(InputError, match="cache length"):
        model.decode(jnp.arange(3), cache)
    with pytest.raises(InputError, match="max_len"):
        model.init_decoder_cache(model.encode(jnp.arange(4)), None, 0)
    _, cache = model.decode(jnp.arange(2), cache)
    with pytest.raises(Exception, match="KV cache overflow"):  # full: writing on would clobber slots
        jax.block_until_ready(model.decode(jnp.arange(1), cache))


def test_max_positions_is_unbounded_and_long_inputs_run():
    cfg = T5Config.tiny()
    assert cfg.max_positions is None
    model = T5(cfg, key=jax.random.key(0))
    # longer than relative_attention_max_distance: the buckets saturate, nothing breaks
    logits = model(jnp.arange(300) % cfg.vocab_size, jnp.arange(3))
    assert logits.shape == (3, cfg.vocab_size) and bool(jnp.all(jnp.isfinite(logits)))


def test_dropout_is_active_only_with_a_key():
    model = T5(T5Config.tiny(), key=jax.random.key(0))
    ids, dec = jnp.arange(6), jnp.arange(4)
    a, b = model(ids, dec), model(ids, dec)
    c = model(ids, dec, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_bfloat16_load_runs_forward_and_cached_decoding(tmp_path):
    eqxllm.save_pretrained(T5(T5Config.tiny(v1_1=True), key=jax.random.key(0)), tmp_path)
    model = eqxllm.from_pretrained(tmp_path, dtype=jnp.bfloat16)
    assert model.shared.weight.dtype == jnp.bfloat16
    logits = model(jnp.arange(6), jnp.arange(3))
    assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))
    cache = model.init_decoder_cache(model.encode(jnp.arange(6)), None, 4, jnp.bfloat16)
    step, cache = model.decode(jnp.arange(3), cache)
    assert cache.cross_k.dtype == cache.self_kv.k.dtype == jnp.bfloat16
    # bfloat16 keeps ~3 significant digits: the cached path agrees with the full one to that
    np.testing.assert_allclose(np.asarray(step, np.float32), np.asarray(logits, np.float32), atol=0.1, rtol=0.05)

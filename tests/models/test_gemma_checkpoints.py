"""Gemma checkpoints: sharded files both ways, bfloat16 weights, base-model and multimodal layouts,
both config.json dialects, presets, and every refusal with its message."""

import json
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.checkpoints.gemma import config_from_hf, config_to_hf, legacy_pattern
from eqxllm.errors import CheckpointError, ConfigError
from eqxllm.models import PRESETS, Gemma, GemmaConfig, config_preset

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
TEXT = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
)
IDS = np.random.default_rng(0).integers(0, 290, size=(2, 12))


def _randomize_(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "norm" in name else 0.2))
    return model.eval()


def _hf(kind: str, seed=0, **kwargs):
    cfg_cls, model_cls = {
        "gemma": ("GemmaConfig", "GemmaForCausalLM"),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
        "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    }[kind]
    window = {} if kind == "gemma" else {"sliding_window": 4}
    cfg = getattr(transformers, cfg_cls)(**{**TEXT, **window, **kwargs})
    cfg._attn_implementation = "eager"
    return _randomize_(getattr(transformers, model_cls)(cfg), seed)


def _logits(model, ids=IDS) -> np.ndarray:
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.tensor(ids)).logits.float().numpy()
    return np.asarray(eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(model, jnp.asarray(ids))).astype(np.float32)


def _tensors(directory) -> dict[str, np.ndarray]:
    index = directory / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    return {k: v for f in files for k, v in load_file(directory / f).items()}


# sharded files and dtypes -----------------------------------------------------------------------------
def test_sharded_transformers_checkpoint_loads(tmp_path):
    hf = _hf("gemma2", seed=1)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) >= 3
    model = eqxllm.from_pretrained(tmp_path)
    assert np.abs(_logits(model) - _logits(hf)).max() <= TOL


def test_sharded_eqxllm_save_round_trips_and_loads_in_transformers(tmp_path):
    hf = _hf("gemma3_text", seed=2, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path / "src")
    model = eqxllm.from_pretrained(tmp_path / "src")
    eqxllm.save_pretrained(model, tmp_path / "dst", max_shard_size=40_000)
    index = json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    a, b = _tensors(tmp_path / "src"), _tensors(tmp_path / "dst")
    assert sorted(a) == sorted(b) and "lm_head.weight" in b
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    back = transformers.Gemma3ForCausalLM.from_pretrained(tmp_path / "dst", attn_implementation="eager").eval()
    assert np.abs(_logits(back) - _logits(hf)).max() <= TOL


def test_bfloat16_weights_load_as_bfloat16_and_as_float32(tmp_path):
    hf = _hf("gemma", seed=3).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    assert {v.dtype for v in _tensors(tmp_path).values()} == {np.dtype(ml_dtypes.bfloat16)}
    # the same bf16-rounded weights, computed in float32 (a fresh load: `hf.float()` would keep the
    # rotary inv_freq buffers rounded to bfloat16 by `.to`)
    hf32 = transformers.GemmaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager")

    as32 = eqxllm.from_pretrained(tmp_path, dtype=jnp.float32)
    assert {x.dtype for x in jax.tree.leaves(as32)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_array_equal(np.asarray(as32.embed.weight), hf32.model.embed_tokens.weight.detach().numpy())
    assert np.abs(_logits(as32) - _logits(hf32)).max() <= TOL

    as16 = eqxllm.from_pretrained(tmp_path, dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(as16)} == {jnp.dtype(jnp.bfloat16)}
    out16 = _logits(as16)
    assert np.isfinite(out16).all()
    ref = _logits(hf32)
    assert np.abs(out16 - ref).max() <= 0.05 * np.abs(ref).max()  # bfloat16 compute: ~3 significant digits


# layouts ------------------------------------------------------------------------------------------------
def test_base_model_checkpoint_without_prefix(tmp_path):
    hf = _hf("gemma2", seed=4)
    hf.model.save_pretrained(tmp_path)  # Gemma2Model: "layers.0...", "embed_tokens.weight", "norm.weight"
    assert "embed_tokens.weight" in _tensors(tmp_path)
    assert np.abs(_logits(eqxllm.from_pretrained(tmp_path)) - _logits(hf)).max() <= TOL


def _multimodal(tmp_path, seed=5):
    text = {**TEXT, "sliding_window": 4, "sliding_window_pattern": 2, "rope_local_base_freq": 100.0}
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    cfg = transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=299,
        boi_token_index=297,
        eoi_token_index=298,
    )
    cfg._attn_implementation = "eager"
    hf = _randomize_(transformers.Gemma3ForConditionalGeneration(cfg), seed)
    hf.save_pretrained(tmp_path)
    return hf


def test_multimodal_gemma3_loads_its_text_tower(tmp_path):
    hf = _multimodal(tmp_path)
    assert any(k.startswith("vision_tower.") for k in _tensors(tmp_path))
    model = eqxllm.from_pretrained(tmp_path)
    assert model.config.generation == 3 and model.config.local_rope_theta == 100.0
    assert np.abs(_logits(model) - _logits(hf)).max() <= TOL  # text only: no image tokens in IDS
    eqxllm.save_pretrained(model, tmp_path / "text")  # saved back as a text-only Gemma3ForCausalLM
    assert json.loads((tmp_path / "text" / "config.json").read_text())["model_type"] == "gemma3_text"
    back = transformers.Gemma3ForCausalLM.from_pretrained(tmp_path / "text", attn_implementation="eager").eval()
    assert np.abs(_logits(back) - _logits(hf)).max() <= TOL


def test_multimodal_in_memory_layout_and_legacy_config(tmp_path):
    """transformers 5's own names (``model.language_model.*``) and a config.json written before
    transformers 5 (``rope_theta``, ``rope_local_base_freq``, ``sliding_window_pattern``)."""
    hf = _multimodal(tmp_path, seed=6)
    renamed = {}
    for k, v in _tensors(tmp_path).items():
        k = k.replace("language_model.model.", "model.language_model.").replace("vision_tower.", "model.vision_tower.")
        renamed[k.replace("multi_modal_projector.", "model.multi_modal_projector.")] = v
    (tmp_path / "model.safetensors").unlink()
    save_file(renamed, tmp_path / "model.safetensors")
    cfg = json.loads((tmp_path / "config.json").read_text())
    text = cfg["text_config"]
    for key in ("rope_parameters", "layer_types", "_sliding_window_pattern"):
        text.pop(key)
    text.update(rope_theta=1e6, rope_local_base_freq=100.0, rope_scaling=None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = eqxllm.from_pretrained(tmp_path)
    assert model.config.layer_types == ("sliding_attention", "full_attention")
    assert np.abs(_logits(model) - _logits(hf)).max() <= TOL


# config.json dialects and defaults -----------------------------------------------------------------------
def test_multimodal_special_ids_on_top_reach_the_text_config():
    """gemma-3-*-it keeps ``eos_token_id: [1, 106]`` beside ``text_config``, not in it: without it,
    generation would not stop at ``<end_of_turn>`` (106). transformers 5 also writes its default
    ``eos_token_id: 1`` into ``text_config`` when it saves such a model: the ids on top still win, as
    they do for transformers' own generation; the text config's are used where the top has none."""
    text = {**TEXT, "model_type": "gemma3_text"}
    top = {"model_type": "gemma3", "text_config": text, "eos_token_id": [1, 106], "bos_token_id": 2}
    cfg = config_from_hf(top)
    assert (cfg.eos_token_id, cfg.bos_token_id) == ((1, 106), 2)
    resaved = config_from_hf({**top, "text_config": {**text, "eos_token_id": 1, "bos_token_id": 2}})
    assert (resaved.eos_token_id, resaved.bos_token_id) == ((1, 106), 2)
    only_text = {"model_type": "gemma3", "text_config": {**text, "eos_token_id": 7}, "eos_token_id": None}
    assert config_from_hf(only_text).eos_token_id == 7


@pytest.mark.parametrize("kind", ["GemmaConfig", "Gemma2Config", "Gemma3TextConfig"])
def test_missing_keys_take_transformers_defaults(kind):
    full = getattr(transformers, kind)().to_dict()
    assert config_from_hf({"model_type": full["model_type"]}) == config_from_hf(full)


def test_legacy_config_keys():
    old2 = dict(
        model_type="gemma2",
        **TEXT,
        rope_theta=5000,
        rope_scaling={"type": "linear", "factor": 2.0},
        sliding_window=4,
        query_pre_attn_scalar=16,
        final_logit_softcapping=None,
    )
    cfg = config_from_hf(old2)
    assert (cfg.rope_theta, cfg.rope_scaling, cfg.final_logit_softcapping) == (5000.0, 2.0, None)
    assert cfg.attn_logit_softcapping == 50.0  # absent: transformers' Gemma 2 default
    assert cfg.layer_types == ("sliding_attention", "full_attention")
    old1 = dict(model_type="gemma", **TEXT, hidden_act="gelu", hidden_activation=None)
    assert config_from_hf(old1).hidden_activation == "gelu_pytorch_tanh"  # as transformers maps it
    old3 = dict(
        model_type="gemma3_text",
        **{**TEXT, "num_hidden_layers": 6},
        sliding_window_pattern=3,
        rope_theta=2e5,
        rope_local_base_freq=500,
    )
    cfg3 = config_from_hf(old3)
    assert cfg3.layer_types == ("sliding_attention", "sliding_attention", "full_attention") * 2
    assert cfg3.sliding_window_pattern == 3  # kept, so a change of depth keeps the pattern
    assert cfg3.replace(num_hidden_layers=3).layer_types == ("sliding_attention", "sliding_attention", "full_attention")
    assert (cfg3.rope_theta, cfg3.local_rope_theta) == (2e5, 500.0)
    # the multimodal gemma-3-4b dialect: a legacy rope_scaling beside transformers 5's nested defaults
    nested = {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default"},
    }
    mixed = dict(old3, rope_parameters=nested, rope_scaling={"type": "linear", "factor": 8.0})
    assert (config_from_hf(mixed).rope_scaling, config_from_hf(mixed).rope_theta) == (8.0, 1e6)


S, F = "sliding_attention", "full_attention"


@pytest.mark.parametrize(
    ("gen", "layer_types", "pattern"),
    [
        (3, (S, S, F, S, S, F), 3),  # given as layer types, with the tiny config's pattern (2) left as it is
        (3, (S, F, S, F), 2),  # the config's own pattern
        (3, (S,) * 6, 7),  # every pattern above the depth gives these
        (3, (F,) * 6, 1),
        (3, (F, S, F, S, S, S), None),
        (2, (S, F, S, F), 2),
        (2, (S, S, S, F), None),
    ],
)
def test_saved_layer_types_read_the_same_without_layer_types(gen, layer_types, pattern):
    """transformers before 5 ignores ``layer_types`` (Gemma 2 alternates, Gemma 3 reads
    ``sliding_window_pattern``): the pattern written gives the same layers, or saving warns."""
    cfg = GemmaConfig.tiny(generation=gen).replace(num_hidden_layers=len(layer_types), layer_types=layer_types)
    assert legacy_pattern(cfg) == pattern
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf = config_to_hf(cfg)
    warned = [str(w.message) for w in caught if "follow no sliding_window_pattern" in str(w.message)]
    assert len(warned) == (pattern is None)
    without = {k: v for k, v in hf.items() if k != "layer_types"}  # as transformers 4.51 reads the file
    assert (config_from_hf(without).layer_types == layer_types) == (pattern is not None)
    assert config_from_hf(hf).layer_types == layer_types  # transformers 5 reads layer_types


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.startswith("gemma")))
def test_presets_translate_both_ways(name):
    cfg = config_preset(name)
    assert isinstance(cfg, GemmaConfig)
    assert config_from_hf(json.loads(json.dumps(config_to_hf(cfg)))) == cfg
    hf_cls = {1: transformers.GemmaConfig, 2: transformers.Gemma2Config, 3: transformers.Gemma3TextConfig}
    assert config_from_hf(hf_cls[cfg.generation](**config_to_hf(cfg)).to_dict()) == cfg


@pytest.mark.parametrize(
    "name,params",
    # published parameter counts of the Hub checkpoints (text decoder only for gemma-3-4b)
    [
        ("gemma-2b", 2_506_172_416),
        ("gemma-7b", 8_537_680_896),
        ("gemma-2-2b", 2_614_341_888),
        ("gemma-2-9b", 9_241_705_984),
        ("gemma-3-1b", 999_885_952),
        ("gemma-3-4b", 3_880_263_168),
    ],
)
def test_preset_sizes(name, params):
    skeleton = eqx.filter_eval_shape(Gemma, config_preset(name), key=jax.random.key(0))
    assert sum(x.size for x in jax.tree.leaves(skeleton)) == params


# refusals -------------------------------------------------------------------------------------------------
def test_heads_not_a_multiple_of_kv_heads():
    with pytest.raises(ConfigError, match="num_attention_heads=6 is not a multiple of num_key_value_heads=4"):
        GemmaConfig.tiny(2).replace(num_attention_heads=6, num_key_value_heads=4)


def test_unknown_layer_type_in_config_json(tmp_path):
    _hf("gemma2", seed=7).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["layer_types"] = ["sliding_attention", "chunked_attention"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="layer_types.*'chunked_attention'"):
        eqxllm.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "hf,match",
    [
        (dict(model_type="gemma2", rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type='yarn'"),
        (dict(model_type="gemma2", rope_scaling={"rope_type": "linear", "factor": "8"}), "factor must be a number"),
        (dict(model_type="gemma2", rope_scaling={"rope_type": "linear"}), "rope_type='linear' but no factor"),
        (
            dict(
                model_type="gemma3_text",
                rope_parameters={"sliding_attention": {"rope_type": "linear", "factor": 2.0}},
            ),
            "sliding layers",
        ),
        (dict(model_type="gemma3_text", use_bidirectional_attention=True), "use_bidirectional_attention"),
        (dict(model_type="gemma2", layer_types=["sliding_attention"] * 3), "layer_types has 3 entries"),
        (dict(model_type="gemma2", sliding_window=None), "sliding_window is None"),
        (dict(model_type="gemma2", hidden_activation="gelu_fast"), "hidden_activation='gelu_fast'"),
        (dict(model_type="gemma", num_key_value_heads=0), "num_key_value_heads must be a positive integer"),
    ],
)
def test_config_refusals(hf, match):
    with pytest.raises(ConfigError, match=match):
        config_from_hf({**TEXT, **hf})


def test_generation_specific_fields_are_refused():
    with pytest.raises(ConfigError, match="Gemma 1.*attn_logit_softcapping"):
        GemmaConfig.tiny(1).replace(attn_logit_softcapping=50.0)
    with pytest.raises(ConfigError, match="Gemma 3 does not soft-cap attention"):
        GemmaConfig.tiny(3).replace(attn_logit_softcapping=50.0)
    with pytest.raises(ConfigError, match="rope_local_base_freq is a Gemma 3 field"):
        GemmaConfig.tiny(2).replace(rope_local_base_freq=10.0)


def test_tied_head_that_differs_is_refused(tmp_path):
    hf = _hf("gemma", seed=8, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from model.embed_tokens.weight"):
        eqxllm.from_pretrained(tmp_path)

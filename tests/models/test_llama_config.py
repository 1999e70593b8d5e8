"""LlamaConfig: presets against the published parameter counts (counted abstractly), validation with
specific errors, rotary scaling against transformers' formulas, and bad checkpoints."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.checkpoints.llama import config_from_hf, config_to_hf
from eqxllm.errors import ConfigError, MissingKeyError
from eqxllm.models import PRESETS, Llama, LlamaConfig, config_preset
from eqxllm.models.decoder import parameter_count
from eqxllm.nn.positions import RopeScaling, rotary_angles

# the model cards' / safetensors headers' totals on the Hugging Face Hub
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "open-llama-3b": 3_426_473_600,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-0.5b": 494_032_768,
    "qwen3-0.6b": 596_049_920,
    "mixtral-8x7b": 46_702_792_704,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts(name):
    assert parameter_count(Llama, config_preset(name)) == PUBLISHED[name]


@pytest.mark.parametrize("name", ["llama-tiny", "mistral-tiny", "qwen2-tiny", "qwen3-tiny", "mixtral-tiny"])
def test_tiny_presets_run(name):
    cfg = PRESETS[name]()
    model = Llama(cfg, key=jax.random.key(0))
    logits = model(jnp.arange(10, dtype=jnp.int32))
    assert logits.shape == (10, cfg.vocab_size) and bool(jnp.all(jnp.isfinite(logits)))
    assert config_from_hf(json.loads(json.dumps(config_to_hf(cfg)))) == cfg


def test_mistral_tiny_window_is_shorter_than_test_sequences():
    cfg = config_preset("mistral-tiny")
    assert cfg.sliding_window is not None and cfg.sliding_window < 16 and all(cfg.sliding_flags)


def test_bad_configs():
    with pytest.raises(ConfigError, match="num_attention_heads=6 is not a multiple of num_key_value_heads=4"):
        LlamaConfig(num_attention_heads=6, num_key_value_heads=4, hidden_size=96)
    with pytest.raises(
        ConfigError, match=r"'dynamic' is not implemented; known types: \['default', 'linear', 'llama3', 'yarn'\]"
    ):
        LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ConfigError, match="'longrope' is not implemented"):
        config_from_hf({"model_type": "llama", "rope_scaling": {"type": "longrope", "factor": 4.0}})
    with pytest.raises(ConfigError, match="Qwen2 always has q/k/v biases"):
        LlamaConfig(model_type="qwen2", attention_bias=True)
    with pytest.raises(ConfigError, match="Llama has no sliding window"):
        LlamaConfig(sliding_window=16)
    with pytest.raises(ConfigError, match="model_type='gpt2' is not llama-like"):
        config_from_hf({"model_type": "gpt2"})
    with pytest.raises(ConfigError, match="num_local_experts is a Mixtral field"):
        LlamaConfig(num_local_experts=8)
    with pytest.raises(ConfigError, match="partial_rotary_factor"):
        config_from_hf(
            {"model_type": "llama", "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}
        )
    with pytest.raises(ConfigError, match=r"rope scaling factor must be a number, got '8' \(str\)"):
        config_from_hf({"model_type": "llama", "rope_scaling": {"rope_type": "linear", "factor": "8"}})
    # transformers refuses these too: a default filled in here would export a config it cannot load
    with pytest.raises(ConfigError, match=r"lacks \['low_freq_factor', 'high_freq_factor'\]"):
        LlamaConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ConfigError, match="hidden_size=64 is not divisible by num_attention_heads=5$"):
        LlamaConfig(hidden_size=64, num_attention_heads=5, num_key_value_heads=5, head_dim=12)
    with pytest.raises(ConfigError, match="hidden_size=64 is not divisible by num_attention_heads=5; give head_dim"):
        LlamaConfig(model_type="mistral", hidden_size=64, num_attention_heads=5, num_key_value_heads=5)
    assert LlamaConfig(model_type="mistral", hidden_size=64, num_attention_heads=5, num_key_value_heads=5, head_dim=12)


def test_a_rope_theta_inside_rope_scaling_is_the_base():
    """transformers 5's ``rope_parameters`` carries the base: passed as ``rope_scaling`` it is kept, not
    dropped (the model would silently rotate by 10000)."""
    for params in (
        {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5},
        {"rope_type": "default", "rope_theta": 5e5},
    ):
        assert LlamaConfig(rope_scaling=params).rope_theta == 5e5
        assert LlamaConfig(rope_theta=5e5, rope_scaling=params).rope_theta == 5e5
    assert (
        LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}).rope_scaling.factor == 2.0
    )
    with pytest.raises(ConfigError, match=r"rope_scaling holds rope_theta=500000.0 but rope_theta=1000000.0"):
        LlamaConfig(rope_theta=1e6, rope_scaling={"rope_type": "default", "rope_theta": 5e5})


def test_qwen_layer_types_follow_transformers():
    """Qwen slides from layer ``max_window_layers`` on, and only with ``use_sliding_window``."""
    transformers = pytest.importorskip("transformers")
    for use in (True, False):
        hf = transformers.Qwen2Config(
            num_hidden_layers=5, use_sliding_window=use, sliding_window=7, max_window_layers=2
        )
        ours = config_from_hf({**hf.to_dict(), "layer_types": None})
        assert ours.layer_types == tuple(hf.layer_types)
        assert ours.sliding_window == hf.sliding_window


def test_qwen_window_needs_use_sliding_window_and_round_trips():
    base = dict(model_type="qwen2", num_hidden_layers=3, sliding_window=4, max_window_layers=1)
    off = LlamaConfig(**base)  # a window without the flag: transformers drops it, and so do we
    assert off.layer_types == ("full_attention",) * 3
    assert config_from_hf(json.loads(json.dumps(config_to_hf(off)))).layer_types == off.layer_types
    on = off.replace(use_sliding_window=True)
    assert on.layer_types == ("full_attention", "sliding_attention", "sliding_attention")
    back = config_from_hf(json.loads(json.dumps(config_to_hf(on))))
    assert (back.layer_types, back.sliding_window) == (on.layer_types, 4)
    with pytest.raises(ConfigError, match="sliding_attention layers but use_sliding_window=False"):
        LlamaConfig(**base, layer_types=("full_attention", "sliding_attention", "sliding_attention"))


@pytest.mark.parametrize("model_type", ["mistral", "mixtral"])
def test_mistral_layer_types_its_config_json_cannot_hold_are_refused(model_type):
    experts = {"num_local_experts": 2} if model_type == "mixtral" else {}
    kinds = ("full_attention", "sliding_attention")
    with pytest.raises(ConfigError, match=r"differs from .*own pattern.*cannot express"):
        LlamaConfig(model_type=model_type, num_hidden_layers=2, sliding_window=4, layer_types=kinds, **experts)
    every = LlamaConfig(model_type=model_type, num_hidden_layers=2, sliding_window=4, **experts)
    assert every.replace(layer_types=("sliding_attention",) * 2) == every


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "mixtral"])
@pytest.mark.parametrize(
    "params",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "beta_fast": 16.0,
         "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
    ],
)  # fmt: skip
def test_rotary_scaling_equals_transformers(params, model_type):
    """Each model type's config.json carries the scaling, and its transformers model applies it (yarn's
    attention factor on cos and sin included)."""
    import importlib

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    name = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "mixtral": "Mixtral"}[
        model_type
    ]
    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    hf_cfg = getattr(transformers, f"{name}Config")(
        hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
        rope_parameters={**params, "rope_theta": 10000.0},
    )  # fmt: skip
    rope = getattr(modeling, f"{name}RotaryEmbedding")(hf_cfg)
    positions = np.arange(0, 400, 7)
    x = torch.zeros(1, len(positions), 64)
    cos, sin = rope(x, torch.tensor(positions)[None])
    ours = config_from_hf(hf_cfg.to_dict())
    assert ours.head_size == 64
    angles = rotary_angles(jnp.asarray(positions), 64, base=ours.rope_theta, scaling=ours.rope_scaling)
    # angles up to ~400 radians: a float32 ulp of an inverse frequency moves them by ~1e-5
    np.testing.assert_allclose(np.asarray(angles[0]), cos[0].numpy(), atol=5e-5)
    np.testing.assert_allclose(np.asarray(angles[1]), sin[0].numpy(), atol=5e-5)
    plain = rotary_angles(jnp.asarray(positions), 64, base=10000.0)
    assert np.abs(np.asarray(plain[0]) - cos[0].numpy()).max() > 1e-2  # the scaling did something


def test_llama3_scaling_keeps_high_frequencies():
    s = RopeScaling(rope_type="llama3", factor=8.0, original_max_position_embeddings=8192)
    inv = 1.0 / (500000.0 ** (jnp.arange(0, 128, 2, dtype=jnp.float32) / 128))
    scaled = np.asarray(s.scale(inv))
    assert scaled[0] == inv[0] and math.isclose(scaled[-1], float(inv[-1]) / 8, rel_tol=1e-6)


def test_checkpoint_missing_a_tensor(tmp_path):
    model = Llama(config_preset("qwen3-tiny"), key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingKeyError, match=r"model.layers.1.self_attn.k_norm.weight"):
        eqxllm.from_pretrained(tmp_path)


def test_checkpoint_missing_an_expert(tmp_path):
    model = Llama(config_preset("mixtral-tiny"), key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in tensors
    del tensors["model.layers.0.block_sparse_moe.experts.3.w2.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingKeyError, match=r"experts.3.w2.weight"):
        eqxllm.from_pretrained(tmp_path)


def test_mixtral_bad_top_k():
    with pytest.raises(ConfigError, match="num_experts_per_tok <= num_local_experts"):
        LlamaConfig(model_type="mixtral", num_local_experts=2, num_experts_per_tok=3)


def test_base_model_checkpoint_loads(tmp_path):
    """A base-model file (``layers.*`` without ``model.``) loads like the ``*ForCausalLM`` one."""
    cfg = config_preset("llama-tiny")
    model = Llama(cfg, key=jax.random.key(1))
    eqxllm.save_pretrained(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {k.removeprefix("model."): v for k, v in tensors.items()}
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    back = eqxllm.from_pretrained(tmp_path)
    assert bool(jnp.all(back.blocks.blocks.attn.q_proj.weight == model.blocks.blocks.attn.q_proj.weight))
    assert not cfg.tie_word_embeddings  # so a base model's save (LlamaModel) has no head to load
    del renamed["lm_head.weight"]
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingKeyError, match=r"lacks the output head 'lm_head.weight'.*rather than \*ForCausalLM"):
        eqxllm.from_pretrained(tmp_path)


@pytest.mark.parametrize("source", ["absent", "null", 4])
def test_openllama_kv_heads_round_trip(tmp_path, source):
    """OpenLLaMA's config.json has no num_key_value_heads (multi-head attention, transformers' llama
    default): it loads as 4 kv heads of 4 and is saved without the key again; an explicit 4 stays 4."""
    model = Llama(config_preset("llama-tiny").replace(num_key_value_heads=4), key=jax.random.key(0))
    src, dst = tmp_path / "src", tmp_path / "dst"
    eqxllm.save_pretrained(model, src)
    hf = json.loads((src / "config.json").read_text())
    assert hf["num_key_value_heads"] == 4
    if source == "absent":
        del hf["num_key_value_heads"]
    elif source == "null":
        hf["num_key_value_heads"] = None
    (src / "config.json").write_text(json.dumps(hf))
    back = eqxllm.from_pretrained(src)
    assert back.config.kv_heads == 4 and back.blocks.blocks.attn.k_proj.weight.shape[1:] == (64, 64)
    eqxllm.save_pretrained(back, dst)
    written = json.loads((dst / "config.json").read_text())
    assert written.get("num_key_value_heads", "absent") == ("absent" if source != 4 else 4)
    assert eqxllm.from_pretrained(dst).config == back.config
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoConfig.from_pretrained(dst).num_key_value_heads == 4


@pytest.mark.parametrize("model_type", ["qwen2", "gemma2"])
def test_attention_dropout_in_config_json_is_said_to_be_unused(model_type):
    import eqxllm.checkpoints.gemma as gemma_checkpoints

    hf = {"model_type": model_type, "vocab_size": 64, "hidden_size": 32, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 8, "num_hidden_layers": 2, "intermediate_size": 64}  # fmt: skip
    read = config_from_hf if model_type == "qwen2" else gemma_checkpoints.config_from_hf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read({**hf, "attention_dropout": 0.0})
    with pytest.warns(UserWarning, match=f"attention_dropout=0.1; eqxllm's {model_type} has no attention dropout"):
        read({**hf, "attention_dropout": 0.1})

"""Llama, Mistral, Qwen2, Qwen3 and Mixtral <-> Hugging Face ``LlamaForCausalLM``,
``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM`` and ``MixtralForCausalLM``.

Weights follow the shared decoder table (:mod:`eqxllm.checkpoints.decoder_keys`); base-model
checkpoints (no ``model.`` prefix) load too. ``config.json`` comes in two dialects: transformers 5
writes ``rope_parameters`` (with ``rope_theta`` inside), earlier versions ``rope_theta`` and
``rope_scaling``. Both are read; both are written, so that either version loads what eqxllm saves.
Keys a file leaves out take transformers' defaults for its model type, not eqxllm's.
"""

import re
import warnings
from typing import Any

import numpy as np

from eqxllm.checkpoints.decoder_keys import BASE_MODEL_RENAMES, decoder_key_map, drop_decoder_tied_head, rename_keys
from eqxllm.checkpoints.keymap import KeyMap
from eqxllm.errors import ConfigError, ShapeMismatchError
from eqxllm.models.llama_config import MODEL_TYPES, LlamaConfig
from eqxllm.nn.activations import hf_activation
from eqxllm.nn.positions import SCALING_FIELDS, RopeScaling

_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
}
# transformers 5.25's defaults (configuration_{llama,mistral,qwen2,qwen3,mixtral}.py) for keys a
# config.json may leave out
_COMMON = dict(
    hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, head_dim=None, hidden_act="silu",
    initializer_range=0.02, rms_norm_eps=1e-6, tie_word_embeddings=False, pad_token_id=None,
    bos_token_id=1, eos_token_id=2, rope_theta=10000.0,
)  # fmt: skip
_QWEN_DEFAULTS = dict(
    _COMMON, vocab_size=151936, intermediate_size=22016, num_key_value_heads=32, max_position_embeddings=32768,
    bos_token_id=None, eos_token_id=None, use_sliding_window=False, sliding_window=4096, max_window_layers=28,
)  # fmt: skip
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(_COMMON, vocab_size=32000, intermediate_size=11008, num_key_value_heads=None,
                  max_position_embeddings=2048, attention_bias=False, mlp_bias=False),
    "mistral": dict(_COMMON, vocab_size=32000, intermediate_size=14336, num_key_value_heads=8,
                    max_position_embeddings=4096 * 32, sliding_window=4096),
    "qwen2": _QWEN_DEFAULTS,
    "qwen3": dict(_QWEN_DEFAULTS, head_dim=128, attention_bias=False),
    "mixtral": dict(_COMMON, vocab_size=32000, intermediate_size=14336, num_key_value_heads=8,
                    max_position_embeddings=4096 * 32, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
                    num_local_experts=8, num_experts_per_tok=2, router_aux_loss_coef=0.001),
}  # fmt: skip
_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
    "tie_word_embeddings", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip
# fields only some model types have (those of the model type are read and written)
_OWN_FIELDS = {
    "llama": ("attention_bias", "mlp_bias"),
    "mistral": ("sliding_window",),
    "qwen2": ("use_sliding_window", "sliding_window", "max_window_layers"),
    "qwen3": ("attention_bias", "use_sliding_window", "sliding_window", "max_window_layers"),
    "mixtral": ("sliding_window", "num_local_experts", "num_experts_per_tok", "router_aux_loss_coef"),
}
_FLOAT_FIELDS = ("rms_norm_eps", "initializer_range", "router_aux_loss_coef")


# config.json -> LlamaConfig --------------------------------------------------------------------------
def config_from_hf(hf: dict[str, Any]) -> LlamaConfig:
    """Translate a Hugging Face ``config.json`` of a llama-like model; options that change the maths
    and that eqxllm does not implement are refused rather than ignored."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"config.json model_type={model_type!r} is not llama-like; expected one of {MODEL_TYPES}")
    defaults = _HF_DEFAULTS[model_type]
    get = lambda name: hf[name] if name in hf else defaults.get(name)  # noqa: E731  (an explicit null is kept)
    kwargs: dict[str, Any] = {name: get(name) for name in (*_SHARED_FIELDS, *_OWN_FIELDS[model_type])}
    if model_type in ("qwen2", "qwen3"):  # transformers' Qwen configs drop the window unless it is used
        kwargs["sliding_window"] = kwargs["sliding_window"] if kwargs["use_sliding_window"] else None
        if hf.get("layer_types") is not None:
            kwargs["layer_types"] = tuple(hf["layer_types"])
    warn_attention_dropout(hf)
    if float(hf.get("router_jitter_noise") or 0.0):
        raise ConfigError("config.json sets router_jitter_noise; eqxllm's Mixtral router has no jitter")
    for name in _FLOAT_FIELDS:  # JSON may spell 1.0 as 1
        if kwargs.get(name) is not None:
            kwargs[name] = float(kwargs[name])
    return LlamaConfig(model_type=model_type, **kwargs, **_rope_from_hf(hf, float(defaults["rope_theta"])))


def warn_attention_dropout(hf: dict[str, Any]) -> None:
    """Warn when ``config.json`` trains with attention dropout: the llama-like decoder (Gemma's too)
    has no dropout, so inference is the same, but training here runs without it and a save writes 0."""
    rate = hf.get("attention_dropout")
    if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
        warnings.warn(
            f"config.json sets attention_dropout={rate}; eqxllm's {hf.get('model_type')} has no attention dropout: "
            "inference is unchanged, training here runs without it, and save_pretrained writes 0.0",
            stacklevel=3,
        )


def _rope_from_hf(hf: dict[str, Any], default_theta: float) -> dict[str, Any]:
    # transformers: `rope_scaling or rope_parameters`, then rope_theta beside them as the fallback base
    params = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    theta = float(params.pop("rope_theta", hf.get("rope_theta", default_theta)))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError("config.json rotates part of each head (partial_rotary_factor); eqxllm rotates all of it")
    # a missing original_max_position_embeddings is max_position_embeddings (LlamaConfig fills it in)
    return dict(rope_theta=theta, rope_scaling=params or None)


# LlamaConfig -> config.json --------------------------------------------------------------------------
def config_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
    kind = cfg.model_type
    out: dict[str, Any] = {"architectures": [_ARCHITECTURES[kind]], "model_type": kind}
    out.update({name: getattr(cfg, name) for name in (*_SHARED_FIELDS, *_OWN_FIELDS[kind])})
    out["attention_dropout"] = 0.0
    out["hidden_act"] = hf_activation(cfg.hidden_act)
    # None (multi-head attention) stays unwritten for llama, whose transformers default is None =
    # num_attention_heads too, so that OpenLLaMA's and Llama 1's config.json (which leave it out) come
    # back as they were; the others default to 8 or 32 kv heads and get the number (transformers 5
    # refuses Mistral's and Mixtral's null)
    if cfg.num_key_value_heads is None and kind == "llama":
        out.pop("num_key_value_heads")
    else:
        out["num_key_value_heads"] = cfg.kv_heads
    if cfg.head_dim is not None or kind == "qwen3":
        out["head_dim"] = cfg.head_size
    else:
        out.pop("head_dim")  # transformers derives it as eqxllm does (explicit for Qwen3, whose default is 128)
    if isinstance(cfg.eos_token_id, tuple):
        out["eos_token_id"] = list(cfg.eos_token_id)
    if kind in ("qwen2", "qwen3"):
        out["max_window_layers"] = cfg.num_hidden_layers if cfg.max_window_layers is None else cfg.max_window_layers
        out["layer_types"] = list(cfg.layer_types)  # type: ignore[arg-type]
    scaling = _scaling_to_hf(cfg)
    out["rope_parameters"] = {"rope_type": "default", **scaling, "rope_theta": cfg.rope_theta}
    out["rope_theta"] = cfg.rope_theta  # for transformers before 5
    if scaling:
        out["rope_scaling"] = scaling
    return out


def _scaling_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
    s = cfg.rope_scaling
    if s is None:
        return {}
    assert isinstance(s, RopeScaling)
    # only the keys the type reads (transformers warns about the others); None means "unset"
    fields = {name: getattr(s, name) for name in SCALING_FIELDS[s.rope_type]}
    if fields.get("attention_factor") is not None:  # transformers warns unless it is a float
        fields["attention_factor"] = float(fields["attention_factor"])
    return {"rope_type": s.rope_type, **{k: v for k, v in fields.items() if v is not None}}


# weights ---------------------------------------------------------------------------------------------
def key_map(cfg: LlamaConfig) -> KeyMap:
    return decoder_key_map(cfg.decoder)


def normalize_keys(tensors: dict[str, np.ndarray], cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """Bring base-model checkpoints to ``*ForCausalLM`` keys, fused Mixtral experts to the Hub's
    per-expert layout, and drop a stored copy of a tied head."""
    tensors = rename_keys(tensors, BASE_MODEL_RENAMES)
    if cfg.num_local_experts:
        tensors = unfuse_experts(tensors, cfg)
    return drop_decoder_tied_head(tensors, cfg.tie_word_embeddings)


_FUSED = re.compile(r"(.*layers\.\d+\.)mlp\.(experts\.gate_up_proj|experts\.down_proj|gate\.weight)")


def unfuse_experts(tensors: dict[str, np.ndarray], cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """transformers 5 holds a Mixtral layer's experts fused, and writes them so with
    ``save_pretrained(..., save_original_format=False)``: ``mlp.experts.gate_up_proj``
    ``[experts, 2 * mlp, embed]`` (each expert's ``w1`` rows, then its ``w3`` rows),
    ``mlp.experts.down_proj`` ``[experts, embed, mlp]`` and the router ``mlp.gate.weight``. They
    become the Hub's ``block_sparse_moe.experts.{j}.w1/w2/w3.weight`` and ``block_sparse_moe.gate.weight``
    (slices, not copies); a checkpoint in the Hub's layout passes unchanged."""
    experts, mlp, embed = cfg.num_local_experts, cfg.intermediate_size, cfg.hidden_size
    shapes = {"experts.gate_up_proj": (experts, 2 * mlp, embed), "experts.down_proj": (experts, embed, mlp)}
    out = {}
    for key, value in tensors.items():
        match = _FUSED.fullmatch(key)
        if match is None:
            out[key] = value
            continue
        layer, part = match[1] + "block_sparse_moe.", match[2]
        if part == "gate.weight":
            out[layer + "gate.weight"] = value
            continue
        if value.shape != shapes[part]:
            raise ShapeMismatchError(
                f"checkpoint tensor {key!r} has shape {list(value.shape)}; the fused experts of config.json "
                f"({experts} experts, intermediate_size {mlp}, hidden_size {embed}) are {list(shapes[part])}"
            )
        for j in range(experts):
            if part == "experts.down_proj":
                out[f"{layer}experts.{j}.w2.weight"] = value[j]
            else:
                out[f"{layer}experts.{j}.w1.weight"] = value[j, :mlp]
                out[f"{layer}experts.{j}.w3.weight"] = value[j, mlp:]
    return out


def _family():
    from eqxllm.checkpoints.registry import Family
    from eqxllm.models.llama import Llama

    return Family(
        model_types=MODEL_TYPES,
        config_cls=LlamaConfig,
        model_cls=Llama,
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        key_map=key_map,
        normalize_keys=normalize_keys,
    )


FAMILY = _family()

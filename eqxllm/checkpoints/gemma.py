"""Gemma 1/2/3 <-> Hugging Face ``GemmaForCausalLM`` / ``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM``.

Keys are ``model.embed_tokens``, ``model.layers.{i}.*``, ``model.norm`` and, when untied, ``lm_head``.
Gemma 1 calls its pre-MLP norm ``post_attention_layernorm``; Gemma 2/3 use that name for the norm of
the attention output and call the pre-MLP one ``pre_feedforward_layernorm``. Loading also accepts
base-model checkpoints (no ``model.`` prefix) and the text tower of multimodal Gemma 3 checkpoints
(``model_type="gemma3"``: ``language_model.model.*`` before transformers 5, ``model.language_model.*``
since), whose vision weights are skipped; such a model saves back as ``gemma3_text``.

``config.json`` comes in two dialects: transformers 5 writes ``rope_parameters`` (nested per layer
type in Gemma 3), earlier versions ``rope_theta``/``rope_scaling``/``rope_local_base_freq`` and
Gemma 3's ``sliding_window_pattern``. Both are read; both are written, so that either version loads
what eqxllm saves (layer types that no pattern gives load as saved in transformers 5 only; saving
them warns). Missing keys take transformers' defaults for the model type, not eqxllm's.
"""

import warnings
from typing import Any

import numpy as np

from eqxllm.checkpoints.decoder_keys import BASE_MODEL_RENAMES, decoder_key_map, drop_decoder_tied_head, rename_keys
from eqxllm.checkpoints.keymap import KeyMap
from eqxllm.checkpoints.llama import warn_attention_dropout
from eqxllm.errors import ConfigError
from eqxllm.models.gemma_config import FULL, SLIDING, GemmaConfig, default_layer_types
from eqxllm.nn.activations import hf_activation
from eqxllm.nn.positions import check_scaling_numbers

_GENERATION = {"gemma": 1, "gemma2": 2, "gemma3_text": 3}
_ARCHITECTURES = {1: "GemmaForCausalLM", 2: "Gemma2ForCausalLM", 3: "Gemma3ForCausalLM"}

# transformers 5.23's defaults (configuration_gemma.py, configuration_gemma2.py, Gemma3TextConfig) for
# keys a config.json may leave out; the multimodal Gemma 3 configs on the Hub rely on them.
_COMMON_DEFAULTS = dict(
    vocab_size=256000, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6, attention_bias=False,
    tie_word_embeddings=True, initializer_range=0.02, bos_token_id=2, eos_token_id=1, pad_token_id=0,
)  # fmt: skip
_HF_DEFAULTS: dict[int, dict[str, Any]] = {
    1: dict(
        _COMMON_DEFAULTS, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=16,
    ),
    2: dict(
        _COMMON_DEFAULTS, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, query_pre_attn_scalar=256, sliding_window=4096,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
    ),
    3: dict(
        _COMMON_DEFAULTS, vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=131072,
        query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=None,
    ),
}  # fmt: skip
_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "attention_bias",
    "tie_word_embeddings", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip
_GEMMA2_FIELDS = ("query_pre_attn_scalar", "sliding_window", "final_logit_softcapping")
_FLOAT_FIELDS = (
    "rms_norm_eps", "initializer_range", "query_pre_attn_scalar", "attn_logit_softcapping",
    "final_logit_softcapping",
)  # fmt: skip


# config.json -> GemmaConfig --------------------------------------------------------------------------
def config_from_hf(hf: dict[str, Any]) -> GemmaConfig:
    """Translate a Hugging Face Gemma ``config.json`` (``gemma``, ``gemma2``, ``gemma3_text`` or the
    multimodal ``gemma3``, whose ``text_config`` is used); options that change the maths and that
    eqxllm does not implement are refused rather than ignored."""
    if hf.get("model_type") == "gemma3":
        text = dict(hf.get("text_config") or {})
        text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", True))
        # the token ids on top win: the -it models' eos [1, 106] lives there, and transformers 5 also
        # writes its default (eos 1) into text_config, which would drop the end-of-turn stop id
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if hf.get(name) is not None:
                text[name] = hf[name]
        hf = {**text, "model_type": "gemma3_text"}
    model_type = hf.get("model_type")
    if model_type not in _GENERATION:
        raise ConfigError(
            f"config.json model_type={model_type!r} is not a Gemma text model; expected {sorted(_GENERATION)}"
        )
    gen = _GENERATION[model_type]
    warn_attention_dropout(hf)
    if hf.get("use_bidirectional_attention"):
        raise ConfigError(f"config.json sets use_bidirectional_attention=true ({model_type}); eqxllm's Gemma is causal")
    defaults = _HF_DEFAULTS[gen]
    get = lambda name: hf[name] if name in hf else defaults.get(name)  # noqa: E731  (an explicit null is kept)
    kwargs: dict[str, Any] = {name: get(name) for name in _SHARED_FIELDS}
    if kwargs["head_dim"] is None:  # transformers: `getattr(config, "head_dim", None) or hidden // heads`
        kwargs["head_dim"] = kwargs["hidden_size"] // kwargs["num_attention_heads"]
    kwargs.update(generation=gen, hidden_activation=_activation(hf, gen), **_rope_from_hf(hf, gen))
    if gen >= 2:
        kwargs.update({name: get(name) for name in _GEMMA2_FIELDS})
        kwargs["layer_types"] = _layer_types(hf, gen, kwargs["num_hidden_layers"])
    if gen == 3:
        kwargs["sliding_window_pattern"] = _pattern(hf)
    if gen == 2:
        kwargs["attn_logit_softcapping"] = get("attn_logit_softcapping")
    # Gemma 3 has no attention soft-cap: transformers' Gemma3Attention never passes the value on
    for name in _FLOAT_FIELDS:  # JSON may spell 256.0 as 256
        if kwargs.get(name) is not None:
            kwargs[name] = float(kwargs[name])
    return GemmaConfig(**kwargs)


def _activation(hf: dict[str, Any], gen: int) -> str:
    if gen == 1:  # transformers 5 reads hidden_act only, and maps the legacy "gelu" to the tanh form
        act = hf.get("hidden_act") or hf.get("hidden_activation") or "gelu_pytorch_tanh"
        return "gelu_pytorch_tanh" if act == "gelu" else act
    return hf.get("hidden_activation") or "gelu_pytorch_tanh"


def _linear_factor(params: dict[str, Any], where: str) -> float | None:
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        return None
    if rope_type == "linear":
        if "factor" not in params:
            raise ConfigError(f"config.json {where} has rope_type='linear' but no factor")
        check_scaling_numbers(params)
        return float(params["factor"])
    raise ConfigError(
        f"config.json {where} has rope_type={rope_type!r}; eqxllm's Gemma implements 'default' and 'linear' only"
    )


def _rope_from_hf(hf: dict[str, Any], gen: int) -> dict[str, Any]:
    legacy = dict(hf.get("rope_scaling") or {})
    if "type" in legacy:  # the key's name before transformers 4.45
        legacy.setdefault("rope_type", legacy.pop("type"))
    if gen < 3:  # transformers: `rope_scaling or rope_parameters`, then rope_theta as the fallback base
        params = legacy or hf.get("rope_parameters") or {}
        theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
        return dict(rope_theta=float(theta), rope_scaling=_linear_factor(params, "rope_parameters"))
    nested = hf.get("rope_parameters") or {}
    full = {**(nested.get(FULL) or {}), **legacy}
    local = dict(nested.get(SLIDING) or {})
    if _linear_factor(local, "rope_parameters.sliding_attention") is not None:
        raise ConfigError("config.json scales the rotary positions of sliding layers; Gemma 3 scales global ones only")
    return dict(
        rope_theta=float(full.get("rope_theta", hf.get("rope_theta", 1_000_000.0))),
        rope_local_base_freq=float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0))),
        rope_scaling=_linear_factor(full, "rope_scaling / rope_parameters.full_attention"),
    )


def _layer_types(hf: dict[str, Any], gen: int, num_layers: int) -> tuple[str, ...]:
    if hf.get("layer_types") is not None:
        return tuple(hf["layer_types"])  # GemmaConfig names any unknown type
    return default_layer_types(gen, num_layers, sliding_window_pattern=_pattern(hf))


def _pattern(hf: dict[str, Any]) -> int:
    return hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))


# GemmaConfig -> config.json --------------------------------------------------------------------------
def _number(x: float | int | None) -> float | int | None:
    # transformers' strict configs type some of these as int (query_pre_attn_scalar, sliding_window)
    return int(x) if x is not None and float(x).is_integer() else x


def config_to_hf(cfg: GemmaConfig) -> dict[str, Any]:
    gen = cfg.generation
    out: dict[str, Any] = {"architectures": [_ARCHITECTURES[gen]], "model_type": cfg.model_type}
    out.update({name: getattr(cfg, name) for name in _SHARED_FIELDS})
    if isinstance(cfg.eos_token_id, tuple):
        out["eos_token_id"] = list(cfg.eos_token_id)
    out["attention_dropout"] = 0.0
    out["hidden_act" if gen == 1 else "hidden_activation"] = hf_activation(cfg.hidden_activation)
    scaling = None if cfg.rope_scaling is None else {"rope_type": "linear", "factor": cfg.rope_scaling}
    full = (
        {"rope_type": "default", "rope_theta": cfg.rope_theta}
        if scaling is None
        else {**scaling, "rope_theta": cfg.rope_theta}
    )
    if gen < 3:
        out["rope_parameters"] = full
    else:
        local = {"rope_type": "default", "rope_theta": cfg.local_rope_theta}
        out["rope_parameters"] = {FULL: full, SLIDING: local}
        out["rope_local_base_freq"] = cfg.local_rope_theta
        out["sliding_window_pattern"] = legacy_pattern(cfg) or cfg.sliding_window_pattern
    out["rope_theta"] = cfg.rope_theta  # for transformers before 5
    if scaling is not None:
        out["rope_scaling"] = scaling
    if gen >= 2:
        # written even when None: transformers' Gemma 2 defaults would otherwise turn the caps on
        out["query_pre_attn_scalar"] = _number(
            cfg.head_dim if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar
        )
        out["sliding_window"] = _number(cfg.sliding_window)
        out["layer_types"] = list(cfg.layer_types)  # type: ignore[arg-type]
        if legacy_pattern(cfg) is None:
            warnings.warn(
                f"layer_types {list(cfg.layer_types or ())} follow no sliding_window_pattern: transformers 5 "
                "loads this config.json as saved, but older releases that ignore layer_types (4.51 does) "
                f"make {'every other layer' if gen == 2 else 'every sliding_window_pattern-th layer'} global",
                stacklevel=2,
            )
        out["final_logit_softcapping"] = cfg.final_logit_softcapping
        out["attn_logit_softcapping"] = cfg.attn_logit_softcapping
    return out


def legacy_pattern(cfg: GemmaConfig) -> int | None:
    """The pattern that gives ``cfg.layer_types`` in transformers before 5, which ignores
    ``layer_types`` (Gemma 2 alternates, Gemma 3 reads ``sliding_window_pattern``); None if none does.
    The config's own pattern is preferred where several give the same layers."""
    n, gen = cfg.num_hidden_layers, cfg.generation
    if gen == 2:
        return 2 if cfg.layer_types == default_layer_types(2, n) else None
    # pattern 1 makes every layer global; any pattern above the depth makes every layer sliding
    for pattern in (cfg.sliding_window_pattern, *range(1, n + 2)):
        if default_layer_types(3, n, sliding_window_pattern=pattern) == cfg.layer_types:
            return pattern
    return None


# weights ---------------------------------------------------------------------------------------------
def key_map(cfg: GemmaConfig) -> KeyMap:
    return decoder_key_map(cfg.decoder)  # the table shared with the llama-like families


_SKIPPED = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
_RENAMES = (  # multimodal Gemma 3 (transformers < 5, then 5), then base-model checkpoints without "model."
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.language_model.", "model."),
    *BASE_MODEL_RENAMES,
)


def normalize_keys(tensors: dict[str, np.ndarray], cfg: GemmaConfig) -> dict[str, np.ndarray]:
    """Bring every accepted layout to ``Gemma*ForCausalLM`` keys, skip vision weights, and drop a
    stored copy of a tied head (it must equal the embedding)."""
    return drop_decoder_tied_head(rename_keys(tensors, _RENAMES, skip=_SKIPPED), cfg.tie_word_embeddings)


def _family():
    from eqxllm.checkpoints.registry import Family
    from eqxllm.models.gemma import Gemma

    return Family(
        model_types=("gemma", "gemma2", "gemma3_text", "gemma3"),
        config_cls=GemmaConfig,
        model_cls=Gemma,
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        key_map=key_map,
        normalize_keys=normalize_keys,
    )


FAMILY = _family()

"""GPT-2 <-> Hugging Face ``GPT2LMHeadModel`` / ``GPT2Model`` checkpoints.

Keys: ``transformer.`` prefix optional on load, written on save; ``c_attn`` holds q, k and v side by
side; every ``Conv1D`` stores its weight ``[in, out]`` (the transpose of ``nn.Linear``); the
``attn.bias``/``attn.masked_bias`` causal-mask buffers are ignored; a tied head is not stored.
"""

from typing import Any

import numpy as np

from eqxllm.checkpoints.keymap import KeyMap, drop_tied_head, param, transpose, transpose_back
from eqxllm.errors import ConfigError, ShapeMismatchError
from eqxllm.models.gpt2 import GPT2Config
from eqxllm.nn.activations import hf_activation

_HF_FIELDS = (
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "layer_norm_epsilon",
    "initializer_range",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "reorder_and_upcast_attn",
)
_EQXLLM_FIELDS = ("use_bias", "mlp", "pad_vocab_multiple")
# a gated MLP (mlp="swiglu") has no transformers counterpart: saved under this model_type, which
# transformers refuses to load, rather than as "gpt2", which it would load with the gate dropped
GATED_MODEL_TYPE = "eqxllm_gpt2"


def config_from_hf(hf: dict[str, Any]) -> GPT2Config:
    """Translate a Hugging Face GPT-2 ``config.json``; options that change the maths and that eqxllm
    does not implement are refused rather than silently ignored."""
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise ConfigError("scale_attn_by_inverse_layer_idx=true is not supported by eqxllm's GPT-2")
    if hf.get("scale_attn_weights") is False:
        raise ConfigError("scale_attn_weights=false is not supported by eqxllm's GPT-2")
    kwargs = {k: hf[k] for k in _HF_FIELDS if k in hf and hf[k] is not None}
    kwargs.update({k: v for k, v in hf.get("eqxllm", {}).items() if k in _EQXLLM_FIELDS})
    return GPT2Config(**kwargs)


def config_to_hf(cfg: GPT2Config) -> dict[str, Any]:
    if (
        cfg.mlp != GPT2Config().mlp
    ):  # never "gpt2": transformers would load it, drop the gate, and compute another model
        out: dict[str, Any] = {"model_type": GATED_MODEL_TYPE}
    else:
        out = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    out.update({k: getattr(cfg, k) for k in _HF_FIELDS})
    out["n_ctx"] = cfg.n_positions
    out["activation_function"] = hf_activation(cfg.activation_function)
    extras = {k: getattr(cfg, k) for k in _EQXLLM_FIELDS if getattr(cfg, k) != getattr(GPT2Config(), k)}
    if extras:  # no transformers equivalent: kept so that eqxllm restores the model exactly
        out["eqxllm"] = extras
    return out


def _split3(x: np.ndarray) -> tuple[np.ndarray, ...]:
    # c_attn: [in, 3*embd] (or [3*embd] bias) -> q, k, v in nn.Linear layout
    if x.shape[-1] % 3:
        raise ShapeMismatchError(
            f"a fused attention tensor (c_attn) has shape {tuple(x.shape)}: its last axis, {x.shape[-1]}, "
            "must hold query, key and value (3 * n_embd); the weights are not GPT-2's or config.json disagrees"
        )
    parts = np.split(x, 3, axis=-1)
    return tuple(np.ascontiguousarray(p.T) for p in parts)


def _join3(xs: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([x.T for x in xs], axis=-1))


def _pad_rows(cfg: GPT2Config):
    def to_model(x: np.ndarray) -> tuple[np.ndarray, ...]:
        if x.shape[0] != cfg.vocab_size:  # padding is only ever added by eqxllm, from vocab_size rows
            raise ShapeMismatchError(
                f"an embedding/head table (wte or lm_head) has {x.shape[0]} rows but config.json says "
                f"vocab_size={cfg.vocab_size}; the two must match (rows beyond the weights would be zeros "
                "that sampling emits)"
            )
        pad = cfg.padded_vocab_size - x.shape[0]
        return (np.pad(x, ((0, pad), (0, 0))) if pad > 0 else x,)

    def to_hf(xs: tuple[np.ndarray, ...]) -> np.ndarray:
        return xs[0][: cfg.vocab_size]

    return {"to_model": to_model, "to_hf": to_hf}


def key_map(cfg: GPT2Config) -> KeyMap:
    n = cfg.n_layer
    blk = lambda m: m.blocks.blocks  # noqa: E731
    p = [
        param("transformer.wte.weight", lambda m: m.wte.weight, **_pad_rows(cfg)),
        param("transformer.wpe.weight", lambda m: m.wpe.weight),
        param("transformer.ln_f.weight", lambda m: m.ln_f.weight),
        param(
            "transformer.h.{i}.attn.c_attn.weight",
            lambda m: blk(m).attn.q_proj.weight,
            lambda m: blk(m).attn.k_proj.weight,
            lambda m: blk(m).attn.v_proj.weight,
            num_layers=n,
            to_model=_split3,
            to_hf=_join3,
        ),
        param(
            "transformer.h.{i}.attn.c_proj.weight",
            lambda m: blk(m).attn.o_proj.weight,
            num_layers=n,
            to_model=transpose,
            to_hf=transpose_back,
        ),
        param("transformer.h.{i}.ln_1.weight", lambda m: blk(m).ln_1.weight, num_layers=n),
        param("transformer.h.{i}.ln_2.weight", lambda m: blk(m).ln_2.weight, num_layers=n),
        param(
            "transformer.h.{i}.mlp.c_fc.weight",
            lambda m: blk(m).mlp.up.weight,
            num_layers=n,
            to_model=transpose,
            to_hf=transpose_back,
        ),
        param(
            "transformer.h.{i}.mlp.c_proj.weight",
            lambda m: blk(m).mlp.down.weight,
            num_layers=n,
            to_model=transpose,
            to_hf=transpose_back,
        ),
    ]
    if cfg.mlp == "swiglu":
        p.append(
            param(
                "transformer.h.{i}.mlp.c_gate.weight",
                lambda m: blk(m).mlp.gate.weight,
                num_layers=n,
                to_model=transpose,
                to_hf=transpose_back,
            )
        )
    if cfg.use_bias:
        p += [
            param("transformer.ln_f.bias", lambda m: m.ln_f.bias),
            param(
                "transformer.h.{i}.attn.c_attn.bias",
                lambda m: blk(m).attn.q_proj.bias,
                lambda m: blk(m).attn.k_proj.bias,
                lambda m: blk(m).attn.v_proj.bias,
                num_layers=n,
                to_model=lambda x: tuple(np.split(x, 3)),
                to_hf=lambda xs: np.concatenate(xs),
            ),
            param("transformer.h.{i}.attn.c_proj.bias", lambda m: blk(m).attn.o_proj.bias, num_layers=n),
            param("transformer.h.{i}.ln_1.bias", lambda m: blk(m).ln_1.bias, num_layers=n),
            param("transformer.h.{i}.ln_2.bias", lambda m: blk(m).ln_2.bias, num_layers=n),
            param("transformer.h.{i}.mlp.c_fc.bias", lambda m: blk(m).mlp.up.bias, num_layers=n),
            param("transformer.h.{i}.mlp.c_proj.bias", lambda m: blk(m).mlp.down.bias, num_layers=n),
        ]
        if cfg.mlp == "swiglu":
            p.append(param("transformer.h.{i}.mlp.c_gate.bias", lambda m: blk(m).mlp.gate.bias, num_layers=n))
    if not cfg.tie_word_embeddings:
        p.append(param("lm_head.weight", lambda m: m.lm_head.weight, **_pad_rows(cfg)))
    return KeyMap(params=p, ignore=(".attn.bias", ".attn.masked_bias"))


def normalize_keys(tensors: dict[str, np.ndarray], cfg: GPT2Config) -> dict[str, np.ndarray]:
    """Accept ``GPT2Model`` checkpoints (no ``transformer.`` prefix) as well as ``GPT2LMHeadModel`` ones,
    and drop a stored copy of a tied head (it must equal the embedding)."""
    out = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v for k, v in tensors.items()}
    return drop_tied_head(out, cfg.tie_word_embeddings, "transformer.wte.weight")


def _family():
    from eqxllm.checkpoints.registry import Family
    from eqxllm.models.gpt2 import GPT2

    return Family(
        model_types=("gpt2", GATED_MODEL_TYPE),
        config_cls=GPT2Config,
        model_cls=GPT2,
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        key_map=key_map,
        normalize_keys=normalize_keys,
    )


FAMILY = _family()

"""T5 <-> Hugging Face ``T5ForConditionalGeneration`` / ``T5Model`` checkpoints (transformers v4 and v5).

Keys: ``shared.weight`` is the one embedding; ``encoder.embed_tokens.weight`` and
``decoder.embed_tokens.weight`` are aliases of it (v4 ``.bin`` conversions store them, safetensors
saves usually do not) and are accepted when equal to it. The relative-position table lives in block
0 of each stack (``{encoder,decoder}.block.0.layer.0.SelfAttention.relative_attention_bias.weight``);
old checkpoints also carry an unused one in the decoder's first cross-attention, which is ignored.
The feed-forward is ``wi``/``wo`` (ReLU) or ``wi_0`` (gate) / ``wi_1`` / ``wo`` (gated).

Head tying and scaling: transformers v4 reads ``tie_word_embeddings`` as "tied head and decoder
output scaled by ``d_model**-0.5``" (v1.0: true; v1.1 and Flan: false, with ``lm_head.weight``
stored). Transformers v5 always writes ``tie_word_embeddings: true`` and keeps the scaling in
``scale_decoder_outputs``; whether the head is tied is then told only by the weights (an
``lm_head.weight`` that differs from ``shared.weight``). eqxllm reads a config with
``scale_decoder_outputs: false`` as untied, and, as v5 does, takes a missing ``lm_head.weight`` from
``shared.weight``. Writing, both fields are set so that v4 and v5 agree.

The original Transformer (sinusoidal positions, post-norm LayerNorm with biases, feed-forward
biases, separate embeddings) has no transformers counterpart: such configs are written with
``model_type: "eqxllm_transformer"`` (which transformers refuses to load, as it should) and T5-style
keys plus ``layer_norm.bias``, ``DenseReluDense.*.bias`` and ``decoder.embed_tokens.weight``.
"""

from operator import attrgetter
from typing import Any

import numpy as np

from eqxllm.checkpoints.keymap import KeyMap, Param, param
from eqxllm.errors import CheckpointError, ConfigError, MissingKeyError
from eqxllm.models.t5_config import T5Config

_HF_FIELDS = (
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "dropout_rate",
    "layer_norm_epsilon",
    "initializer_factor",
    "feed_forward_proj",
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
)
# the Transformer switches, written under "eqxllm" when they differ from T5's defaults
_SWITCHES = ("positions", "norm", "scale_attention", "scale_embeddings", "share_embeddings", "ffn_bias")
_EQXLLM_FIELDS = (*_SWITCHES, "tie_word_embeddings", "scale_decoder_outputs")
TRANSFORMER_MODEL_TYPE = "eqxllm_transformer"


def config_from_hf(hf: dict[str, Any]) -> T5Config:
    """Translate a transformers T5 ``config.json`` (v4 or v5), an mT5 one (Xue et al., 2021: T5 v1.1's
    architecture with a multilingual vocabulary, which saves back as ``t5``), or an eqxllm Transformer one."""
    kwargs = {k: hf[k] for k in _HF_FIELDS if hf.get(k) is not None}
    if isinstance(kwargs.get("eos_token_id"), list):  # v5 allows several; keep the first (the sampler's stop id)
        eos = kwargs.pop("eos_token_id")
        kwargs.update({"eos_token_id": eos[0]} if eos else {})
    kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id", 0))
    if hf.get("num_decoder_layers") not in (None, hf.get("num_layers", T5Config.num_layers)):
        kwargs["num_decoder_layers"] = hf["num_decoder_layers"]
    tie = bool(hf.get("tie_word_embeddings", True))
    # mT5 never scales its decoder outputs (transformers' MT5 has no such step, whatever the tying)
    scale = bool(hf.get("scale_decoder_outputs", tie and hf.get("model_type") != "mt5"))
    # v4: one flag for both; v5: tie is always true and scale_decoder_outputs=false marks v1.1/Flan,
    # whose head is untied (a head missing from the weights is then filled from `shared`)
    kwargs["tie_word_embeddings"] = tie and scale
    kwargs.update({k: v for k, v in hf.get("eqxllm", {}).items() if k in _EQXLLM_FIELDS})
    if kwargs.get("scale_decoder_outputs", scale) != kwargs["tie_word_embeddings"]:  # None: T5's rule
        kwargs["scale_decoder_outputs"] = kwargs.get("scale_decoder_outputs", scale)
    if hf.get("model_type") in ("t5", "mt5") and not T5Config(**kwargs).hf_expressible:
        raise ConfigError("config.json says model_type 't5' but its 'eqxllm' options describe another architecture")
    return T5Config(**kwargs)


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
    out: dict[str, Any] = {"model_type": "t5"}
    if cfg.hf_expressible:
        out["architectures"] = ["T5ForConditionalGeneration"]
    else:  # never "t5": transformers would build the wrong model without complaint
        out["model_type"] = TRANSFORMER_MODEL_TYPE
    out.update({k: getattr(cfg, k) for k in _HF_FIELDS})
    out["num_decoder_layers"] = cfg.decoder_layers
    out["is_encoder_decoder"] = True
    out["tie_word_embeddings"] = cfg.tie_word_embeddings
    out["scale_decoder_outputs"] = cfg.scales_decoder_outputs
    default = T5Config()
    extras = {k: getattr(cfg, k) for k in _SWITCHES if getattr(cfg, k) != getattr(default, k)}
    if cfg.tie_word_embeddings and not cfg.scales_decoder_outputs:
        # config_from_hf reads "unscaled" as "untied" (v5's v1.1); say explicitly that this head is tied
        extras.update(tie_word_embeddings=True, scale_decoder_outputs=False)
    if extras:
        out["eqxllm"] = extras
    return out


def _ffn_names(cfg: T5Config) -> list[tuple[str, str]]:
    return [("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")] if cfg.gated else [("wi", "up"), ("wo", "down")]


def entry(hf_key: str, leaf: str, num_layers: int = 0) -> Param:
    """``hf_key`` fills the model leaf at the dotted attribute path ``leaf``."""
    return param(hf_key, attrgetter(leaf), num_layers=num_layers)


def stack_params(cfg: T5Config, side: str) -> list[Param]:
    decoder = side == "decoder"
    n = cfg.decoder_layers if decoder else cfg.num_layers
    hf, ours = f"{side}.block.{{i}}.layer", f"{side}.layers.blocks"
    # (sub-layer index, transformers module, our attention, our norm); the feed-forward comes last
    subs = [("0", "SelfAttention", "self_attn", "self_norm")]
    if decoder:
        subs.append(("1", "EncDecAttention", "cross_attn", "cross_norm"))
    ffn = "2" if decoder else "1"
    p = [
        entry(f"{hf}.{i}.{mod}.{x}.weight", f"{ours}.{attn}.{x}_proj.weight", n)
        for i, mod, attn, _ in subs
        for x in "qkvo"
    ]
    norm_params = ("weight", "bias") if cfg.norm == "layer_post" else ("weight",)
    for i, norm in [(i, norm) for i, _, _, norm in subs] + [(ffn, "ffn_norm")]:
        p += [entry(f"{hf}.{i}.layer_norm.{w}", f"{ours}.{norm}.{w}", n) for w in norm_params]
    ffn_params = ("weight", "bias") if cfg.ffn_bias else ("weight",)
    for hf_name, name in _ffn_names(cfg):
        p += [entry(f"{hf}.{ffn}.DenseReluDense.{hf_name}.{w}", f"{ours}.ffn.{name}.{w}", n) for w in ffn_params]
    if cfg.positions == "relative":
        p.append(
            entry(
                f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", f"{side}.relative_bias.weight"
            )
        )
    if cfg.norm == "rms_pre":
        p.append(entry(f"{side}.final_layer_norm.weight", f"{side}.final_norm.weight"))
    return p


def key_map(cfg: T5Config) -> KeyMap:
    p = [entry("shared.weight", "shared.weight")]
    if not cfg.share_embeddings:
        p.append(entry("decoder.embed_tokens.weight", "decoder_embed.weight"))
    p += stack_params(cfg, "encoder") + stack_params(cfg, "decoder")
    if not cfg.tie_word_embeddings:
        p.append(entry("lm_head.weight", "lm_head.weight"))
    return KeyMap(params=p, ignore=("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",))


def pop_alias(out: dict[str, np.ndarray], alias: str, target: str, hint: str) -> None:
    """Drop ``alias`` if it equals ``target`` (filling ``target`` from it when absent)."""
    if alias not in out:
        return
    value = out.pop(alias)
    if target not in out:
        out[target] = value
    elif out[target].shape != value.shape or not np.array_equal(out[target], value):
        raise CheckpointError(f"checkpoint tensor {alias!r} differs from {target!r}, which it should equal; {hint}")


def check_has_decoder(tensors: dict[str, np.ndarray]) -> None:
    """Raise :class:`MissingKeyError` for encoder weights without a decoder (a ``T5EncoderModel``
    checkpoint asked to load as the encoder-decoder), saying how to load them instead."""
    if any(k.startswith("decoder.") for k in tensors) or not any(k.startswith("encoder.") for k in tensors):
        return
    raise MissingKeyError(
        "the checkpoint holds a T5 encoder alone (encoder.* tensors, no decoder.*), as transformers' "
        "T5EncoderModel writes it, so it cannot load as the encoder-decoder eqxllm.models.T5, whose decoder it "
        "lacks. Load it as eqxllm.models.T5Encoder: eqxllm.checkpoints.t5_encoder.encoder_from_pretrained(src), "
        'or eqxllm.from_pretrained(src) once config.json says "architectures": ["T5EncoderModel"]'
    )


def normalize_keys(tensors: dict[str, np.ndarray], cfg: T5Config) -> dict[str, np.ndarray]:
    """Fold the ``embed_tokens`` aliases into ``shared.weight``, drop a stored copy of a tied head,
    and fill an untied head missing from the file from ``shared.weight`` (transformers v5 does the same).
    An encoder-only checkpoint (``T5EncoderModel``'s) is refused with :class:`MissingKeyError` naming
    the missing decoder and the loaders that read it."""
    check_has_decoder(tensors)
    out = dict(tensors)
    hint = "the checkpoint was not written by T5ForConditionalGeneration with this config.json"
    pop_alias(out, "encoder.embed_tokens.weight", "shared.weight", hint)
    if cfg.share_embeddings:
        pop_alias(out, "decoder.embed_tokens.weight", "shared.weight", hint)
    head_source = "shared.weight" if cfg.share_embeddings else "decoder.embed_tokens.weight"
    if cfg.tie_word_embeddings and "lm_head.weight" in out:
        pop_alias(
            out, "lm_head.weight", head_source,
            "config.json says the head is tied (tie_word_embeddings true, decoder outputs scaled). If the head "
            'is really separate, set "tie_word_embeddings": false in config.json (and "scale_decoder_outputs": '
            "true if the outputs are scaled)",
        )  # fmt: skip
    if not cfg.tie_word_embeddings and "lm_head.weight" not in out and head_source in out:
        out["lm_head.weight"] = out[head_source]
    return out


def _family():
    from eqxllm.checkpoints.registry import Family
    from eqxllm.models.t5 import T5

    return Family(
        model_types=("t5", "mt5", TRANSFORMER_MODEL_TYPE),  # mT5: T5 v1.1's architecture, saved back as "t5"
        config_cls=T5Config,
        model_cls=T5,
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        key_map=key_map,
        normalize_keys=normalize_keys,
    )


FAMILY = _family()

"""T5's encoder alone <-> Hugging Face ``T5EncoderModel`` / ``MT5EncoderModel`` checkpoints.

``config.json`` is a T5 one (``model_type`` ``"t5"`` or ``"mt5"``, read by
:func:`eqxllm.checkpoints.t5.config_from_hf`) whose ``architectures`` names ``T5EncoderModel`` or
``MT5EncoderModel``: that list is what tells it from an encoder-decoder checkpoint of the same
``model_type`` (:mod:`eqxllm.checkpoints.registry`). The weights are ``shared.weight`` and the
encoder's keys exactly as in :mod:`eqxllm.checkpoints.t5`; ``encoder.embed_tokens.weight`` (an alias
of ``shared.weight`` that v4 ``.bin`` conversions store) is accepted when equal to it.

Writing follows transformers 5's ``T5EncoderModel.save_pretrained``: ``shared.weight`` only (not its
tied alias), ``architectures: ["T5EncoderModel"]`` and ``is_encoder_decoder: false``, the other fields
as a T5 checkpoint writes them (an mT5 encoder is written as ``t5``: the encoders are the same
architecture). The original Transformer's encoder keeps ``model_type: "eqxllm_transformer"``.

:func:`encoder_from_pretrained` reads the encoder out of any T5 checkpoint, an encoder-decoder's too
(its decoder and head tensors are skipped, as ``T5EncoderModel.from_pretrained`` skips them).
"""

import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from eqxllm.checkpoints import t5 as t5_checkpoints
from eqxllm.checkpoints.keymap import KeyMap
from eqxllm.errors import CheckpointError
from eqxllm.models.t5_config import T5Config

ARCHITECTURES = ("T5EncoderModel", "MT5EncoderModel")
# tensors of an encoder-decoder checkpoint that the encoder has no place for
_NOT_ENCODER = ("decoder.", "lm_head.")


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
    out = t5_checkpoints.config_to_hf(cfg)
    out["architectures"] = ["T5EncoderModel"]
    out["is_encoder_decoder"] = False
    return out


def key_map(cfg: T5Config) -> KeyMap:
    return KeyMap(
        params=[t5_checkpoints.entry("shared.weight", "shared.weight"), *t5_checkpoints.stack_params(cfg, "encoder")]
    )


def normalize_keys(tensors: dict[str, np.ndarray], cfg: T5Config) -> dict[str, np.ndarray]:
    """Drop an encoder-decoder's decoder and head tensors, and fold ``encoder.embed_tokens.weight``
    into ``shared.weight`` (which it must equal)."""
    out = {k: v for k, v in tensors.items() if not k.startswith(_NOT_ENCODER)}
    hint = "the checkpoint was not written by T5EncoderModel with this config.json"
    t5_checkpoints.pop_alias(out, "encoder.embed_tokens.weight", "shared.weight", hint)
    return out


def encoder_from_pretrained(src: str | os.PathLike, *, dtype: Any = jnp.float32, revision: str | None = None):
    """The :class:`~eqxllm.models.T5Encoder` of a T5 checkpoint (a Hub repo id or a local directory):
    an encoder-only one (``T5EncoderModel``) or an encoder-decoder one (``T5ForConditionalGeneration``,
    ``T5Model``, mT5), whose decoder is never allocated. ``dtype`` as in :func:`eqxllm.from_pretrained`;
    a checkpoint of another family raises :class:`CheckpointError`."""
    from eqxllm.checkpoints.api import load_family, read_config_json, weight_dtype
    from eqxllm.checkpoints.hub import resolve_pretrained

    dtype = weight_dtype(dtype, "dtype")
    directory = resolve_pretrained(src, revision=revision)
    hf = read_config_json(directory)
    if hf.get("model_type") not in FAMILY.model_types:
        raise CheckpointError(
            f"{directory / 'config.json'} has model_type {hf.get('model_type')!r}; a T5 encoder loads from "
            f"one of {list(FAMILY.model_types)}"
        )
    return load_family(FAMILY, directory, hf, dtype)


def _family():
    from eqxllm.checkpoints.registry import Family
    from eqxllm.models.t5_encoder import T5Encoder

    return Family(
        model_types=("t5", "mt5", t5_checkpoints.TRANSFORMER_MODEL_TYPE),
        config_cls=T5Config,
        model_cls=T5Encoder,
        config_from_hf=t5_checkpoints.config_from_hf,
        config_to_hf=config_to_hf,
        key_map=key_map,
        normalize_keys=normalize_keys,
        architectures=ARCHITECTURES,
    )


FAMILY = _family()

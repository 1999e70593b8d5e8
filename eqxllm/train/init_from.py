"""Starting a run from a pretrained checkpoint (``--init-from DIR|HUB_ID``), and the model a run trains.

The checkpoint fixes the architecture: its ``config.json`` becomes the run's model config, its weights
the first step's weights, and its tokenizer the run's (:mod:`eqxllm.train.tokenizer_source`). Only
fields that change how the same weights are *trained*, not what they compute, may be set: the
run-time options of :mod:`eqxllm.models.runtime_options` (dropout rates, rematerialisation, the
attention implementation, the experts' dispatch, a T5-VAE's loss-only fields). Nested configs (a
T5-VAE's ``t5``) are compared field by field under dotted names (``t5.dropout_rate``). A family added
later needs no entry here as long as its field names follow that pattern.
"""

from collections.abc import Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from eqxllm.checkpoints.api import check_finite, checkpoint_family, load_config
from eqxllm.checkpoints.checkpoint_dir import read_checkpoint
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.checkpoints.keymap import load_into
from eqxllm.checkpoints.registry import family_for_config
from eqxllm.errors import ConfigError
from eqxllm.lora import apply_lora, cast_frozen
from eqxllm.models import T5Encoder
from eqxllm.models.runtime_options import RUNTIME_OPTIONS_TEXT, config_fields, is_runtime_option, with_field

# the stream key that draws the adapters' A matrices (independent of the model init key's other uses)
_LORA_STREAM = 7


def _flag(name: str) -> str:
    return "--model." + name.replace("_", "-")


def refuse_fixed(names: Iterable[str], src: str) -> None:
    """Raise ``ConfigError`` naming the flags among model field ``names`` that a checkpoint fixes."""
    fixed = sorted(k for k in names if not is_runtime_option(k))
    if fixed:
        raise ConfigError(
            f"{', '.join(_flag(k) for k in fixed)} cannot be set with --init-from: the checkpoint {src} fixes "
            f"the architecture; {RUNTIME_OPTIONS_TEXT}"
        )


def refuse_encoder_alone(src: str, what: str) -> None:
    """Raise ``ConfigError`` when checkpoint ``src`` is T5's encoder alone (``T5EncoderModel``): it
    gives hidden states, with no decoder to predict tokens, so no task trains or scores it."""
    family, _ = checkpoint_family(src)
    if family.model_cls is T5Encoder:
        raise ConfigError(
            f"{src} is T5's encoder alone (T5EncoderModel): it gives hidden states and has no decoder to "
            f"predict tokens, so {what}; load it with eqxllm.from_pretrained for its states, or start from "
            "a whole T5 checkpoint (T5ForConditionalGeneration)"
        )


def checkpoint_config(src: str, changes: dict[str, Any] | None = None) -> Any:
    """The model config of checkpoint ``src`` with ``changes`` (dotted field name -> value) applied; a
    change to a field the checkpoint fixes raises ``ConfigError`` naming its flag. An encoder alone
    (:func:`refuse_encoder_alone`) is refused: no task trains it."""
    refuse_encoder_alone(src, "no eqxllm task trains it (lm, seq2seq and vae train language models)")
    cfg = load_config(src)
    changes = changes or {}
    refuse_fixed(changes, src)
    unknown = sorted(set(changes) - set(config_fields(cfg)))
    if unknown:
        raise ConfigError(f"{type(cfg).__name__} has no field(s) {unknown}")
    for name, value in changes.items():
        cfg = with_field(cfg, name, value)
    return cfg


def check_model_matches(model_cfg: Any, src: str) -> None:
    """Raise ``ConfigError`` unless ``model_cfg`` is checkpoint ``src``'s config up to changeable fields."""
    ckpt = load_config(src)
    if type(ckpt) is not type(model_cfg):
        raise ConfigError(
            f"--init-from {src} holds a {ckpt.model_type!r} model but the run's model config is "
            f"{type(model_cfg).__name__}; leave the model to the checkpoint"
        )
    want, got = config_fields(ckpt), config_fields(model_cfg)
    differ = [k for k in want if not is_runtime_option(k) and want[k] != got[k]]
    if differ:
        shown = ", ".join(f"{_flag(k)}={got[k]!r} (checkpoint: {want[k]!r})" for k in differ[:4])
        raise ConfigError(
            f"{shown} cannot be set with --init-from: the checkpoint {src} fixes the architecture; "
            + RUNTIME_OPTIONS_TEXT
        )


def load_weights(model_cfg: Any, src: str) -> Any:
    """The checkpoint's weights in a model built from ``model_cfg`` (so changeable fields apply)."""
    directory = resolve_pretrained(src)
    family = family_for_config(model_cfg)
    tensors = read_checkpoint(directory)
    check_finite(tensors, directory)  # NaN weights would show up only as a NaN loss, blamed on the learning rate
    tensors = family.normalize_keys(tensors, model_cfg)
    skeleton = eqx.filter_eval_shape(family.model_cls, model_cfg, key=jax.random.key(0))
    return load_into(skeleton, family.key_map(model_cfg), tensors, jnp.float32)


def initial_model(cfg: Any, model_cfg: Any, key: PRNGKeyArray) -> Any:
    """The model of a run's first step: random (``key``) or the ``init_from`` checkpoint, with LoRA
    adapters when ``cfg.lora.rank > 0``. Weights are float32 (the trainer's master copy)."""
    if cfg.init_from is None:
        model = family_for_config(model_cfg).model_cls(model_cfg, key=key)
    else:
        check_model_matches(model_cfg, cfg.init_from)
        model = load_weights(model_cfg, cfg.init_from)
    if cfg.lora.enabled:
        lo = cfg.lora
        model = apply_lora(
            model,
            rank=lo.rank,
            alpha=lo.alpha,
            targets=lo.targets,
            dropout=lo.dropout,
            key=jax.random.fold_in(key, _LORA_STREAM),
        )
        if lo.base_dtype == "bfloat16":
            model = cast_frozen(model, jnp.bfloat16)
    return model

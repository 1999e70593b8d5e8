"""Starting a run from a pretrained checkpoint (``--init-from DIR|HUB_ID``), and the model a run trains.

The checkpoint fixes the architecture: its ``config.json`` becomes the run's model config, its weights
the first step's weights, its tokenizer (``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``
with their special tokens) the run's tokenizer, and its end-of-sequence id separates the training
examples. Only fields that change how the same weights are *trained*, not what they compute, may be
set: dropout rates, rematerialisation and the attention implementation (:data:`CHANGEABLE`). A family
added later needs no entry here as long as its field names follow that pattern.
"""

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from eqxllm.checkpoints.api import load_config
from eqxllm.checkpoints.checkpoint_dir import read_checkpoint
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.checkpoints.keymap import load_into
from eqxllm.checkpoints.registry import family_for_config
from eqxllm.data.tokenizer import find_tokenizer
from eqxllm.errors import ConfigError, DataError
from eqxllm.lora import apply_lora, cast_frozen

# model config fields that an --init-from run may set (dropout rates, remat, attention kernel)
CHANGEABLE = re.compile(r"(pdrop|dropout|dropout_rate|^remat$|^attention_impl$)")

# the stream key that draws the adapters' A matrices (independent of the model init key's other uses)
_LORA_STREAM = 7


def changeable(name: str) -> bool:
    return bool(CHANGEABLE.search(name))


def _flag(name: str) -> str:
    return "--model." + name.replace("_", "-")


def refuse_fixed(names: Iterable[str], src: str) -> None:
    """Raise ``ConfigError`` naming the flags among model field ``names`` that a checkpoint fixes."""
    fixed = sorted(k for k in names if not changeable(k))
    if fixed:
        raise ConfigError(
            f"{', '.join(_flag(k) for k in fixed)} cannot be set with --init-from: the checkpoint {src} fixes "
            f"the architecture; only dropout rates, remat and attention_impl may change"
        )


def checkpoint_config(src: str, changes: dict[str, Any] | None = None) -> Any:
    """The model config of checkpoint ``src`` with ``changes`` (field name -> value) applied; a change to a
    field the checkpoint fixes raises ``ConfigError`` naming its flag."""
    cfg = load_config(src)
    changes = changes or {}
    refuse_fixed(changes, src)
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(cfg)})
    if unknown:
        raise ConfigError(f"{type(cfg).__name__} has no field(s) {unknown}")
    return dataclasses.replace(cfg, **changes)


def check_model_matches(model_cfg: Any, src: str) -> None:
    """Raise ``ConfigError`` unless ``model_cfg`` is checkpoint ``src``'s config up to changeable fields."""
    ckpt = load_config(src)
    if type(ckpt) is not type(model_cfg):
        raise ConfigError(
            f"--init-from {src} holds a {ckpt.model_type!r} model but the run's model config is "
            f"{type(model_cfg).__name__}; leave the model to the checkpoint"
        )
    differ = [
        f.name
        for f in dataclasses.fields(ckpt)
        if not changeable(f.name) and getattr(ckpt, f.name) != getattr(model_cfg, f.name)
    ]
    if differ:
        shown = ", ".join(
            f"{_flag(k)}={getattr(model_cfg, k)!r} (checkpoint: {getattr(ckpt, k)!r})" for k in differ[:4]
        )
        raise ConfigError(
            f"{shown} cannot be set with --init-from: the checkpoint {src} fixes the architecture; "
            "only dropout rates, remat and attention_impl may change"
        )


def checkpoint_tokenizer(src: str) -> tuple[Any, int]:
    """The checkpoint's tokenizer and the end-of-sequence id that separates examples."""
    directory = resolve_pretrained(src)
    tok = find_tokenizer(directory)
    if tok is None:
        found = sorted(p.name for p in Path(directory).iterdir())[:12]
        raise DataError(
            f"--init-from {src}: {directory} holds no tokenizer (tokenizer.json, or vocab.json + merges.txt); "
            f"found {found}. Save the tokenizer beside the weights"
        )
    eos = load_config(src).eos_token_id
    eos = eos[0] if isinstance(eos, list | tuple) else eos
    if eos is None:
        raise DataError(f"--init-from {src}: config.json has no eos_token_id to separate training examples")
    return tok, int(eos)


def load_weights(model_cfg: Any, src: str) -> Any:
    """The checkpoint's weights in a model built from ``model_cfg`` (so changeable fields apply)."""
    directory = resolve_pretrained(src)
    family = family_for_config(model_cfg)
    tensors = family.normalize_keys(read_checkpoint(directory), model_cfg)
    skeleton = eqx.filter_eval_shape(family.model_cls, model_cfg, key=jax.random.key(0))
    return load_into(skeleton, family.key_map(model_cfg), tensors, jnp.float32)


def initial_model(cfg: Any, model_cfg: Any, key: PRNGKeyArray) -> Any:
    """The model of a run's first step: random (``key``) or the ``init_from`` checkpoint, with LoRA
    adapters when ``cfg.lora.rank > 0``. Weights are float32 (the trainer's master copy)."""
    if cfg.init_from is None:
        model = family_for_config(model_cfg).model_cls(model_cfg, key=key)
    else:
        if cfg.task != "lm":  # the other tasks train their own tokenizer, which would not match the weights
            raise ConfigError(f"--init-from supports the 'lm' task (decoder-only models) so far, not {cfg.task!r}")
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

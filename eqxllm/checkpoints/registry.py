"""Which family handles which ``model_type``: config translation and key map, looked up by name.

Each family's checkpoint module (``eqxllm/checkpoints/<family>.py``) defines ``FAMILY``; adding a
family is one line in ``_FAMILY_MODULES``. Two families may share a ``model_type`` when
``config.json``'s ``architectures`` tells them apart (T5's encoder-decoder and its encoder alone, as
``T5EncoderModel``): the family that names an architecture of the file wins, else the one that names
none.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from eqxllm.checkpoints.keymap import KeyMap
from eqxllm.errors import UnknownModelTypeError

_FAMILY_MODULES = (
    "eqxllm.checkpoints.gpt2",
    "eqxllm.checkpoints.gemma",
    "eqxllm.checkpoints.llama",
    "eqxllm.checkpoints.t5",
    "eqxllm.checkpoints.t5_encoder",
    "eqxllm.checkpoints.t5_vae",
)


@dataclass(frozen=True)
class Family:
    """Everything checkpoint code knows of a model family."""

    model_types: tuple[str, ...]
    config_cls: type
    model_cls: type
    config_from_hf: Callable[[dict[str, Any]], Any]
    config_to_hf: Callable[[Any], dict[str, Any]]
    key_map: Callable[[Any], KeyMap]
    normalize_keys: Callable[[dict[str, np.ndarray], Any], dict[str, np.ndarray]]
    # transformers classes (config.json "architectures") that select this family over the default
    # family of the same model_type; empty: the default (also for configs that name no architecture)
    architectures: tuple[str, ...] = ()


@cache
def families() -> tuple[Family, ...]:
    # imported lazily so that `import eqxllm` stays cheap and families stay independent
    return tuple(importlib.import_module(name).FAMILY for name in _FAMILY_MODULES)


def family_for_model_type(model_type: Any, source: str, architectures: Any = ()) -> Family:
    """The family of ``model_type``; where two share it, the one naming one of ``architectures``
    (``config.json``'s list; anything else is ignored), else the one naming none."""
    named = {a for a in architectures if isinstance(a, str)} if isinstance(architectures, list | tuple) else set()
    matching = [fam for fam in families() if model_type in fam.model_types]
    for fam in sorted(matching, key=lambda f: not f.architectures):  # specific families first
        if not fam.architectures or named & set(fam.architectures):
            return fam
    known = sorted(t for fam in families() for t in fam.model_types)
    if model_type is None:
        raise UnknownModelTypeError(f"{source} has no 'model_type'; expected one of {known}")
    raise UnknownModelTypeError(
        f"{source} names model_type={model_type!r}, which eqxllm does not implement; known: {known}"
    )


def family_for_config(config: Any) -> Family:
    """The default family of a config type (``T5Config``: the encoder-decoder ``T5``)."""
    for fam in families():
        if isinstance(config, fam.config_cls) and not fam.architectures:
            return fam
    raise UnknownModelTypeError(f"no eqxllm family has config type {type(config).__name__}")


def family_for_model(model: Any) -> Family:
    """The family of a model: the one whose model class it is (a ``T5Encoder`` and a ``T5`` share
    ``T5Config``), else that of its config."""
    for fam in families():
        if isinstance(model, fam.model_cls):
            return fam
    return family_for_config(model.config)

"""Which family handles which ``model_type``: config translation and key map, looked up by name.

Each family's checkpoint module (``eqxllm/checkpoints/<family>.py``) defines ``FAMILY``; adding a
family is one line in ``_FAMILY_MODULES``.
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


@cache
def families() -> tuple[Family, ...]:
    # imported lazily so that `import eqxllm` stays cheap and families stay independent
    return tuple(importlib.import_module(name).FAMILY for name in _FAMILY_MODULES)


def family_for_model_type(model_type: Any, source: str) -> Family:
    for fam in families():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for fam in families() for t in fam.model_types)
    if model_type is None:
        raise UnknownModelTypeError(f"{source} has no 'model_type'; expected one of {known}")
    raise UnknownModelTypeError(
        f"{source} names model_type={model_type!r}, which eqxllm does not implement; known: {known}"
    )


def family_for_config(config: Any) -> Family:
    for fam in families():
        if isinstance(config, fam.config_cls):
            return fam
    raise UnknownModelTypeError(f"no eqxllm family has config type {type(config).__name__}")

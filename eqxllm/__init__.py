"""eqxllm: language models in Equinox — build, train, shard, convert and sample.

>>> import eqxllm
>>> model = eqxllm.from_pretrained("gpt2")          # Hub id or a local Hugging Face directory
>>> logits = model(input_ids)                        # one sequence; jax.vmap for a batch
>>> eqxllm.save_pretrained(model, "out/")            # transformers loads it as is
"""

import importlib

from eqxllm import models, nn
from eqxllm.checkpoints import from_pretrained, load_config, load_generation_config, save_pretrained
from eqxllm.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    EqxllmError,
    InputError,
)
from eqxllm.generation import generate
from eqxllm.models.runtime_options import reconfigure

__version__ = "0.1.0"

# subpackages imported on first use, so that `import eqxllm` stays cheap and `eqxllm.lora.apply_lora`
# works without importing eqxllm.lora first
_SUBPACKAGES = ("checkpoints", "cli", "data", "generation", "lora", "train", "vae")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"eqxllm.{name}")
    raise AttributeError(f"module 'eqxllm' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EqxllmError",
    "InputError",
    "from_pretrained",
    "generate",
    "load_config",
    "load_generation_config",
    "models",
    "nn",
    "reconfigure",
    "save_pretrained",
]

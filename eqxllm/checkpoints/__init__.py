"""Checkpoints: Hugging Face safetensors <-> eqxllm models (one key map per family), Hub resolution."""

from eqxllm.checkpoints.api import from_pretrained, load_config, load_generation_config, save_pretrained

__all__ = ["from_pretrained", "load_config", "load_generation_config", "save_pretrained"]

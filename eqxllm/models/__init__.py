"""Model families, each a frozen config plus modules composed from :mod:`eqxllm.nn`."""

from eqxllm.models.gemma import GEMMA_PRESETS, Gemma, GemmaConfig
from eqxllm.models.gpt2 import GPT2, GPT2_PRESETS, GPT2Config
from eqxllm.models.llama import LLAMA_PRESETS, Llama, LlamaConfig
from eqxllm.models.t5 import T5, T5_PRESETS, T5Config
from eqxllm.models.t5_encoder import T5Encoder
from eqxllm.models.t5_vae import T5VAE, T5VAE_PRESETS, T5VAEConfig

PRESETS = {**GPT2_PRESETS, **GEMMA_PRESETS, **LLAMA_PRESETS, **T5_PRESETS, **T5VAE_PRESETS}


def config_preset(name: str):
    """A config by preset name (``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-tiny"``, ...)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None


__all__ = [
    "GPT2",
    "GPT2Config",
    "Gemma",
    "GemmaConfig",
    "LLAMA_PRESETS",
    "Llama",
    "LlamaConfig",
    "PRESETS",
    "T5",
    "T5Config",
    "T5Encoder",
    "T5_PRESETS",
    "T5VAE",
    "T5VAEConfig",
    "T5VAE_PRESETS",
    "config_preset",
]

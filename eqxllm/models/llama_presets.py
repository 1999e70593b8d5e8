"""Named llama-like configs, as data: a base config per family plus the fields each size changes.

Sizes come from the ``config.json`` files on the Hugging Face Hub of meta-llama/Llama-2-7b-hf,
Llama-3.1-8B, Llama-3.2-1B, openlm-research/open_llama_3b, mistralai/Mistral-7B-v0.1,
mistralai/Mixtral-8x7B-v0.1, Qwen/Qwen2.5-0.5B and Qwen/Qwen3-0.6B. The tiny presets are for tests
and CPU runs.
"""

from functools import partial
from typing import Any

from eqxllm.models.llama_config import LlamaConfig

_LLAMA3_SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                       original_max_position_embeddings=8192)  # fmt: skip
_BASES: dict[str, LlamaConfig] = {
    "llama2": LlamaConfig(vocab_size=32000, rms_norm_eps=1e-5, max_position_embeddings=4096, pad_token_id=None),
    "llama3": LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_key_value_heads=8, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=_LLAMA3_SCALING, max_position_embeddings=131072, bos_token_id=128000,
        eos_token_id=128001,
    ),
    "mistral": LlamaConfig(
        model_type="mistral", intermediate_size=14336, num_key_value_heads=8, rms_norm_eps=1e-5,
        max_position_embeddings=32768, sliding_window=4096,
    ),
    "mixtral": LlamaConfig(
        model_type="mixtral", intermediate_size=14336, num_key_value_heads=8, rms_norm_eps=1e-5,
        max_position_embeddings=32768, rope_theta=1e6, num_local_experts=8, num_experts_per_tok=2,
    ),
    "qwen2": LlamaConfig(
        model_type="qwen2", vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
        bos_token_id=151643, eos_token_id=151643, tie_word_embeddings=True, max_window_layers=28,
    ),
    "qwen3": LlamaConfig(
        model_type="qwen3", vocab_size=151936, max_position_embeddings=40960, rope_theta=1e6, head_dim=128,
        bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True, max_window_layers=28,
    ),
}  # fmt: skip
_TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)  # fmt: skip

# name -> (base, the fields that change)
PRESET_CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-2-7b": ("llama2", {}),
    "llama-3.1-8b": ("llama3", dict(num_hidden_layers=32)),
    "llama-3.2-1b": ("llama3", dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, head_dim=64, tie_word_embeddings=True,
        rope_scaling=dict(_LLAMA3_SCALING, factor=32.0),
    )),
    "open-llama-3b": ("llama2", dict(
        hidden_size=3200, intermediate_size=8640, num_hidden_layers=26, max_position_embeddings=2048,
        rms_norm_eps=1e-6, pad_token_id=0,
    )),
    "mistral-7b": ("mistral", {}),
    "mixtral-8x7b": ("mixtral", {}),
    "qwen2.5-0.5b": ("qwen2", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_window_layers=24,
    )),
    "qwen3-0.6b": ("qwen3", dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, max_window_layers=28,
    )),
    "llama-tiny": ("llama2", _TINY),
    "mistral-tiny": ("mistral", dict(_TINY, sliding_window=8)),
    "mixtral-tiny": ("mixtral", dict(_TINY, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2-tiny": ("qwen2", dict(_TINY, max_window_layers=2)),
    "qwen3-tiny": ("qwen3", dict(_TINY, head_dim=32, max_window_layers=2)),
}  # fmt: skip


def llama_preset(name: str) -> LlamaConfig:
    base, changes = PRESET_CHANGES[name]
    return _BASES[base].replace(**changes)


LLAMA_PRESETS = {name: partial(llama_preset, name) for name in PRESET_CHANGES}

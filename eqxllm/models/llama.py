"""Llama 1/2/3.x, OpenLLaMA, Mistral, Qwen2/2.5, Qwen3 and Mixtral: Touvron et al. (2023a, 2023b),
"LLaMA" and "Llama 2"; Meta (2024), "The Llama 3 Herd of Models"; Geng & Liu (2023), "OpenLLaMA";
Jiang et al. (2023, 2024), "Mistral 7B" and "Mixtral of Experts"; Qwen Team (2024, 2025), "Qwen2
Technical Report", "Qwen3 Technical Report".

How this family differs: pre-norm blocks with a plain RMSNorm (``x * w``, computed in float32), no
embedding scale, rotary positions (optionally scaled: ``linear`` or Llama 3.1's ``llama3``), a
SwiGLU MLP, grouped-query attention with ``head_dim`` independent of the width, and an untied
output head (tied in the small Llama 3.2 and Qwen models). Mistral attends over a sliding window on
every layer; Qwen2 adds biases to the query/key/value projections (not the output); Qwen3 drops
them and adds RMSNorms on each query and key head; Mixtral replaces the MLP by a top-2 mixture of
eight experts. Gemma is the same decoder with its own switches (:mod:`eqxllm.models.gemma`).
"""

from eqxllm.models.decoder import DecoderLM
from eqxllm.models.llama_config import LlamaConfig
from eqxllm.models.llama_presets import LLAMA_PRESETS

__all__ = ["LLAMA_PRESETS", "Llama", "LlamaConfig"]


class Llama(DecoderLM):
    """A llama-like language model (any ``model_type`` of :class:`LlamaConfig`): token ids ``[seq]``
    -> next-token logits ``[seq, vocab]``; the shared decoder with the switches of
    :attr:`LlamaConfig.decoder`."""

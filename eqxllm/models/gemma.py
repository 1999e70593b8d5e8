"""Gemma 1, 2 and 3 (text): Gemma Team (2024a, 2024b, 2025), "Gemma: Open Models Based on Gemini
Research and Technology", "Gemma 2: Improving Open Language Models at a Practical Size", "Gemma 3
Technical Report".

How this family differs: RMSNorm with a ``1 + w`` scale (zero-initialised weights), computed in
float32; token embeddings multiplied by ``sqrt(hidden_size)`` (rounded to the activation dtype, as
the reference does); rotary positions; a GeGLU MLP with tanh GELU; multi-query or grouped-query
attention whose ``head_dim`` is independent of the width; the output head tied to the embedding.
Gemma 2 adds norms after attention and after the MLP, tanh soft-caps on attention logits and final
logits, ``query_pre_attn_scalar**-0.5`` as attention scale, and alternating sliding-window (local)
and global layers. Gemma 3 adds RMSNorms on queries and keys, drops the soft-caps, and gives local
layers their own rotary base (10k) while global layers use ``rope_theta`` (1M) with optional linear
scaling; its layer pattern is five local layers per global one.

All of this is switches of the decoder shared with Llama, Mistral and Qwen
(:mod:`eqxllm.models.decoder`); this file only names it.
"""

from eqxllm.models.decoder import DecoderBlock, DecoderLM
from eqxllm.models.gemma_config import GEMMA_PRESETS, GemmaConfig

__all__ = ["GEMMA_PRESETS", "Gemma", "GemmaBlock", "GemmaConfig"]

GemmaBlock = DecoderBlock  # the shared block, under the name it had before the decoder was shared


class Gemma(DecoderLM):
    """A Gemma language model (any generation): token ids ``[seq]`` -> next-token logits ``[seq, vocab]``.

    The shared llama-like decoder (:class:`eqxllm.models.decoder.DecoderLM`) with Gemma's switches:
    see :attr:`GemmaConfig.decoder`."""

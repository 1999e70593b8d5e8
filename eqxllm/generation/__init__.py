"""Generating text: greedy decoding and sampling (temperature, top-k, top-p, min-p; a repetition
penalty) over a KV cache.

>>> tokens = eqxllm.generate(model, prompt_ids, max_new_tokens=64)                       # greedy
>>> tokens = eqxllm.generate(model, prompt_ids, max_new_tokens=64, temperature=0.8,
...                          top_k=50, top_p=0.95, key=jax.random.key(0))                 # sampled
>>> for chunk in eqxllm.generation.stream(model, prompt_ids, max_new_tokens=64): ...      # as it comes
>>> tokens = eqxllm.generation.beam_search(model, prompt_ids, max_new_tokens=64, num_beams=4)
>>> eqxllm.generation.text_log_likelihoods(model, tokenizer, ["Tom ran.", "Ran Tom."])    # fluency

``sampling`` chooses one token from logits, ``penalty`` pushes down the tokens already seen,
``prompts`` checks and left-pads the input, ``loop`` holds the compiled prefill + ``lax.while_loop``
shared by every family; ``beam`` searches over any decoder cache; ``score`` rates whole texts.
"""

from eqxllm.generation.api import generate, sequence_lengths, stream
from eqxllm.generation.beam import beam_search, beam_search_cached
from eqxllm.generation.sampling import Sampler, make_sampler, nucleus_mask
from eqxllm.generation.score import text_log_likelihoods

__all__ = [
    "Sampler",
    "beam_search",
    "beam_search_cached",
    "generate",
    "make_sampler",
    "nucleus_mask",
    "sequence_lengths",
    "stream",
    "text_log_likelihoods",
]

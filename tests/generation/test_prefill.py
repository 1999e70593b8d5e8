"""The prefill makes the logits of the prompt's last token only: ``decode_last`` gives ``decode``'s last
row, and the compiled prefill holds no ``[seq, vocab]`` logits (for a 262,144-token vocabulary they
would be gigabytes for a long prompt). A chunked prefill gives the same tokens (sampling and beam
search) and holds one chunk's attention at a time."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import InputError
from eqxllm.generation import beam, beam_search, loop
from eqxllm.generation.sampling import make_sampler
from tests.generation._helpers import tiny_gpt2

SEQ, VOCAB = 384, 8192


def test_decode_last_is_the_last_row_of_decode():
    model = tiny_gpt2(0)
    ids, mask = jnp.arange(3, 13), jnp.arange(10) >= 2  # left-padded
    decode, decode_last = (eqx.filter_jit(f) for f in (type(model).decode, type(model).decode_last))
    logits, cache = decode(model, ids, model.init_cache(16), mask=mask)
    last, last_cache = decode_last(model, ids, model.init_cache(16), mask=mask)
    np.testing.assert_allclose(np.asarray(last), np.asarray(logits[-1]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(last_cache.k), np.asarray(cache.k))


def _prefill_temp(model, seq: int, chunk: int | None) -> int:
    vocab = model.config.vocab_size
    sampler = make_sampler(temperature=1.0, top_k=None, top_p=None, min_p=None, has_key=False, vocab_size=vocab)
    decoder = loop.Decoder(
        model=model, sampler=sampler, stop_ids=jnp.asarray([0]), pad_id=jnp.asarray(0),
        cache_dtype=jnp.float32, prefill_chunk=chunk,
    )  # fmt: skip
    dynamic, static = eqx.partition(decoder, eqx.is_array)
    prefill = jax.jit(lambda d, ids, mask: eqx.combine(d, static).prefill(ids, mask, 4)[0])
    ids, mask = jnp.zeros((1, seq), jnp.int32), jnp.ones((1, seq), bool)
    return prefill.lower(dynamic, ids, mask).compile().memory_analysis().temp_size_in_bytes


def test_a_chunked_prefill_gives_the_same_tokens():
    model = tiny_gpt2(1)
    prompts = [[5, 9, 14, 3, 7, 11, 2], [8, 2]]  # left-padded: a chunk of the second prompt is all padding
    whole = eqxllm.generate(model, prompts, max_new_tokens=6, eos_token_id=())
    for chunk in (3, 7):  # one token, then two chunks of 3; one chunk: the plain prefill
        np.testing.assert_array_equal(
            eqxllm.generate(model, prompts, max_new_tokens=6, eos_token_id=(), prefill_chunk=chunk), whole
        )
    with pytest.raises(InputError, match="prefill_chunk must be an integer >= 1"):
        eqxllm.generate(model, prompts, max_new_tokens=6, prefill_chunk=0)


def test_a_chunked_prefill_gives_the_same_beams():
    model = tiny_gpt2(2)
    prompts = [[5, 9, 14, 3, 7, 11, 2, 8], [8, 2, 40, 6, 1, 17, 30, 9]]
    options = dict(max_new_tokens=6, num_beams=3, eos_token_id=4, return_all=True, return_scores=True)
    whole, scores = beam_search(model, prompts, **options)
    # 7 tokens fill the cache before the search: one token then two chunks of 3; one chunk of 7
    for chunk in (3, 7):
        tokens, chunk_scores = beam_search(model, prompts, prefill_chunk=chunk, **options)
        np.testing.assert_array_equal(tokens, whole)
        np.testing.assert_allclose(chunk_scores, scores, atol=1e-5)
    with pytest.raises(InputError, match="prefill_chunk must be an integer >= 1"):
        beam_search(model, prompts, max_new_tokens=6, prefill_chunk=0)


def _beam_prefill_temp(model, seq: int, chunk: int | None) -> int:
    """The temporaries of the compiled cache that a beam search of one ``seq``-token prompt starts from."""
    dynamic, static = eqx.partition(model, eqx.is_array)
    fill = jax.jit(lambda m, ids: beam.prompt_cache(eqx.combine(m, static), ids, 4, chunk)[0])
    return fill.lower(dynamic, jnp.zeros((seq,), jnp.int32)).compile().memory_analysis().temp_size_in_bytes


@pytest.fixture(scope="module")
def long_model():
    """A model with room for a long prompt and a large vocabulary, where a prefill's memory shows."""
    return tiny_gpt2(0, vocab_size=VOCAB, n_positions=SEQ + 8)


def test_the_prefill_holds_one_row_of_logits_and_a_chunked_one_a_chunk_s_attention(long_model):
    model = long_model
    whole, chunked, every_logit = _prefill_temp(model, SEQ, None), _prefill_temp(model, SEQ, 32), SEQ * VOCAB * 4
    assert whole < every_logit / 2, (
        f"the prefill holds {whole} bytes of temporaries; every position's logits are {every_logit}"
    )
    assert chunked < whole / 3, (chunked, whole)


def test_a_chunked_beam_search_prefill_holds_a_chunk_s_attention(long_model):
    model = long_model
    whole, chunked = _beam_prefill_temp(model, SEQ, None), _beam_prefill_temp(model, SEQ, 32)
    attention = model.config.n_head * SEQ * SEQ * 4  # one layer's float32 scores over the whole prompt
    # the chunks save more than the whole prompt's scores, and the chunked search holds less than them
    assert chunked < attention < whole - chunked, (whole, attention, chunked)

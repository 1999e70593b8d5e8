"""The decoding loop: cached logits, batches of mixed lengths, stopping, streaming, no retracing,
and the encoder-decoder path."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.generation import loop, make_sampler, sequence_lengths, stream

from ._helpers import FakeSeq2Seq, FakeSeq2SeqConfig, tiny_gpt2

PROMPTS = [[5, 17, 99, 3], [42], [8, 7, 6, 5, 4, 3, 2, 1, 100]]
NEVER = ()  # no stop id: no early stop


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


def _decoder(model, stops=()):
    sampler = make_sampler(has_key=False, vocab_size=model.config.vocab_size)
    return loop.Decoder(
        model=model,
        sampler=sampler,
        stop_ids=jnp.asarray(stops, jnp.int32).reshape(-1),
        pad_id=jnp.asarray(0, jnp.int32),
        cache_dtype=jnp.float32,
    )


def test_cached_logits_equal_the_full_forward_at_every_step(model):
    """Prefill of a left-padded batch, then step by step: each step's logits equal the uncached
    forward of the whole (unpadded) sequence so far."""
    new = 6
    decoder = _decoder(model)
    ids, mask = _left_pad(PROMPTS)
    logits, cache = eqx.filter_jit(lambda d, i, m: d.prefill(i, m, new))(decoder, ids, mask)
    step = eqx.filter_jit(lambda d, t, c: d.decode(t, c))
    cached, chosen = [], []
    for t in range(new):
        cached.append(np.asarray(logits))
        tokens = jnp.argmax(logits, -1).astype(jnp.int32)
        chosen.append(np.asarray(tokens))
        if t < new - 1:
            logits, cache = step(decoder, tokens, cache)
    # The model is causal: one forward of each final sequence gives every prefix's logits. Right
    # padding (after the last real token) changes none of them, so the rows go in one batch.
    seqs = [list(p) + [int(c[row]) for c in chosen[:-1]] for row, p in enumerate(PROMPTS)]
    full = np.asarray(eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(model, _right_pad(seqs)))
    for row, p in enumerate(PROMPTS):
        for t in range(new):
            np.testing.assert_allclose(cached[t][row], full[row, len(p) - 1 + t], atol=1e-4, rtol=0)
    assert len({int(c[0]) for c in chosen}) > 1


def test_mixed_length_batch_equals_each_prompt_alone(model):
    free = np.asarray(eqxllm.generate(model, PROMPTS, max_new_tokens=8, eos_token_id=NEVER))
    eos = int(free[0, 2])  # some rows stop early, others do not
    batch = np.asarray(eqxllm.generate(model, PROMPTS, max_new_tokens=8, eos_token_id=eos))
    assert batch.shape == (len(PROMPTS), 8)
    assert (batch != free).any() and (batch == free).any(axis=1).all()
    for row, p in enumerate(PROMPTS):
        alone = eqxllm.generate(model, jnp.asarray(p), max_new_tokens=8, eos_token_id=eos)
        np.testing.assert_array_equal(batch[row], np.asarray(alone))


def test_stop_tokens_pad_and_lengths(model):
    prompt = jnp.asarray(PROMPTS[0])
    free = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=10, eos_token_id=NEVER))
    stop = int(free[3])
    first = int(np.argmax(free == stop))
    tokens, length = eqxllm.generate(
        model, prompt, max_new_tokens=10, eos_token_id=(), stop_token_ids=[stop], pad_token_id=199,
        return_lengths=True,
    )  # fmt: skip
    tokens = np.asarray(tokens)
    np.testing.assert_array_equal(tokens[: first + 1], free[: first + 1])
    np.testing.assert_array_equal(tokens[first + 1 :], 199)
    assert int(length) == first + 1
    # the default pad is the (first) EOS id; with no stop id, every token counts
    by_eos = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=10, eos_token_id=stop))
    np.testing.assert_array_equal(by_eos[first:], stop)
    assert int(sequence_lengths(jnp.asarray(free), [])) == 10
    one = eqxllm.generate(model, prompt, max_new_tokens=1, eos_token_id=NEVER)
    np.testing.assert_array_equal(np.asarray(one), free[:1])


def test_the_loop_is_traced_once_per_shape(model):
    traces = []
    listener = lambda name, *_, **__: traces.append(name) if name.endswith("jaxpr_trace_duration") else None
    kwargs = dict(max_new_tokens=6, top_k=7, eos_token_id=())
    eqxllm.generate(
        model, jnp.asarray([[1, 2, 3], [4, 5, 6]]), temperature=0.7, top_p=0.9, key=jax.random.key(0), **kwargs
    )
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        # new prompt values, temperature, top_p and key; same shapes, top_k and max_new_tokens
        out = eqxllm.generate(
            model, jnp.asarray([[9, 8, 7], [6, 5, 4]]), temperature=1.3, top_p=0.5, key=jax.random.key(1), **kwargs
        )
        out.block_until_ready()
    finally:
        jax._src.monitoring.unregister_event_duration_listener(listener)
    assert traces == []


def test_same_key_same_tokens_and_stream_gives_them_chunk_by_chunk(model):
    kwargs = dict(max_new_tokens=11, temperature=1.5, top_k=50, key=jax.random.key(3), eos_token_id=())
    full = np.asarray(eqxllm.generate(model, PROMPTS, **kwargs))
    np.testing.assert_array_equal(full, np.asarray(eqxllm.generate(model, PROMPTS, **kwargs)))
    other = np.asarray(eqxllm.generate(model, PROMPTS, **{**kwargs, "key": jax.random.key(4)}))
    assert (full != other).any()
    chunks = list(stream(model, PROMPTS, chunk_size=4, **kwargs))
    assert [c.shape[1] for c in chunks] == [1, 4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), full)


def test_stream_ends_when_every_sequence_stopped(model):
    prompt = jnp.asarray(PROMPTS[0])
    free = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=10, eos_token_id=NEVER))
    eos = int(free[1])
    first = int(np.argmax(free == eos))
    chunks = list(stream(model, prompt, max_new_tokens=10, chunk_size=3, eos_token_id=eos))
    assert all(c.ndim == 1 for c in chunks)
    assert len(chunks) == 1 + (first + 2) // 3  # no chunk after the one holding the EOS
    np.testing.assert_array_equal(np.concatenate(chunks)[: first + 1], free[: first + 1])


def test_encoder_decoder_runs_the_encoder_once_and_starts_from_the_start_token():
    config = FakeSeq2SeqConfig()
    model = FakeSeq2Seq(config, key=jax.random.key(0))
    prompts = [[4, 9, 1, 30], [2], [11, 12, 13, 14, 15, 16, 17]]
    new = 7
    batch = np.asarray(eqxllm.generate(model, prompts, max_new_tokens=new))
    for row, prompt in enumerate(prompts):
        ref = _seq2seq_greedy(model, prompt, new)
        np.testing.assert_array_equal(batch[row], ref)
        alone = np.asarray(eqxllm.generate(model, jnp.asarray(prompt), max_new_tokens=new))
        np.testing.assert_array_equal(alone, ref)
    assert len(set(batch.ravel().tolist())) > 3
    # the decoder's context bounds max_new_tokens, not prompt + new tokens
    long = eqxllm.generate(model, jnp.arange(20) % config.vocab_size, max_new_tokens=config.max_positions)
    assert long.shape == (config.max_positions,)


def _seq2seq_greedy(model: FakeSeq2Seq, prompt: list[int], new: int) -> list[int]:
    """Greedy decoding by hand, in numpy, recomputing the fake model's forward from scratch each step."""
    enc, dec, out = (np.asarray(a, np.float64) for a in (model.enc_embed, model.dec_embed, model.out))
    memory = np.tanh(enc[prompt]).mean(0)
    tokens = [model.config.decoder_start_token_id]
    for _ in range(new):
        tokens.append(int(np.argmax((memory + dec[tokens].mean(0)) @ out)))
    return tokens[1:]


def _right_pad(seqs):
    out = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return jnp.asarray(out)


def _left_pad(prompts):
    seq = max(map(len, prompts))
    ids = np.zeros((len(prompts), seq), np.int32)
    mask = np.zeros((len(prompts), seq), bool)
    for i, p in enumerate(prompts):
        ids[i, seq - len(p) :] = p
        mask[i, seq - len(p) :] = True
    return jnp.asarray(ids), jnp.asarray(mask)

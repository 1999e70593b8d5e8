"""Beam search over a decoder cache: greedy at one beam, exact on a vocabulary small enough to enumerate
(``test_beam_transformers_parity.py`` checks it against transformers' search)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import InputError
from eqxllm.generation import beam_search
from tests.generation._helpers import FakeSeq2Seq, FakeSeq2SeqConfig, tiny_gpt2

EOS = 1


@pytest.fixture(scope="module")
def gpt2():
    return tiny_gpt2(seed=1, eos_token_id=EOS)


@pytest.fixture(scope="module")
def small():
    # 4 tokens (1 the end token) and 3 steps: every continuation can be listed
    return tiny_gpt2(seed=2, vocab_size=4, eos_token_id=EOS)


def test_one_beam_is_greedy_decoding(gpt2):
    prompts = jnp.array([[5, 9, 17], [40, 2, 3]])
    greedy = eqxllm.generate(gpt2, prompts, max_new_tokens=6)
    assert (beam_search(gpt2, prompts, max_new_tokens=6, num_beams=1) == greedy).all()
    one = beam_search(gpt2, prompts[0], max_new_tokens=6, num_beams=1)  # one prompt: no batch axis
    assert one.shape == (6,) and (one == greedy[0]).all()


def test_one_beam_is_greedy_for_an_encoder_decoder_too():
    model = FakeSeq2Seq(FakeSeq2SeqConfig(eos_token_id=EOS), key=jax.random.key(0))
    prompts = jnp.array([[4, 8, 15], [16, 23, 4]])
    greedy = eqxllm.generate(model, prompts, max_new_tokens=5)
    assert (beam_search(model, prompts, max_new_tokens=5, num_beams=1) == greedy).all()


def _every_output(vocab, steps):
    for n in range(1, steps + 1):
        for words in itertools.product(range(vocab), repeat=n):
            ends = [i for i, t in enumerate(words) if t == EOS]
            if (ends and ends[0] == n - 1) or (not ends and n == steps):  # ends at its stop token, or runs out
                yield list(words)


@pytest.mark.parametrize("stop", [False, True, "never"])
@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_a_wide_enough_beam_finds_the_best_continuation(small, alpha, stop):
    """16 beams over 4 tokens and 3 steps lose no hypothesis that could be the best: each hypothesis
    that ends at step 1 or 2 ranks among the first 16 candidates (there are at most 12), so it joins the
    pool, and so does the likeliest 3-token one (all 3-token ones end at max_new_tokens, and the
    likeliest ranks first); the pool of 16 is not full before the last step, so no early_stopping
    mode stops sooner. The result must be the best of every possible output, by its normalised score."""
    steps, prompt = 3, jnp.array([2, 3, 0])
    tokens, score = beam_search(
        small, prompt, max_new_tokens=steps, num_beams=16, length_penalty=alpha, early_stopping=stop,
        return_scores=True,
    )  # fmt: skip
    seqs = list(_every_output(4, steps))
    ids = jnp.asarray([prompt.tolist() + q + [0] * (steps - len(q)) for q in seqs])
    logp = np.asarray(jax.nn.log_softmax(jax.vmap(small)(ids)))  # position 2 + t predicts q[t]
    scores = [sum(logp[row, 2 + t, q[t]] for t in range(len(q))) / len(q) ** alpha for row, q in enumerate(seqs)]
    best = seqs[int(np.argmax(scores))]
    assert np.asarray(tokens).tolist() == best + [EOS] * (steps - len(best))
    assert float(score) == pytest.approx(max(scores), abs=1e-4)


def test_all_beams_come_best_first_and_options_are_checked(gpt2):
    tokens, scores = beam_search(gpt2, jnp.array([5, 9]), max_new_tokens=4, num_beams=3, return_all=True,
                                 return_scores=True)  # fmt: skip
    assert tokens.shape == (3, 4) and (np.diff(np.asarray(scores)) <= 0).all()
    with pytest.raises(InputError, match="num_beams"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, num_beams=0)
    with pytest.raises(InputError, match="length_penalty"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, length_penalty=-1.0)
    with pytest.raises(InputError, match="early_stopping"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, early_stopping="always")
    with pytest.raises(InputError, match="context"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=64)
    with pytest.raises(InputError, match="vocabulary"):
        beam_search(gpt2, jnp.array([500]), max_new_tokens=4)

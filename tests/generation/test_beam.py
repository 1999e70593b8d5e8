"""Beam search over a decoder cache: greedy at one beam, exact on a vocabulary small enough to enumerate
(``test_beam_transformers_parity.py`` checks it against transformers' search)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import InputError
from eqxllm.generation import beam_search, beam_search_cached
from eqxllm.generation.beam import stopping_mode
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


def test_prompts_of_different_lengths_get_the_search_each_gets_alone(gpt2):
    prompts = [[5, 9, 17, 30, 2], [40, 2], [7]]  # left-padded with id 0 to one batch
    # a penalty below 1 makes every seen token far likelier: padding seen as id 0 would show in the beams
    # (as padding attended to would change every row's logits)
    options = dict(max_new_tokens=6, num_beams=3, return_all=True, return_scores=True, repetition_penalty=0.01)
    tokens, scores = beam_search(gpt2, prompts, **options)
    assert tokens.shape == (3, 3, 6)
    for i, prompt in enumerate(prompts):
        alone, alone_scores = beam_search(gpt2, jnp.asarray(prompt), **options)
        np.testing.assert_array_equal(tokens[i], alone)
        np.testing.assert_allclose(scores[i], alone_scores, atol=1e-5)


def test_an_encoder_decoder_searches_prompts_of_different_lengths_as_alone():
    model = FakeSeq2Seq(FakeSeq2SeqConfig(eos_token_id=EOS), key=jax.random.key(0))
    prompts = [[4, 8, 15, 16], [23, 4]]
    tokens = beam_search(model, prompts, max_new_tokens=5, num_beams=3, return_all=True)
    for i, prompt in enumerate(prompts):
        np.testing.assert_array_equal(
            tokens[i], beam_search(model, jnp.asarray(prompt), max_new_tokens=5, num_beams=3, return_all=True)
        )


def _every_output(vocab, steps):
    for n in range(1, steps + 1):
        for words in itertools.product(range(vocab), repeat=n):
            ends = [i for i, t in enumerate(words) if t == EOS]
            if (ends and ends[0] == n - 1) or (not ends and n == steps):  # ends at its stop token, or runs out
                yield list(words)


WIDE = [(alpha, stop, 1.0) for alpha in (1.0, 0.0) for stop in (False, True, "never")]
WIDE += [
    (-1.0, "never", 1.0),
    (1.0, False, 1.5),
    (-1.0, False, 0.7),
]  # (length_penalty, early_stopping, repetition_penalty)


@pytest.mark.parametrize(("alpha", "stop", "penalty"), WIDE)
def test_a_wide_enough_beam_finds_the_best_continuation(small, alpha, stop, penalty):
    """16 beams over 4 tokens and 3 steps lose no hypothesis that could be the best: each hypothesis
    that ends at step 1 or 2 ranks among the first 16 candidates (there are at most 12), so it joins the
    pool, and so does the likeliest 3-token one (all 3-token ones end at max_new_tokens, and the
    likeliest ranks first); the pool of 16 is not full before the last step, so no early_stopping
    mode stops sooner. The result must be the best of every possible output, by its normalised score.
    With a repetition penalty a token's log-probability is penalised when the prompt or the tokens
    before it in that output hold it: a beam that penalised by another beam's tokens would score wrong."""
    # with a penalty, a prompt that leaves 3 unseen (so that the beams' seen tokens differ), whose last
    # token (the search's first input) is not its only one (which the search would see anyway)
    steps, prompt = 3, jnp.array([2, 3, 0] if penalty == 1.0 else [0, 0, 2])
    pool, pool_scores = beam_search(
        small, prompt, max_new_tokens=steps, num_beams=16, length_penalty=alpha, early_stopping=stop,
        repetition_penalty=penalty, return_scores=True, return_all=True,
    )  # fmt: skip
    seqs = list(_every_output(4, steps))
    ids = jnp.asarray([prompt.tolist() + q + [0] * (steps - len(q)) for q in seqs])
    logp = np.asarray(jax.nn.log_softmax(jax.vmap(small)(ids)))  # position 2 + t predicts q[t]

    def term(row, q, t):  # log p(q[t]), penalised (a log-probability is < 0: times the penalty) if seen
        return logp[row, 2 + t, q[t]] * (penalty if q[t] in prompt.tolist() + q[:t] else 1.0)

    scores = [sum(term(row, q, t) for t in range(len(q))) / len(q) ** alpha for row, q in enumerate(seqs)]
    best = seqs[int(np.argmax(scores))]
    assert np.asarray(pool[0]).tolist() == best + [EOS] * (steps - len(best))
    # the pool holds the 16 best outputs: all that end sooner, and the 16 likeliest that run out
    np.testing.assert_allclose(np.asarray(pool_scores), sorted(scores, reverse=True)[:16], atol=1e-4)


def test_all_beams_come_best_first_and_options_are_checked(gpt2):
    tokens, scores = beam_search(gpt2, jnp.array([5, 9]), max_new_tokens=4, num_beams=3, return_all=True,
                                 return_scores=True)  # fmt: skip
    assert tokens.shape == (3, 4) and (np.diff(np.asarray(scores)) <= 0).all()
    with pytest.raises(InputError, match="num_beams"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, num_beams=0)
    with pytest.raises(InputError, match="length_penalty must be a finite number"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, length_penalty=float("inf"))
    with pytest.raises(InputError, match="repetition_penalty must be a finite number > 0"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, repetition_penalty=0.0)
    with pytest.raises(InputError, match="early_stopping"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=4, early_stopping="always")
    with pytest.raises(InputError, match="context"):
        beam_search(gpt2, jnp.array([5]), max_new_tokens=64)
    with pytest.raises(InputError, match="vocabulary"):
        beam_search(gpt2, jnp.array([500]), max_new_tokens=4)


def _search_to_the_end(logp, width: int, alpha: float) -> list[tuple[float, tuple[int, ...]]]:
    """The pool of transformers' search (module docstring of eqxllm.generation.beam) that never stops
    early, over a table model: ``logp[t, last, token]``, the first input 0, EOS the only stop id."""
    steps, vocab = logp.shape[:2]
    live, pool = [((), 0.0)], []
    for t in range(steps):
        cands = [
            (seq + (tok,), total + logp[t, seq[-1] if seq else 0, tok]) for seq, total in live for tok in range(vocab)
        ]
        cands = sorted(cands, key=lambda c: -c[1])[: 2 * width]
        ends = [seq[-1] == EOS or t == steps - 1 for seq, _ in cands]
        pool += [(total / (t + 1) ** alpha, seq) for i, (seq, total) in enumerate(cands) if ends[i] and i < width]
        live = [c for c, end in zip(cands, ends) if not end][:width]
    return sorted(pool, reverse=True)[:width]


def test_a_negative_length_penalty_stops_only_when_no_beam_can_improve():
    """With length_penalty < 0 a live beam's best possible score is its score now (a longer text sums
    more negative log-probabilities, which ``/ length ** length_penalty`` multiplies by a growing factor),
    so False and "never" stop exactly: the pool equals that of a search run to max_new_tokens. Here (a
    table of log-probabilities for 6 steps over 5 tokens, found among random ones) the pool is full early
    but a beam still improves it; bounding the beams at max_new_tokens, as for a positive length_penalty,
    would stop too soon and miss the second hypothesis."""
    steps, width, alpha = 6, 2, -1.0
    logp = jax.nn.log_softmax(jax.random.normal(jax.random.key(33), (steps, 5, 5)) * 2, axis=-1)

    @jax.jit  # early_stopping traced: one compiled search for the three modes
    def search(mode):
        def step(token, t):
            return logp[t, token[0]][None], t + 1

        return beam_search_cached(
            step, jnp.asarray(0), 0, num_beams=width, steps=steps, stop_ids=(EOS,), length_penalty=alpha,
            early_stopping=mode,
        )  # fmt: skip

    want = _search_to_the_end(np.asarray(logp), width, alpha)
    for stop in (False, "never"):
        pool, scores = search(stopping_mode(stop))
        rows = [tuple(row[: row.index(EOS) + 1] if EOS in row else row) for row in np.asarray(pool).tolist()]
        assert rows == [seq for _, seq in want], stop
        np.testing.assert_allclose(np.asarray(scores), [score for score, _ in want], rtol=1e-6)
    early, _ = search(stopping_mode(True))
    assert not np.array_equal(early, pool), "the pool is not full before the search ends: nothing is tested"

"""Token choice: greedy, temperature, top-k and top-p draw only from the allowed set, with the right odds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.generation.sampling import first_argmax, make_sampler, nucleus_mask

from ._helpers import tiny_gpt2

VOCAB = 40
DRAWS = 4000


@pytest.fixture(scope="module")
def logits():
    return jax.random.normal(jax.random.key(0), (VOCAB,)) * 2.0


def _draws(logits, seed=1, **options) -> np.ndarray:
    sampler = make_sampler(has_key=True, vocab_size=VOCAB, **options)
    keys = jax.random.split(jax.random.key(seed), DRAWS)
    return np.asarray(jax.jit(jax.vmap(sampler, in_axes=(None, 0)))(logits, keys))


def _nucleus(probs: np.ndarray, p: float) -> set[int]:
    """The smallest set of most likely tokens whose probability reaches p, by the definition."""
    order = np.argsort(-probs, kind="stable")
    total, kept = 0.0, set()
    for i in order:
        kept.add(int(i))
        total += probs[i]
        if total >= p:
            break
    return kept


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_draws_only_the_k_largest_and_all_of_them(logits, k):
    allowed = set(np.argsort(-np.asarray(logits))[:k].tolist())
    seen = set(_draws(logits, top_k=k, temperature=2.0).tolist())
    assert seen <= allowed
    assert seen == allowed  # every allowed token has a fair chance in 4000 draws at temperature 2


@pytest.mark.parametrize("p", [0.05, 0.3, 0.6, 0.9])
def test_top_p_draws_only_from_the_nucleus_and_all_of_it(logits, p):
    allowed = _nucleus(_softmax(np.asarray(logits, np.float64)), p)
    seen = set(_draws(logits, top_p=p).tolist())
    assert seen <= allowed
    if p == 0.05:
        assert len(allowed) == 1  # the top token alone already reaches p: it is always kept
    probs = _softmax(np.asarray(logits, np.float64))
    assert {i for i in allowed if probs[i] > 5 / DRAWS} <= seen


def test_top_k_then_top_p_renormalizes_within_the_top_k(logits):
    k, p = 6, 0.7
    top = np.argsort(-np.asarray(logits))[:k]
    renorm = np.zeros(VOCAB)
    renorm[top] = _softmax(np.asarray(logits, np.float64)[top])
    allowed = _nucleus(renorm, p)
    seen = set(_draws(logits, top_k=k, top_p=p).tolist())
    assert seen <= allowed and len(allowed) > 1
    assert seen == allowed


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_temperature_draws_follow_softmax_of_scaled_logits(logits, temperature):
    counts = np.bincount(_draws(logits, temperature=temperature), minlength=VOCAB) / DRAWS
    expected = _softmax(np.asarray(logits, np.float64) / temperature)
    assert np.abs(counts - expected).max() < 0.035


@pytest.mark.parametrize("temperature", [1e-35, 1e-45, 1e-60])
@pytest.mark.parametrize("options", [{}, {"top_k": 5}, {"top_p": 0.9}])
def test_a_vanishing_temperature_draws_the_argmax_not_nan(logits, temperature, options):
    # logits of ~1e3 / 1e-35 overflow to +-inf, and inf - inf gave NaN odds; 1e-45 is subnormal in
    # float32 (flushed to 0 by XLA) and 1e-60 is 0
    seen = set(_draws(logits * 1000, temperature=temperature, **options).tolist())
    assert seen == {int(np.argmax(np.asarray(logits)))}


def test_nucleus_mask_by_hand():
    sorted_logits = jnp.log(jnp.asarray([0.5, 0.25, 0.125, 0.125]))
    keep = lambda p: np.asarray(nucleus_mask(sorted_logits, jnp.asarray(p))).tolist()
    assert keep(0.5) == [True, False, False, False]  # 0.5 reaches 0.5
    assert keep(0.51) == [True, True, False, False]
    assert keep(0.8) == [True, True, True, False]
    assert keep(1.0) == [True, True, True, True]


def test_first_argmax_matches_argmax_with_ties_infinities_and_nans():
    rng = np.random.default_rng(0)
    rows = rng.integers(-3, 4, size=(200, 50)).astype(np.float32)  # many ties
    rows[0, :] = -np.inf
    rows[1, 7] = np.inf
    rows[2, [3, 9]] = np.nan
    rows[3, :] = 5.0
    got = np.asarray(jax.jit(jax.vmap(first_argmax))(jnp.asarray(rows)))
    np.testing.assert_array_equal(got, np.argmax(rows, axis=1))  # NumPy's argmax also takes the first NaN
    np.testing.assert_array_equal(got, np.asarray(jax.vmap(jnp.argmax)(jnp.asarray(rows))))


def test_greedy_is_argmax_and_temperature_zero_or_top_k_one_is_greedy(logits):
    greedy = make_sampler(has_key=False, vocab_size=VOCAB)
    assert greedy.greedy and int(greedy(logits, None)) == int(np.argmax(np.asarray(logits)))
    assert make_sampler(temperature=0.0, top_p=0.3, has_key=True, vocab_size=VOCAB).greedy
    assert set(_draws(logits, top_k=1).tolist()) == {int(np.argmax(np.asarray(logits)))}


def test_sampled_generation_with_top_k_one_equals_greedy():
    model = tiny_gpt2(seed=5)
    prompt = jnp.asarray([[4, 8, 15], [16, 23, 42]])
    greedy = eqxllm.generate(model, prompt, max_new_tokens=7, eos_token_id=())
    sampled = eqxllm.generate(model, prompt, max_new_tokens=7, eos_token_id=(), top_k=1, key=jax.random.key(9))
    np.testing.assert_array_equal(np.asarray(sampled), np.asarray(greedy))
    cold = eqxllm.generate(model, prompt, max_new_tokens=7, eos_token_id=(), temperature=0, key=jax.random.key(9))
    np.testing.assert_array_equal(np.asarray(cold), np.asarray(greedy))
    free = eqxllm.generate(model, prompt, max_new_tokens=7, eos_token_id=(), temperature=3.0, key=jax.random.key(9))
    assert (np.asarray(free) != np.asarray(greedy)).any()

"""The repetition penalty and min-p, one row of logits at a time, against ``transformers``' processors
applied in ``transformers``' order (``RepetitionPenaltyLogitsProcessor``, then ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, ``MinPLogitsWarper``); the record of seen tokens; bad values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import InputError
from eqxllm.generation import stream
from eqxllm.generation.penalty import penalize, see, seen_prompt
from eqxllm.generation.sampling import make_sampler, min_p_mask

from ._helpers import tiny_gpt2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 40
HISTORY = [3, 7, 7, 0, 12, 25, 3, 31, 5]  # repeats, id 0, positive and negative logits among them


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    x = np.array(jax.random.normal(jax.random.key(0), (VOCAB,)) * 2.0, np.float32)
    x[[10, 11]] = x.max() + 0.5  # two tied most likely tokens
    x[[20, 21, 22]] = x[10] - 1.3  # a tie a little further down
    x[0] = 0.0  # a seen token with logit 0 (divided: stays 0)
    x[[7, 12]] = -1.5, 2.5  # seen: one negative, one positive
    return x


def _seen(history) -> jnp.ndarray:
    ids = jnp.asarray([history], jnp.int32)
    return seen_prompt(ids, jnp.ones(ids.shape, bool), VOCAB)[0]


def _transformers(logits, history, penalty=1.0, temperature=1.0, top_k=None, top_p=None, min_p=None) -> np.ndarray:
    """transformers' processors for these options, in the order ``_get_logits_processor`` builds them."""
    g = transformers.generation
    processors = []
    if penalty != 1.0:
        processors.append(g.RepetitionPenaltyLogitsProcessor(float(penalty)))
    if temperature != 1.0:
        processors.append(g.TemperatureLogitsWarper(temperature))
    if top_k is not None:
        processors.append(g.TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(g.TopPLogitsWarper(top_p))
    if min_p is not None:
        processors.append(g.MinPLogitsWarper(min_p))
    scores = torch.tensor(logits)[None]
    ids = torch.tensor([history])
    for p in processors:
        scores = p(ids, scores)
    return scores[0].numpy()


def _log_probs(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


@pytest.mark.parametrize("penalty", [1.3, 0.7, 2.0])
def test_penalty_equals_transformers_exactly(logits, penalty):
    # jitted, as in the decoding loop: XLA:CPU's division alone (an eager op) may round 1 ulp off IEEE's
    ours = np.asarray(jax.jit(penalize)(jnp.asarray(logits), _seen(HISTORY), jnp.asarray(penalty, jnp.float32)))
    ref = _transformers(logits, HISTORY, penalty=penalty)
    np.testing.assert_array_equal(ours, ref)
    changed = set(np.flatnonzero(ours != logits).tolist())
    assert changed == set(HISTORY) - {0}  # each seen token once; 0 / penalty is 0
    assert (ours[7] < logits[7]) == (penalty > 1) and (ours[12] < logits[12]) == (penalty > 1)


OPTIONS = {
    "min_p": dict(min_p=0.1),
    "min_p-1-keeps-the-tied-top": dict(min_p=1.0),
    "min_p-high-temperature": dict(temperature=2.5, min_p=0.3),
    "min_p-low-temperature-top-only": dict(temperature=0.05, min_p=0.05),
    "min_p-at-the-tie": dict(min_p=float(np.exp(-1.3)) * 0.999),
    "top_k-min_p": dict(top_k=12, min_p=0.05),
    "top_p-min_p": dict(top_p=0.9, min_p=0.1),
    "all": dict(temperature=0.8, top_k=25, top_p=0.95, min_p=0.15),
    "penalty-min_p": dict(penalty=1.3, min_p=0.2),
    "penalty-rewards-all": dict(penalty=0.6, temperature=1.5, top_k=30, top_p=0.9, min_p=0.1),
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_warped_log_probs_equal_transformers(logits, options):
    options = dict(options)
    penalty = options.pop("penalty", 1.0)
    x = jnp.asarray(logits)
    if penalty != 1.0:
        x = penalize(x, _seen(HISTORY), jnp.asarray(penalty, jnp.float32))
    sampler = make_sampler(**options, has_key=True, vocab_size=VOCAB)
    ours = np.asarray(sampler.warped(x))
    ref = _transformers(logits, HISTORY, penalty=penalty, **options)
    kept = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(ours), kept)
    assert kept[10] and kept[11]  # the tied top tokens are always kept
    if "min_p" in options:  # min-p must cut something here, or the comparison tests little
        without = _transformers(logits, HISTORY, penalty=penalty, **{**options, "min_p": None})
        assert np.isfinite(without).sum() > kept.sum()
    np.testing.assert_allclose(_log_probs(ours[kept]), _log_probs(ref[kept]), atol=2e-5, rtol=0)


def test_min_p_keeps_the_top_token_and_its_ties_by_hand():
    x = jnp.log(jnp.asarray([0.1, 0.4, 0.4, 0.05, 0.05]))
    keep = lambda m: np.asarray(min_p_mask(x, jnp.asarray(m, jnp.float32))).tolist()
    assert keep(1.0) == [False, True, True, False, False]
    assert keep(0.2) == [True, True, True, False, False]  # 0.1 >= 0.2 * 0.4 ; 0.05 < 0.08
    assert keep(0.0) == [True] * 5
    lone = jnp.asarray([30.0, 0.0, -1.0])  # the top's probability is ~1: others are far below 0.5 of it
    assert np.asarray(min_p_mask(lone, jnp.asarray(0.5))).tolist() == [True, False, False]


def test_sampling_with_min_p_draws_only_kept_tokens_and_all_of_them(logits):
    sampler = make_sampler(min_p=0.2, temperature=1.5, has_key=True, vocab_size=VOCAB)
    keys = jax.random.split(jax.random.key(1), 3000)
    drawn = set(np.asarray(jax.jit(jax.vmap(sampler, in_axes=(None, 0)))(jnp.asarray(logits), keys)).tolist())
    kept = set(np.flatnonzero(np.isfinite(_transformers(logits, [], temperature=1.5, min_p=0.2))).tolist())
    assert drawn == kept and 1 < len(kept) < VOCAB


def test_seen_record_skips_left_padding_and_grows():
    ids = jnp.asarray([[0, 0, 5, 6], [9, 0, 2, 2]])  # row 0: two slots of left padding (pad id 0)
    mask = jnp.asarray([[False, False, True, True], [True, True, True, True]])
    seen = seen_prompt(ids, mask, 12)
    assert np.flatnonzero(np.asarray(seen[0])).tolist() == [5, 6]  # the pad id 0 is not seen
    assert np.flatnonzero(np.asarray(seen[1])).tolist() == [0, 2, 9]  # a real 0 is
    grown = see(seen, jnp.asarray([11, 2]))
    assert np.flatnonzero(np.asarray(grown[0])).tolist() == [5, 6, 11]
    assert np.flatnonzero(np.asarray(grown[1])).tolist() == [0, 2, 9]


def test_stream_applies_the_penalty_and_min_p_as_generate_does():
    model = tiny_gpt2(seed=4)
    prompt = jnp.asarray([[4, 8, 15], [16, 23, 42]])
    options = dict(max_new_tokens=9, eos_token_id=(), repetition_penalty=1.4, min_p=0.1, temperature=1.3)
    key = jax.random.key(2)
    whole = np.asarray(eqxllm.generate(model, prompt, key=key, **options))
    streamed = np.concatenate([np.asarray(c) for c in stream(model, prompt, chunk_size=3, key=key, **options)], 1)
    np.testing.assert_array_equal(streamed, whole)
    plain = np.asarray(eqxllm.generate(model, prompt, key=key, **{**options, "repetition_penalty": 1.0}))
    assert (plain != whole).any()


KEY = jax.random.key(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"repetition_penalty": 0.0}, r"repetition_penalty must be a finite number > 0 .*got 0.0"),
        ({"repetition_penalty": -1.2}, r"repetition_penalty must be a finite number > 0 .*got -1.2"),
        ({"repetition_penalty": float("inf")}, r"repetition_penalty must be a finite number > 0 .*got inf"),
        ({"repetition_penalty": True}, r"repetition_penalty must be a finite number > 0 .*got True"),
        ({"min_p": 1.5, "key": KEY}, r"min_p must be in \[0, 1\].*got 1.5"),
        ({"min_p": -0.1, "key": KEY}, r"min_p must be in \[0, 1\].*got -0.1"),
        ({"min_p": 0.1}, r"sampling options \{'min_p': 0.1\} need a random key"),
    ],
)
def test_bad_values_raise_input_error(kwargs, match):
    model = tiny_gpt2()
    with pytest.raises(InputError, match=match):
        eqxllm.generate(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, **kwargs)
    with pytest.raises(InputError, match=match):
        next(iter(stream(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, **kwargs)))


def test_unset_options_change_nothing():
    model = tiny_gpt2(seed=5)
    prompt = jnp.asarray([[4, 8, 15], [16, 23, 42]])
    for key in (None, jax.random.key(3)):
        plain = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=6, key=key))
        off = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=6, key=key, repetition_penalty=1.0, min_p=None))
        np.testing.assert_array_equal(off, plain)
    zero = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=6, key=jax.random.key(3), min_p=0.0))
    np.testing.assert_array_equal(zero, plain)

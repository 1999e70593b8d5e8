"""Beam search from a latent (through :mod:`eqxllm.generation.beam`): exact on a vocabulary small
enough to enumerate, greedy at one beam."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.models.t5_config import T5Config
from eqxllm.vae import beam_search_from_latent, generate_from_latent

EOS = 1


@pytest.fixture(scope="module")
def small():
    # 5 tokens (0 pad/start, 1 end, 2..4 words) and 3 steps: every output can be listed
    t5 = T5Config.tiny().replace(vocab_size=5, pad_token_id=0, eos_token_id=EOS, decoder_start_token_id=0)
    return T5VAE(T5VAEConfig(t5=t5, n_latent_tokens=2, latent_size=4, max_length=8), key=jax.random.key(3))


@eqx.filter_jit
def _log_probs(model, latent, ids):
    return jax.vmap(lambda i: jax.nn.log_softmax(model.decode_full(latent, i), -1))(ids)


def _scores(model, latent, seqs, alpha):
    """Every sequence's normalised score, from one batched teacher-forced pass."""
    width = max(len(q) for q in seqs)
    ids = np.zeros((len(seqs), width), np.int32)  # start token, then each sequence's inputs
    targets = np.zeros((len(seqs), width), np.int32)
    for row, q in enumerate(seqs):
        ids[row, 1 : len(q)] = q[:-1]
        targets[row, : len(q)] = q
    logp = _log_probs(model, latent, jnp.asarray(ids))
    picked = np.take_along_axis(np.asarray(logp), targets[..., None], -1)[..., 0]
    return [float(picked[row, : len(q)].sum()) / len(q) ** alpha for row, q in enumerate(seqs)]


def _every_output(steps):
    for n in range(1, steps + 1):
        for words in itertools.product(range(5), repeat=n):
            ends = [i for i, t in enumerate(words) if t == EOS]
            if (ends and ends[0] == n - 1) or (not ends and n == steps):  # ends at its end token, or runs out
                yield list(words)


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_a_wide_enough_beam_finds_the_best_sentence(small, alpha):
    """25 beams over 5 tokens and 3 steps lose no candidate best sentence: those that end at step 1 or
    2 (at most 4 + 20 candidates) rank among the first 25 and join the pool, the likeliest 3-token one
    ranks first at the last step, and the pool is not full before it."""
    steps = 3
    latents = jax.random.normal(jax.random.key(0), (4, 2, 4)) * 2.0
    tokens, scores = beam_search_from_latent(
        small, latents, num_beams=25, length_penalty=alpha, max_new_tokens=steps,
        return_scores=True,
    )  # fmt: skip
    for row, score, latent in zip(np.asarray(tokens), np.asarray(scores), latents):
        seqs = list(_every_output(steps))
        table = dict(zip(map(tuple, seqs), _scores(small, latent, seqs, alpha)))
        best = max(table, key=table.get)
        got = row.tolist()
        got = tuple(got[: got.index(EOS) + 1]) if EOS in got else tuple(got)
        assert got == best, (got, best)
        np.testing.assert_allclose(score, table[best], rtol=1e-5, atol=1e-5)


def test_one_beam_is_greedy_decoding(small):
    latents = jax.random.normal(jax.random.key(1), (5, 2, 4)) * 2.0
    beam = beam_search_from_latent(small, latents, num_beams=1, max_new_tokens=6)
    np.testing.assert_array_equal(beam, generate_from_latent(small, latents, max_new_tokens=6))


def test_beam_search_checks_its_arguments(small):
    latent = jnp.zeros((2, 4))
    with pytest.raises(InputError, match="num_beams"):
        beam_search_from_latent(small, latent, num_beams=0)
    with pytest.raises(InputError, match="latents"):
        beam_search_from_latent(small, jnp.zeros((3, 4)))
    with pytest.raises(InputError, match="length_penalty"):
        beam_search_from_latent(small, latent, length_penalty=float("nan"))
    with pytest.raises(InputError, match="early_stopping"):
        beam_search_from_latent(small, latent, early_stopping="always")
    single = beam_search_from_latent(small, latent, num_beams=3, max_new_tokens=4)
    assert single.shape == (4,)


def test_return_all_gives_the_pool_best_first(small):
    """The num_beams finished hypotheses: distinct, sorted, each scored as its teacher-forced
    log-probability over its length (its end token included; a hypothesis that ran out of steps has
    none)."""
    latents = jax.random.normal(jax.random.key(2), (3, 2, 4)) * 2.0
    best, best_score = beam_search_from_latent(small, latents, num_beams=4, max_new_tokens=5, return_scores=True)
    every, scores = beam_search_from_latent(
        small, latents, num_beams=4, max_new_tokens=5, return_scores=True, return_all=True
    )
    assert every.shape == (3, 4, 5) and scores.shape == (3, 4)
    np.testing.assert_array_equal(every[:, 0], best)
    np.testing.assert_array_equal(scores[:, 0], best_score)
    assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)  # sorted, best first
    for row in np.asarray(every):  # distinct beams: a search does not keep one sentence twice
        seqs = {tuple(r[: list(r).index(EOS) + 1]) if EOS in r else tuple(r) for r in row.tolist()}
        assert len(seqs) == 4
    for row, row_scores, latent in zip(np.asarray(every), np.asarray(scores), latents):
        seqs = [r[: r.index(EOS) + 1] if EOS in r else r for r in row.tolist()]
        np.testing.assert_allclose(row_scores, _scores(small, latent, seqs, 1.0), rtol=1e-5, atol=1e-5)

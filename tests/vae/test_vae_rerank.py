"""Reranking a latent path's pooled beams with a language model: the decoder's own score, the
language model's pull, and the arguments it refuses."""

import equinox as eqx
import jax
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.generation.score import text_log_likelihoods
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.models.t5_config import T5Config
from eqxllm.vae import beam_search_from_latent, interpolation_path
from eqxllm.vae.decoding import strip_after_end
from eqxllm.vae.rerank import code_log_likelihoods, rerank_path
from tests.generation._helpers import tiny_gpt2

EOS = 1


class Letters:
    """VAE id i is the letter chr(97 + i); the language model reads one id per character."""

    class _Encoding:
        def __init__(self, ids):
            self.ids = ids

    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)

    def encode(self, text, add_special_tokens=True):
        del add_special_tokens
        return self._Encoding([1 + (ord(c) % 200) for c in text])


@pytest.fixture(scope="module")
def vae():
    t5 = T5Config.tiny().replace(vocab_size=6, pad_token_id=0, eos_token_id=EOS, decoder_start_token_id=0)
    vae = T5VAE(T5VAEConfig(t5=t5, n_latent_tokens=2, latent_size=4, max_length=10), key=jax.random.key(2))
    # a random decoder seldom writes its end token; a larger end-token row (the table is tied to the
    # output layer) makes most beams finish, so that the pool holds several sentences
    return eqx.tree_at(lambda m: m.t5.shared.weight, vae, vae.t5.shared.weight.at[EOS].multiply(4.0))


@pytest.fixture(scope="module")
def lm():
    return tiny_gpt2(seed=2, bos_token_id=0, eos_token_id=0)


@pytest.fixture(scope="module")
def path():
    k1, k2 = jax.random.split(jax.random.key(7))
    za, zb = jax.random.normal(k1, (2, 4)) * 2, jax.random.normal(k2, (2, 4)) * 2
    return interpolation_path(za, zb, 5)


def _pool(vae, path, beams):
    tokens = np.asarray(beam_search_from_latent(vae, path, num_beams=beams, return_all=True))
    seen = []
    for row in tokens.reshape(-1, tokens.shape[-1]):
        ids = tuple(strip_after_end(row, EOS))
        if ids and len(ids) < len(row) and ids not in seen:  # finished, non-empty sentences
            seen.append(ids)
    return seen


def test_code_scores_are_the_beam_search_scores(vae, path):
    tokens, scores = beam_search_from_latent(vae, path, num_beams=3, return_scores=True, return_all=True)
    checked = 0
    for k in range(path.shape[0]):
        finished = [EOS in row.tolist() for row in np.asarray(tokens[k])]
        cands = [strip_after_end(row, EOS) for row, done in zip(np.asarray(tokens[k]), finished) if done]
        got = code_log_likelihoods(vae, path[k : k + 1], cands)[0]
        np.testing.assert_allclose(got, np.asarray(scores[k])[finished], rtol=1e-5, atol=1e-5)
        checked += len(cands)
    assert checked >= 5


def test_without_the_language_model_each_point_takes_its_likeliest_pooled_sentence(vae, lm, path):
    tok = Letters()
    chosen = rerank_path(vae, tok, path, lm, tok, lm_weight=0.0, num_beams=3)
    pool = _pool(vae, path, 3)
    table = code_log_likelihoods(vae, path, pool)
    assert chosen == [tok.decode(pool[k]) for k in np.argmax(table, axis=1)]
    # pooling can only help the decoder's own score: each point does at least as well as its best
    # finished, non-empty beam
    tokens, scores = beam_search_from_latent(vae, path, num_beams=3, return_scores=True, return_all=True)
    tokens = np.asarray(tokens)
    finished = (tokens == EOS).any(axis=-1) & (tokens[..., 0] != EOS)  # [points, beams]
    own = np.where(finished, np.asarray(scores), -np.inf).max(axis=1)
    assert np.isfinite(own).sum() >= 3
    assert np.all(table.max(axis=1) >= own - 1e-5)
    assert len(set(chosen)) > 1  # the path passes through more than one sentence


def test_a_heavy_language_model_picks_its_favourite_everywhere(vae, lm, path):
    tok = Letters()
    pool = [tok.decode(ids) for ids in _pool(vae, path, 3)]
    favourite = pool[int(np.argmax(text_log_likelihoods(lm, tok, pool)))]
    assert rerank_path(vae, tok, path, lm, tok, lm_weight=1e4, num_beams=3) == [favourite] * path.shape[0]
    # in between, the choice at every point maximises the weighted sum over the pool
    mixed = rerank_path(vae, tok, path, lm, tok, lm_weight=0.5, num_beams=3)
    total = code_log_likelihoods(vae, path, _pool(vae, path, 3)) + 0.5 * text_log_likelihoods(lm, tok, pool)
    assert mixed == [pool[k] for k in np.argmax(total, axis=1)]


def test_rerank_checks_its_arguments(vae, lm, path):
    tok = Letters()
    with pytest.raises(InputError, match="lm_weight"):
        rerank_path(vae, tok, path, lm, tok, lm_weight=-1.0)
    with pytest.raises(InputError, match="non-empty path"):
        rerank_path(vae, tok, path[:0], lm, tok)
    with pytest.raises(InputError, match="end token"):
        code_log_likelihoods(vae, path, [[2] * 10])


class VAELetters(Letters):
    """The VAE's side of :class:`Letters`: encoding gives the VAE's ids back (an anchor's)."""

    def encode(self, text, add_special_tokens=True):
        del add_special_tokens
        return self._Encoding([ord(c) - ord("a") for c in text])

    def encode_batch(self, texts, add_special_tokens=True):
        return [self.encode(t, add_special_tokens) for t in texts]


def test_anchors_join_the_pool(vae, lm, path):
    tok, vtok = Letters(), VAELetters()
    anchors = ("ccc", "ddcce")
    pool = _pool(vae, path, 3)
    pool += [ids for ids in ([2, 2, 2], [3, 3, 2, 2, 4]) if tuple(ids) not in pool]
    texts = [vtok.decode(ids) for ids in pool]
    total = code_log_likelihoods(vae, path, pool) + 0.5 * text_log_likelihoods(lm, tok, texts)
    chosen = rerank_path(vae, vtok, path, lm, tok, lm_weight=0.5, num_beams=3, anchors=anchors)
    assert chosen == [texts[k] for k in np.argmax(total, axis=1)]
    heavy = rerank_path(vae, vtok, path, lm, tok, lm_weight=1e4, num_beams=3, anchors=anchors)
    assert heavy == [texts[int(np.argmax(text_log_likelihoods(lm, tok, texts)))]] * path.shape[0]
    with pytest.raises(InputError, match="anchor"):
        rerank_path(vae, vtok, path, lm, tok, anchors=("c" * 10,))


def test_interpolate_texts_reranks_only_with_a_complete_judge(vae, lm):
    from eqxllm.vae import interpolate_texts

    vtok = VAELetters()
    path = interpolate_texts(vae, vtok, "cd", "ed", 3, lm=lm, lm_tokenizer=Letters(), num_beams=2)
    assert len(path) == 3 and all(path)
    with pytest.raises(InputError, match="lm_tokenizer"):
        interpolate_texts(vae, vtok, "cd", "ed", 3, lm=lm)
    with pytest.raises(InputError, match="not both"):
        interpolate_texts(vae, vtok, "cd", "ed", 3, lm=lm, lm_tokenizer=Letters(), prior_weight=0.5)
    with pytest.raises(InputError, match="num_beams"):
        interpolate_texts(vae, vtok, "cd", "ed", 3, lm=lm, lm_tokenizer=Letters(), num_beams=0)

"""Refining codes: the teacher-forced margin, that refinement is Adam on the reconstruction loss
with respect to the code alone, that a row stops once it reconstructs and is then written back by
greedy decoding, and the inputs refused."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eqxllm.data.sentences import SentenceSet
from eqxllm.errors import InputError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.models.t5_config import T5Config
from eqxllm.vae import encode_texts, generate_from_latent, interpolate_texts
from eqxllm.vae.decoding import strip_after_end
from eqxllm.vae.refine import code_margins, reconstructs, refine_latents
from eqxllm.vae.text import build_bank, tokenize
from tests.vae._letters import VAELetters

EOS, MAX = 1, 8


@pytest.fixture(scope="module")
def vae():
    t5 = T5Config.tiny().replace(vocab_size=8, pad_token_id=0, eos_token_id=EOS, decoder_start_token_id=0)
    vae = T5VAE(T5VAEConfig(t5=t5, n_latent_tokens=4, latent_size=16, max_length=MAX), key=jax.random.key(0))
    # a random decoder seldom writes its end token; a larger end-token row (tied to the output layer)
    # lets refined codes end their sentences
    return eqx.tree_at(lambda m: m.t5.shared.weight, vae, vae.t5.shared.weight.at[EOS].multiply(2.0))


@pytest.fixture(scope="module")
def refined(vae):
    """16 random sentences, random codes, and those codes refined (a few rows reach the margin 0)."""
    data = _rows(_random_sentences(16, 2))
    codes = np.asarray(jax.random.normal(jax.random.key(3), (16, 4, 16)))
    return data, codes, refine_latents(vae, data, codes, steps=300, learning_rate=1.0, margin=0.0, batch_size=16)


def _rows(sentences: list[list[int]]) -> SentenceSet:
    ids = np.zeros((len(sentences), MAX), np.int32)
    for r, s in enumerate(sentences):
        ids[r, : len(s)] = s
        ids[r, len(s)] = EOS
    return SentenceSet(ids, np.array([len(s) + 1 for s in sentences], np.int32), tuple(map(str, sentences)), 0)


def _random_sentences(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 8, size=rng.integers(1, 5)).tolist() for _ in range(n)]


def _own_sentences(vae, codes) -> list[list[int]]:
    """What greedy decoding writes from ``codes``, cut to fit: sentences these codes reconstruct."""
    return [strip_after_end(row, EOS)[: MAX - 1] for row in np.asarray(generate_from_latent(vae, jnp.asarray(codes)))]


@eqx.filter_jit
def _decode(vae, z, dec_in):
    return vae.decode_full(z, dec_in)


def _log_probs(vae, z, ids) -> np.ndarray:
    """Teacher-forced log-probabilities ``[seq, vocab]`` (float64, NumPy) of the row ``ids`` given ``z``."""
    dec_in = np.concatenate([[0], ids[:-1]])
    logits = np.asarray(_decode(vae, jnp.asarray(z), jnp.asarray(dec_in)), np.float64)
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def _loss(vae, data: SentenceSet, codes) -> np.ndarray:
    """Mean teacher-forced cross-entropy per target token of each row."""
    return np.array(
        [-_log_probs(vae, z, ids)[np.arange(n), ids[:n]].mean() for z, ids, n in zip(codes, data.ids, data.lengths)]
    )


def test_margins_are_teacher_forced_and_tell_exact_reconstructions(vae, refined):
    data, _, done = refined
    codes = done.latents
    got = np.asarray(code_margins(vae, jnp.asarray(codes), jnp.asarray(data.ids), jnp.asarray(data.lengths)))
    for r, (z, ids, n) in enumerate(zip(codes, data.ids, data.lengths)):
        logp = _log_probs(vae, z, ids)
        target = logp[np.arange(n), ids[:n]]
        other = np.where(np.eye(8, dtype=bool)[ids[:n]], -np.inf, logp[:n]).max(-1)
        np.testing.assert_allclose(got[r], (target - other).min(), rtol=1e-4, atol=1e-4)
    exact = reconstructs(vae, data, codes, batch_size=6)  # three batches, the last one padded
    assert exact.tolist() == (got > 0).tolist() and 0 < exact.sum() < 16
    written = _own_sentences(vae, codes)
    assert [written[r] == list(data.ids[r, : data.lengths[r] - 1]) for r in range(16)] == exact.tolist()


@eqx.filter_jit
def _row_loss_grad(vae, z, ids, n):
    """The gradient of one row's mean cross-entropy per target token, written out again."""
    dec_in = jnp.concatenate([jnp.zeros(1, ids.dtype), ids[:-1]])
    mask = jnp.arange(MAX) < n

    def loss(z):
        logp = jax.nn.log_softmax(vae.decode_full(z, dec_in, decoder_mask=mask))
        return -jnp.sum(jnp.where(mask, jnp.take_along_axis(logp, ids[:, None], -1)[:, 0], 0.0)) / n

    return jax.grad(loss)(z)


def test_refinement_is_adam_on_the_reconstruction_loss(vae, refined):
    data, codes, _ = refined
    got = refine_latents(vae, data, codes, steps=4, learning_rate=0.1, margin=1e9)  # no row stops
    assert (got.steps == 4).all() and not got.exact.any()
    for r in (0, 7, 15):
        adam, z = optax.adam(0.1), jnp.asarray(codes[r])
        state = adam.init(z)
        for _ in range(4):
            updates, state = adam.update(
                _row_loss_grad(vae, z, jnp.asarray(data.ids[r]), jnp.int32(data.lengths[r])), state
            )
            z = optax.apply_updates(z, updates)
        np.testing.assert_allclose(got.latents[r], np.asarray(z), rtol=1e-4, atol=1e-5)


def test_refined_rows_stop_at_the_margin_and_decode_to_their_sentence(vae, refined):
    data, codes, got = refined
    assert (_loss(vae, data, got.latents) < _loss(vae, data, codes)).all()
    assert got.exact.any() and (got.steps[got.exact] < 300).all() and (got.steps[~got.exact] == 300).all()
    written = _own_sentences(vae, got.latents)
    assert [written[r] == list(data.ids[r, : data.lengths[r] - 1]) for r in range(16)] == got.exact.tolist()
    assert got.exact.tolist() == reconstructs(vae, data, got.latents).tolist()
    again = refine_latents(vae, data, got.latents, steps=300, learning_rate=1.0, margin=0.0, batch_size=16)
    np.testing.assert_array_equal(again.latents[got.exact], got.latents[got.exact])  # reached: never moved
    assert not again.steps[got.exact].any() and again.steps[~got.exact].min() > 0
    unmoved = refine_latents(vae, data, codes, steps=0)
    np.testing.assert_array_equal(unmoved.latents, codes)
    assert not unmoved.steps.any() and unmoved.exact.tolist() == reconstructs(vae, data, codes, margin=0.5).tolist()


def _letters(sentence: list[int]) -> str:
    return "".join(chr(97 + i) for i in sentence)


def test_text_helpers_refine_the_ends_of_a_path(vae):
    tok = VAELetters()
    texts = [_letters(s) for s in _random_sentences(16, 5)]  # 16 rows: the fixture's compiled programs
    data = tokenize(vae, tok, texts)
    plain = encode_texts(vae, tok, texts)
    want = refine_latents(vae, data, plain, steps=300)  # encode_texts' defaults
    np.testing.assert_allclose(encode_texts(vae, tok, texts, refine_steps=300), want.latents, rtol=1e-5, atol=1e-6)
    reached = [t for t, e, p in zip(texts, want.exact, reconstructs(vae, data, plain)) if e and not p]
    assert len(reached) >= 2  # sentences that only refined codes write back
    a, b = reached[:2]
    assert interpolate_texts(vae, tok, a, b, 4)[0] != a
    path = interpolate_texts(vae, tok, a, b, 4, refine_steps=300)
    assert path[0] == a and path[-1] == b


def test_an_exact_bank_keeps_the_sentences_its_codes_write_back(vae, refined, monkeypatch):
    import eqxllm.vae.text as text

    data, _, done = refined
    tok = VAELetters()
    texts = [_letters(list(ids[: n - 1])) for ids, n in zip(data.ids, data.lengths)]
    # the encoder's codes of these texts are the refined ones: some write their text back, some not
    monkeypatch.setattr(text, "encode_rows", lambda model, rows, batch_size=64: done.latents[: len(rows)])
    bank = build_bank(vae, tok, texts, k=2, whole=False)
    assert list(bank.texts) == [t for t, e in zip(texts, done.exact) if e]
    np.testing.assert_array_equal(bank.codes, done.latents[done.exact])
    assert list(build_bank(vae, tok, texts, k=2, whole=False, exact=False).texts) == texts
    monkeypatch.setattr(text, "encode_rows", lambda model, rows, batch_size=64: done.latents[~done.exact][: len(rows)])
    with pytest.raises(InputError, match="that its code reconstructs"):
        build_bank(vae, tok, [t for t, e in zip(texts, done.exact) if not e], k=2, whole=False)


def test_refinement_refuses_bad_input(vae):
    data = _rows(_random_sentences(2, 4))
    codes = np.zeros((2, 4, 16), np.float32)
    with pytest.raises(InputError, match=r"one \[4, 16\] code per sentence"):
        refine_latents(vae, data, codes[:1])
    with pytest.raises(InputError, match=r"one \[4, 16\] code per sentence"):
        reconstructs(vae, data, codes[:, :2])
    for steps in (-1, True):
        with pytest.raises(InputError, match="steps must be an integer >= 0"):
            refine_latents(vae, data, codes, steps=steps)
    with pytest.raises(InputError, match="learning_rate > 0 and margin >= 0"):
        refine_latents(vae, data, codes, learning_rate=0.0)
    with pytest.raises(InputError, match="learning_rate > 0 and margin >= 0"):
        refine_latents(vae, data, codes, margin=-1.0)
    empty = refine_latents(vae, data.take([]), codes[:0])
    assert empty.latents.shape == (0, 4, 16) and empty.exact.shape == (0,)

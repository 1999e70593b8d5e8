"""The interpolation loss: splices of two sentences as the targets of the codes between them."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.data import train_bpe_tokenizer
from eqxllm.errors import ConfigError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.train.loss import cross_entropy
from eqxllm.train.tasks.splices import splice_rows, splices, word_starts
from eqxllm.train.tasks.vae import VAETask
from eqxllm.train.tasks.vae_loss import splice_loss, vae_loss
from eqxllm.vae import slerp
from eqxllm.vae.metrics import shift_right

from .test_vae_task import _cfg

EOS, PAD = 1, 0


def test_splices_join_the_two_sentences_at_every_shared_token():
    a, b = [10, 11, 12, 13], [20, 11, 21, 13]  # share 11 (index 1 in both) and 13 (index 3 in both)
    got = sorted(splices(a, b, max_tokens=10))
    # a[:1] + b[1:] and a[:3] + b[3:] (= a itself, left out), with the share of b's tokens
    assert got == [([10, 11, 21, 13], 3 / 4)]
    assert splices([10, 11], [20, 21], 10) == []  # nothing shared: no splice
    assert splices(a, [20, 21, 22, 11, 26, 27], 4) == [([10, 11, 26, 27], 3 / 4)]
    assert splices(a, [20, 21, 22, 11, 26, 27], 3) == []  # too long for max_tokens
    assert splices([11], [20, 11], 10) == []  # one-token sentences keep nothing of their own


def test_splices_join_only_where_a_word_begins():
    a, b = [10, 11, 12], [20, 11, 21]
    joinable = np.ones((30,), bool)
    assert splices(a, b, 10, joinable) == [([10, 11, 21], 2 / 3)]
    joinable[11] = False  # 11 continues a word ("ing"): joining there would make a word of neither
    assert splices(a, b, 10, joinable) == []


def test_word_starts_marks_spaced_tokens_and_punctuation_not_word_pieces():
    text = "The king is singing. The thing is ringing, and the wing is stinging.\n" * 50
    tok = train_bpe_tokenizer([text], vocab_size=300)
    starts = word_starts(tok)
    vocab = tok.get_vocab()
    assert starts.shape == (tok.get_vocab_size(),)
    assert starts[vocab["Ġthe"]] and starts[vocab[","]] and starts[vocab["."]]
    pieces = [t for t in vocab if t.isascii() and t[:1].isalpha() and t != "The"]  # "ing", "ng": inside a word
    assert pieces and not any(starts[vocab[t]] for t in pieces)


def test_every_splice_is_made_of_adjacent_pairs_of_its_two_sentences():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(2, 8, rng.integers(2, 10)).tolist()
        b = rng.integers(2, 8, rng.integers(2, 10)).tolist()
        real = set(zip(a, a[1:])) | set(zip(b, b[1:]))
        for tokens, t in splices(a, b, max_tokens=12):
            assert tokens not in (a, b) and len(tokens) <= 12
            assert tokens[0] == a[0] and tokens[-1] == b[-1]  # starts as a, ends as b
            assert set(zip(tokens, tokens[1:])) <= real  # every junction is one both sentences make
            # t: the share of the tokens that come from b: a's prefix, then that many of b's last tokens
            k = round(t * len(tokens))
            assert k == pytest.approx(t * len(tokens)) and 0 < k < len(tokens)
            assert tokens[-k:] == b[-k:] and tokens[:-k] == a[: len(tokens) - k]


def _rows(sentences, seq=8):
    ids = np.full((len(sentences), seq), PAD, np.int32)
    for r, s in enumerate(sentences):
        ids[r, : len(s)] = s
        ids[r, len(s)] = EOS
    return ids, np.array([len(s) + 1 for s in sentences], np.int32)


def test_splice_rows_pair_adjacent_rows_and_fall_back_to_the_nearer_sentence():
    sentences = [[10, 11, 12], [20, 11, 21, 22], [30, 31], [40, 41, 42]]  # rows 0-1 share 11; 2-3 nothing
    ids, lengths = _rows(sentences)
    out = splice_rows(ids, lengths, np.random.default_rng(0), eos_id=EOS, pad_id=PAD)
    targets = [row[: n - 1].tolist() for row, n in zip(out["splice_ids"], out["splice_lengths"])]
    assert targets[0] == [10, 11, 21, 22] and out["splice_t"][0] == pytest.approx(3 / 4)
    assert targets[1] == [20, 11, 12] and out["splice_t"][1] == pytest.approx(2 / 3)
    assert targets[2:] == sentences[2:]  # no shared token: the row's own sentence, before half-way
    assert (out["splice_t"][2:] < 0.5).all()
    for row, n in zip(out["splice_ids"], out["splice_lengths"]):
        assert row[n - 1] == EOS and (row[n:] == PAD).all()
    with pytest.raises(ConfigError, match="even"):
        splice_rows(ids[:3], lengths[:3], np.random.default_rng(0), eos_id=EOS, pad_id=PAD)
    with pytest.raises(ConfigError, match="splice_weight"):
        T5VAEConfig.tiny(splice_weight=-1.0)


@pytest.fixture(scope="module")
def model():
    return T5VAE(T5VAEConfig.tiny(n_latent_tokens=3, splice_weight=0.5), key=jax.random.key(0))


def _batch(model):
    sentences = [[10, 11, 12, 13], [20, 11, 21], [30, 31, 32], [40, 31, 41, 42, 43]]
    ids, lengths = _rows(sentences, seq=model.config.max_length)
    batch = {"input_ids": ids, "lengths": lengths, "step": np.full((4,), 10_000, np.int32)}
    return batch | splice_rows(ids, lengths, np.random.default_rng(1), eos_id=EOS, pad_id=PAD)


@eqx.filter_jit
def _means(model, ids, lengths):
    mask = jnp.arange(ids.shape[1])[None] < lengths[:, None]
    return jax.vmap(lambda i, m: model.encode(i, mask=m))(ids, mask)


@eqx.filter_jit
def _row_loss(model, code, target, n):
    """Summed cross-entropy and token count of decoding the first ``n`` tokens of ``target`` from ``code``."""
    keep = jnp.arange(target.shape[0]) < n
    logits = model.decode_full(code, shift_right(target, model.config.decoder_start_token_id), decoder_mask=keep)
    return cross_entropy(logits, target, keep)


def test_splice_loss_decodes_the_slerp_towards_the_partner(model):
    batch = _batch(model)
    means = _means(model, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["lengths"]))
    total = count = 0.0
    for r in range(4):  # one row at a time, the partner by hand
        code = slerp(means[r], means[r ^ 1], float(batch["splice_t"][r]))
        s, c = _row_loss(model, code, jnp.asarray(batch["splice_ids"][r]), jnp.asarray(batch["splice_lengths"][r]))
        total, count = total + s, count + c
    np.testing.assert_allclose(eqx.filter_jit(splice_loss)(model, means, batch, None), total / count, rtol=1e-5)
    loss_fn = eqx.filter_jit(vae_loss)
    loss, aux = loss_fn(model, batch, None)
    without, _ = loss_fn(model, {k: v for k, v in batch.items() if not k.startswith("splice")}, None)
    np.testing.assert_allclose(loss - without, 0.5 * aux["splice"], rtol=1e-5)


def test_splice_loss_trains_the_encoder_too(model):
    batch = _batch(model)

    def only_splice(m):
        means = _means(m, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["lengths"]))
        return splice_loss(m, means, batch, jax.random.key(0))

    grads = eqx.filter_jit(eqx.filter_grad(only_splice))(model)
    encoder = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(eqx.filter(grads.t5.encoder, eqx.is_array))])
    assert float(jnp.max(jnp.abs(encoder))) > 0  # the codes move so that their midpoints decode to splices
    assert float(jnp.max(jnp.abs(grads.to_latent.weight))) > 0


def test_the_vae_task_adds_splice_rows_only_when_asked(tmp_path):
    cfg = _cfg(tmp_path)
    plain = VAETask(cfg, tmp_path / "run", progress=False)
    assert "splice_ids" not in plain.batch(3, process_index=0, process_count=1)
    spliced = cfg.replace(model=dataclasses.replace(cfg.model, splice_weight=1.0))
    task = VAETask(spliced, tmp_path / "run", progress=False)
    first = task.batch(3, process_index=0, process_count=1)
    again = task.batch(3, process_index=0, process_count=1)
    assert {"splice_ids", "splice_lengths", "splice_t"} <= set(first)
    for k in first:  # a pure function of the step: resuming replays the same targets
        np.testing.assert_array_equal(first[k], again[k])
    assert first["splice_ids"].shape == first["input_ids"].shape

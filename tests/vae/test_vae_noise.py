"""Training-time input corruption: word dropout on the decoder side, word deletion on the encoder side."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import ConfigError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.vae import delete_words, drop_words, vae_loss


def test_word_deletion_keeps_the_end_token_and_padding_and_deletes_at_the_rate():
    rows, seq, rate = 4000, 12, 0.3
    lengths = jnp.asarray(np.random.default_rng(0).integers(1, seq + 1, rows), jnp.int32)
    mask = np.asarray(delete_words(jax.random.key(0), lengths, seq, rate))
    positions = np.arange(seq)[None, :]
    real = positions < np.asarray(lengths)[:, None]
    end = positions == np.asarray(lengths)[:, None] - 1
    words = real & ~end
    assert mask[end].all()  # every end token stays: no row is empty
    assert not mask[~real].any()  # padding stays padding
    deleted = 1.0 - mask[words].mean()
    assert abs(deleted - rate) < 0.01, deleted
    # deletions are independent draws: two keys delete different words
    other = np.asarray(delete_words(jax.random.key(1), lengths, seq, rate))
    assert (other != mask).any()


def test_word_dropout_spares_the_start_token_and_drops_at_the_rate():
    ids = jnp.full((3000, 10), 7, jnp.int32)
    out = np.asarray(drop_words(jax.random.key(0), ids, 0.15, pad_id=0))
    assert (out[:, 0] == 7).all()
    assert set(np.unique(out)) == {0, 7}
    dropped = (out[:, 1:] == 0).mean()
    assert abs(dropped - 0.15) < 0.01, dropped


def _batch(n=6, seq=10):
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, seq + 1, size=n).astype(np.int32)
    ids = rng.integers(1, 500, size=(n, seq)).astype(np.int32)
    ids[np.arange(seq)[None, :] >= lengths[:, None]] = 0
    return {"input_ids": jnp.asarray(ids), "lengths": jnp.asarray(lengths), "step": jnp.zeros((n,), jnp.int32)}


def test_word_deletion_changes_only_what_the_encoder_reads():
    base = T5VAEConfig.tiny(n_latent_tokens=3)
    model = T5VAE(base, key=jax.random.key(0))
    deleting = T5VAE(base.replace(word_deletion=0.5), key=jax.random.key(0))  # the same weights
    loss = eqx.filter_jit(lambda m, k: vae_loss(m, _batch(), k))
    key = jax.random.key(3)
    (plain, plain_aux), (noisy, noisy_aux) = loss(model, key), loss(deleting, key)
    # the same weights, key and targets: only the encoder's input differs, so the codes differ ...
    assert float(jnp.abs(plain - noisy)) > 1e-4
    assert noisy_aux["tokens"] == plain_aux["tokens"]  # ... and the decoder still writes every token
    # without a key (evaluation) nothing is deleted
    np.testing.assert_allclose(loss(model, None)[0], loss(deleting, None)[0], rtol=0, atol=0)


def test_word_deletion_is_validated():
    with pytest.raises(ConfigError, match="word_deletion"):
        T5VAEConfig.tiny(word_deletion=1.0)
    assert T5VAEConfig.from_dict(dataclasses.asdict(T5VAEConfig.tiny(word_deletion=0.2))).word_deletion == 0.2


def test_code_dropout_rows_read_the_null_code():
    model = T5VAE(T5VAEConfig.tiny(n_latent_tokens=3), key=jax.random.key(0))
    ids = jnp.asarray(_batch()["input_ids"][0])
    dec = jnp.concatenate([jnp.zeros((1,), jnp.int32), ids[:-1]])
    autoencode = eqx.filter_jit(lambda m, null_code: m.autoencode(ids, dec, null_code=null_code))
    decode = eqx.filter_jit(lambda m, z: m.decode_full(z, dec))
    null = autoencode(model, True)
    np.testing.assert_allclose(null.logits, decode(model, jnp.zeros_like(null.mean)), atol=1e-6)
    coded = autoencode(model, False)
    np.testing.assert_allclose(coded.logits, decode(model, coded.mean), atol=1e-6)
    assert float(jnp.max(jnp.abs(null.logits - coded.logits))) > 1e-3
    np.testing.assert_array_equal(null.mean, coded.mean)  # the regulariser still sees the code


def test_code_dropout_cuts_the_encoder_out_of_the_dropped_rows():
    # with no regulariser the encoder learns only through the rows that keep their code: when every
    # row drops it (p = 0.999 over 6 rows, this key), its gradient is exactly zero; without dropout it is not
    cfg = T5VAEConfig.tiny(n_latent_tokens=3, reg_weight=0.0)
    grad = eqx.filter_jit(lambda m, k: eqx.filter_grad(lambda m: vae_loss(m, _batch(), k)[0])(m))
    key = jax.random.key(5)
    dropped = grad(T5VAE(cfg.replace(code_dropout=0.999), key=jax.random.key(0)), key)
    kept = grad(T5VAE(cfg, key=jax.random.key(0)), key)
    assert float(jnp.max(jnp.abs(dropped.to_latent.weight))) == 0.0
    assert float(jnp.max(jnp.abs(kept.to_latent.weight))) > 0.0
    assert float(jnp.max(jnp.abs(dropped.from_latent.bias))) > 0.0  # the null code still reaches the decoder


def test_code_dropout_is_validated_and_saved():
    with pytest.raises(ConfigError, match="code_dropout"):
        T5VAEConfig.tiny(code_dropout=1.0)
    assert T5VAEConfig.from_dict(dataclasses.asdict(T5VAEConfig.tiny(code_dropout=0.1))).code_dropout == 0.1


def test_bag_of_words_loss_matches_numpy():
    model = T5VAE(T5VAEConfig.tiny(n_latent_tokens=3, bow_weight=0.5), key=jax.random.key(0))
    batch = _batch()
    loss = eqx.filter_jit(vae_loss)
    _, aux = loss(model, batch)  # no key: the code is the posterior mean, no row drops it
    ids, lengths = np.asarray(batch["input_ids"]), np.asarray(batch["lengths"])
    encode = eqx.filter_jit(lambda m, i, n: m.encode(i, mask=jnp.arange(i.shape[0]) < n))
    w, b = np.asarray(model.bow_head.weight, np.float64), np.asarray(model.bow_head.bias, np.float64)
    total, count = 0.0, 0
    for row in range(ids.shape[0]):
        z = np.asarray(encode(model, jnp.asarray(ids[row]), jnp.asarray(lengths[row])), np.float64)
        logits = w @ z.reshape(-1) + b
        logp = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
        total -= logp[ids[row, : lengths[row]]].sum()
        count += int(lengths[row])
    np.testing.assert_allclose(float(aux["bag_of_words"]), total / count, rtol=1e-4)
    plain_loss, plain = loss(T5VAE(T5VAEConfig.tiny(n_latent_tokens=3), key=jax.random.key(0)), batch)
    assert "bag_of_words" not in plain
    # the same weights otherwise: the total adds bow_weight times the bag-of-words loss
    np.testing.assert_allclose(float(aux["loss"]), float(plain_loss) + 0.5 * total / count, rtol=1e-4)


def test_bag_of_words_head_exists_only_with_its_weight():
    assert T5VAE(T5VAEConfig.tiny(), key=jax.random.key(0)).bow_head is None
    with pytest.raises(ConfigError, match="bow_weight"):
        T5VAEConfig.tiny(bow_weight=-1.0)

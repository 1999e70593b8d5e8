"""Training-time options of the T5-VAE's loss: word dropout, the null code, the bag-of-words loss."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import ConfigError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.train.tasks.vae_loss import drop_words, vae_loss


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


def test_null_code_rows_read_zeros():
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

"""T5VAE: shapes for every pooling, padding-side independence, gradients through the latent parts,
generation from latents through the shared sampler, and a pretrained T5 inside."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import ConfigError, InputError
from eqxllm.generation import beam_search
from eqxllm.models import T5, T5VAE, T5VAEConfig
from eqxllm.train.tasks.vae_loss import vae_loss
from eqxllm.vae import generate_from_latent

SEQ = 10


def _config(pooling="first", regulariser="mmd", **changes):
    changes = {"n_latent_tokens": 1 if pooling == "mean" else 3, **changes}
    return T5VAEConfig.tiny(pooling=pooling, regulariser=regulariser, **changes)


def _ids(seed=0, seq=SEQ):
    return jax.random.randint(jax.random.key(seed), (seq,), 1, 500)


@pytest.mark.parametrize("pooling", ["first", "mean", "attention"])
def test_encode_shapes_and_padding_side(pooling):
    model = T5VAE(_config(pooling), key=jax.random.key(0))
    ids = _ids()

    @eqx.filter_jit
    def run(model, ids):
        z = model.encode(ids)
        # the same 7 real tokens padded on the right or on the left (the sampler's way)
        real = ids[:7]
        right = jnp.concatenate([real, jnp.zeros(3, ids.dtype)])
        left = jnp.concatenate([jnp.zeros(3, ids.dtype), real])
        by_right = model.encode(right, mask=jnp.arange(SEQ) < 7)
        by_left = model.encode(left, mask=jnp.arange(SEQ) >= 3)
        return z, model.memory(z), model.decode_full(z, ids), by_right, by_left, model.encode(real)

    z, memory, logits, by_right, by_left, unpadded = run(model, ids)
    n = model.config.n_latent_tokens
    assert z.shape == (n, 8) and memory.shape == (n, 64) and logits.shape == (SEQ, 512)
    np.testing.assert_allclose(by_right, by_left, atol=1e-5)
    if pooling != "first":  # first-n also reads the padded slots' states; the others ignore padding
        np.testing.assert_allclose(by_right, unpadded, atol=1e-5)


def test_tanh_bounds_the_latent_and_the_posterior_has_a_variance_with_kl():
    model = T5VAE(_config(latent_activation="tanh"), key=jax.random.key(0))
    z = eqx.filter_jit(lambda m, i: m.encode(i))(model, _ids())
    assert z.shape == (3, 8) and float(jnp.max(jnp.abs(z))) < 1.0
    kl = T5VAE(_config(regulariser="kl"), key=jax.random.key(0))

    @eqx.filter_jit
    def run(m, ids):
        mean, logvar = m.posterior(ids)
        sampled = [m.autoencode(ids, ids, key=jax.random.key(k)).latent for k in (1, 2)]
        return mean, logvar, sampled, m.autoencode(ids, ids).latent

    mean, logvar, (a, b), unsampled = run(kl, _ids())
    assert logvar is not None and logvar.shape == mean.shape
    assert not np.allclose(a, b)  # sampled with a key
    np.testing.assert_array_equal(unsampled, mean)  # the mean without one


def _batch(n=4, seq=SEQ, step=0):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, seq + 1, size=n).astype(np.int32)
    ids = rng.integers(1, 500, size=(n, seq)).astype(np.int32)
    ids[np.arange(seq)[None, :] >= lengths[:, None]] = 0
    return {"input_ids": jnp.asarray(ids), "lengths": jnp.asarray(lengths), "step": jnp.full((n,), step, jnp.int32)}


@pytest.mark.parametrize("pooling,regulariser", [("first", "mmd"), ("attention", "kl"), ("mean", "mmd")])
def test_gradients_reach_every_latent_part(pooling, regulariser):
    # a large step: the regulariser's weight is ~1, so its gradient counts too
    model = T5VAE(_config(pooling, regulariser), key=jax.random.key(0))
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: vae_loss(m, _batch(step=10_000), jax.random.key(3))[0]))(model)
    parts = [grads.to_latent.weight, grads.from_latent.weight, grads.memory_positions, grads.memory_norm.weight]
    parts += [grads.t5.encoder.layers.blocks.ffn.down.weight]
    if pooling == "attention":
        parts += [grads.pool_queries, grads.pool_attention.q_proj.weight]
    if regulariser == "kl":
        parts += [grads.to_logvar.weight]
    for g in parts:
        assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 0


def test_regulariser_gradient_pushes_the_codes_towards_the_prior():
    model = T5VAE(_config(), key=jax.random.key(0))

    # only the regulariser (no reconstruction) through the encoder's code: its gradient must be nonzero
    def reg(m):
        z = jax.vmap(m.encode)(_batch()["input_ids"])
        return eqxllm.vae.mmd_to_normal(z, jax.random.key(0))

    g = eqx.filter_jit(eqx.filter_grad(reg))(model)
    assert float(jnp.max(jnp.abs(g.to_latent.weight))) > 0 and float(jnp.abs(g.from_latent.weight).max()) == 0


def test_generate_reconstructs_through_the_shared_sampler():
    model = T5VAE(_config(), key=jax.random.key(0))
    ids = _ids()
    from_text = eqxllm.generate(model, ids, max_new_tokens=6)
    from_latent = generate_from_latent(model, model.encode(ids), max_new_tokens=6)
    np.testing.assert_array_equal(from_text, from_latent)
    # greedy decoding = argmax of the teacher-forced logits fed its own tokens
    dec_in = jnp.concatenate([jnp.zeros(1, jnp.int32), from_latent[:-1]])
    np.testing.assert_array_equal(jnp.argmax(model.decode_full(model.encode(ids), dec_in), -1), from_latent)
    batch = generate_from_latent(model, jnp.stack([model.encode(ids), model.encode(_ids(1))]), max_new_tokens=6)
    np.testing.assert_array_equal(batch[0], from_latent)
    with pytest.raises(InputError, match="latents must be"):
        generate_from_latent(model, jnp.zeros((2, 8)))


def test_from_t5_keeps_the_pretrained_weights(tmp_path):
    t5 = T5(_config().t5, key=jax.random.key(7))
    eqxllm.save_pretrained(t5, tmp_path / "t5")
    from eqxllm.checkpoints.t5_vae import t5_vae_from_t5

    vae = t5_vae_from_t5(tmp_path / "t5", _config(n_latent_tokens=2), key=jax.random.key(1))
    assert vae.config.n_latent_tokens == 2 and vae.config.t5 == t5.config
    for a, b in zip(jax.tree.leaves(vae.t5), jax.tree.leaves(t5)):
        np.testing.assert_array_equal(a, b)
    ids = _ids()
    np.testing.assert_allclose(vae.t5.encode(ids), t5.encode(ids), atol=0)


def test_config_reads_back_from_a_run_config_dict():
    cfg = _config("attention", "kl", latent_noise=0.1)
    assert T5VAEConfig.from_dict({"model_type": "t5_vae", **dataclasses.asdict(cfg)}) == cfg
    assert cfg.vocab_size == cfg.t5.vocab_size and cfg.max_positions == cfg.max_length


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="pooling='mean'.*n_latent_tokens=3"):
        T5VAEConfig.tiny(pooling="mean", n_latent_tokens=3)
    with pytest.raises(ConfigError, match=r"regulariser=.wae. is unknown; expected one of"):
        T5VAEConfig.tiny(regulariser="wae")
    with pytest.raises(ConfigError, match="n_latent_tokens=20.*max_length=16"):
        T5VAEConfig.tiny(n_latent_tokens=20)


def test_the_latent_is_the_trained_one_whatever_the_padding():
    # pad id 7, not 0: training pads with it; the sampler pads a batch with 0 and takes no mask. With
    # pooling="first", slot 4 of a 3-token sentence reads the state of a padding position
    model = T5VAE(_config(n_latent_tokens=4).with_vocabulary(512, pad=7, eos=7, start=7), key=jax.random.key(0))
    short = jnp.array([17, 40, 7])

    @eqx.filter_jit
    def latents(model):
        trained = jnp.full(16, 7).at[:3].set(short)  # as encode_sentences pads it
        real = jnp.arange(16) < 3
        padded = [trained.at[3:].set(0), trained.at[3:].set(123), jnp.roll(trained.at[3:].set(0), 13)]
        masks = [real, real, jnp.roll(real, 13)]  # the last one left-padded with 0, as the sampler does
        others = [model.encode(i, mask=m) for i, m in zip(padded, masks)]
        return model.encode(trained, mask=real), [*others, model.encode(short)]  # unpadded, shorter than 4

    z, others = latents(model)
    for other in others:
        np.testing.assert_allclose(other, z, atol=1e-6)
    batch = eqxllm.generate(model, [short.tolist(), [5, 6, 9, 11, 13, 21, 7]], max_new_tokens=4)
    np.testing.assert_array_equal(batch[0], generate_from_latent(model, z, max_new_tokens=4))
    np.testing.assert_array_equal(beam_search(model, short, max_new_tokens=4, num_beams=1), batch[0])


@pytest.mark.usefixtures("unchecked_annotations")
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda m: m.encode(jnp.arange(1, 6), mask=jnp.ones(4, bool)),
            r"mask has shape \(4,\) but input_ids has 5 positions",
        ),
        (lambda m: m.encode(jnp.arange(1, 6), mask=jnp.ones(5)), "must be booleans .* got dtype float32"),
        (lambda m: m.decode_full(jnp.zeros((3, 7)), jnp.array([0, 5])), r"\[3, 8\], got shape \[3, 7\]"),
        (lambda m: m.decode_full(jnp.zeros((3, 8)), jnp.array([0, 5]), decoder_mask=jnp.ones(2)), "got dtype float32"),
    ],
)
def test_bad_inputs_are_input_errors(call, match):
    with pytest.raises(InputError, match=match):
        call(T5VAE(_config(), key=jax.random.key(0)))

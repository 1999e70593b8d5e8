"""Decoding with the decoder's own language model added (``prior_weight``), against a step-by-step
reference that recomputes every prefix without a cache."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.vae import generate_from_latent


@eqx.filter_jit
def _last_logits(model, latent, dec, n):
    """The decoder's logits after the first ``n`` ids of ``dec`` (fixed width, so one compile; the
    decoder is causal, so the padding behind position ``n - 1`` does not reach it)."""
    return model.decode_full(latent, dec)[n - 1]


def _reference(model, latent, weight, steps):
    cfg = model.config
    ids = [cfg.decoder_start_token_id]
    for _ in range(steps):
        dec = jnp.asarray(ids + [cfg.pad_token_id] * (steps + 1 - len(ids)), jnp.int32)
        code = jax.nn.log_softmax(_last_logits(model, latent, dec, jnp.int32(len(ids))))
        prior = jax.nn.log_softmax(_last_logits(model, jnp.zeros_like(latent), dec, jnp.int32(len(ids))))
        ids.append(int(jnp.argmax(code + weight * prior)))
        if ids[-1] == cfg.eos_token_id:
            break
    return ids[1:]


@pytest.fixture(scope="module")
def model():
    return T5VAE(T5VAEConfig.tiny(n_latent_tokens=3, code_dropout=0.1), key=jax.random.key(0))


def test_prior_weight_fuses_the_null_codes_language_model(model):
    latents = jax.random.normal(jax.random.key(1), (3, 3, model.config.latent_size))
    steps = 7
    outs = {}
    for weight in (0.0, 0.8, 3.0):
        got = np.asarray(generate_from_latent(model, latents, max_new_tokens=steps, prior_weight=weight))
        for row, latent in zip(got, latents):
            want = _reference(model, latent, weight, steps)
            assert row[: len(want)].tolist() == want, weight
        outs[weight] = got
    # the weight matters: a strong language model rewrites what the random code alone would write
    assert (outs[0.0] != outs[3.0]).any()


def test_prior_weight_needs_a_model_trained_with_code_dropout(model):
    plain = T5VAE(T5VAEConfig.tiny(n_latent_tokens=3), key=jax.random.key(0))
    latent = jnp.zeros((3, plain.config.latent_size))
    with pytest.raises(InputError, match="code_dropout"):
        generate_from_latent(plain, latent, prior_weight=0.5)
    with pytest.raises(InputError, match="prior_weight"):
        generate_from_latent(model, latent, prior_weight=-1.0)

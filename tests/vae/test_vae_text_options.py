"""The text API's arguments are checked before any decoding: ``decode_latents`` as ``eqxllm.generate``
checks its sampling options, ``encode_texts`` for a bare string."""

import equinox as eqx
import jax
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.models import T5VAE, T5VAEConfig
from eqxllm.vae import decode_latents, encode_texts

from ._letters import VAELetters


@pytest.fixture(scope="module")
def vae():  # shapes only: every check here comes before any weight is read
    return eqx.filter_eval_shape(T5VAE, T5VAEConfig.tiny(), key=jax.random.key(0))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"temperature": 1.5}, r"sampling options \{'temperature': 1.5\} need a random key"),
        ({"temperature": -1.0, "key": jax.random.key(0)}, "temperature must be >= 0"),
        ({"temperature": float("nan"), "key": jax.random.key(0)}, "temperature must be a finite number"),
        ({"temperature": 1.0, "key": jax.random.key(0), "num_beams": 2}, "choose beam search .* or sampling"),
    ],
)
def test_decode_latents_checks_its_options_as_generate_does(vae, options, match):
    with pytest.raises(InputError, match=match):
        decode_latents(vae, VAELetters(), np.zeros((2, 4, 8), np.float32), **options)


def test_encode_texts_refuses_a_bare_string(vae):
    with pytest.raises(InputError, match=r"a list of sentences, got one string 'Tom saw a dog.'; pass \[text\]"):
        encode_texts(vae, VAELetters(), "Tom saw a dog.")

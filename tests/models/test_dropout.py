"""Dropout is on only with a key, and every configured rate takes effect: GPT-2's ``embd_pdrop``,
``resid_pdrop`` and ``attn_pdrop`` (attention probabilities), T5's ``dropout_rate``."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.models import GPT2, T5, GPT2Config, T5Config

IDS = jnp.asarray([3, 17, 99, 4, 250, 8, 61])
KEY = jax.random.key(5)
NO_DROPOUT = dict(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)


@eqx.filter_jit
def run(model, *args, key=None):
    """``model(*args, key=key)``, compiled once per model and per key/no key (an eager call would
    compile the layer scan again each time)."""
    return model(*args, key=key)


@pytest.mark.parametrize("rate", ["embd_pdrop", "resid_pdrop", "attn_pdrop"])
def test_each_gpt2_rate_takes_effect(rate):
    model = GPT2(GPT2Config.tiny().replace(**{**NO_DROPOUT, rate: 0.2}), key=jax.random.key(0))
    plain = run(model, IDS)
    np.testing.assert_array_equal(run(model, IDS), plain)  # no key: deterministic
    dropped = run(model, IDS, key=KEY)
    assert np.max(np.abs(np.asarray(dropped - plain))) > 1e-3
    np.testing.assert_array_equal(run(model, IDS, key=KEY), dropped)  # the key decides


def test_gpt2_without_rates_ignores_the_key():
    model = GPT2(GPT2Config.tiny().replace(**NO_DROPOUT), key=jax.random.key(0))
    np.testing.assert_array_equal(run(model, IDS, key=KEY), run(model, IDS))


def test_t5_dropout_only_with_a_key():
    model = T5(T5Config.tiny().replace(dropout_rate=0.2), key=jax.random.key(0))
    dec = jnp.asarray([0, 5, 9, 12])
    plain = run(model, IDS, dec)
    assert np.max(np.abs(np.asarray(run(model, IDS, dec, key=KEY) - plain))) > 1e-3
    silent = T5(T5Config.tiny().replace(dropout_rate=0.0), key=jax.random.key(0))
    np.testing.assert_array_equal(run(silent, IDS, dec, key=KEY), run(silent, IDS, dec))

"""``eqxllm.nn.decoding``: every family's cache is made by the same ``empty_cache``, so the errors of
a bad cache length are the same class and message. Models are abstract (``eqx.filter_eval_shape``):
the checks run before any array is touched."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from eqxllm.errors import InputError
from eqxllm.models import GPT2, T5, Gemma, GemmaConfig, GPT2Config, T5Config


def _abstract(model_cls, config):
    return eqx.filter_eval_shape(model_cls, config, key=jax.random.key(0))


@pytest.mark.parametrize(
    ("model_cls", "config", "limit"),
    [(GPT2, GPT2Config.tiny(), "n_positions=128"), (Gemma, GemmaConfig.tiny(1), "max_position_embeddings=128")],
)
def test_decoder_only_cache_lengths_are_refused(model_cls, config, limit):
    model = _abstract(model_cls, config)
    with pytest.raises(InputError, match="max_len >= 1"):
        model.init_cache(0)
    with pytest.raises(InputError, match=f"129 slots .* exceeds the context, {limit}"):
        model.init_cache(129)
    assert model.init_cache(128).max_len == 128


def test_t5_decoder_cache_length_is_refused_with_the_same_error():
    cfg = T5Config.tiny()
    model = _abstract(T5, cfg)
    encoder_out = jnp.zeros((3, cfg.d_model))
    with pytest.raises(InputError, match="max_len >= 1"):
        model.init_decoder_cache(encoder_out, None, 0)

"""``eqxllm.nn.decoding``: every family's cache is made by the same ``empty_cache``, so the errors of
a bad cache length are the same class and message. Models are abstract (``eqx.filter_eval_shape``):
the checks run before any array is touched."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from eqxllm.errors import InputError
from eqxllm.models import GPT2, T5, Gemma, GemmaConfig, GPT2Config, T5Config
from eqxllm.nn import CausalMask, KVCache
from eqxllm.nn.decoding import begin_pass, causal_mask


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


def test_causal_mask_is_structured_only_for_a_whole_sequence():
    """No padding mask and no cache: a CausalMask (the triangle, with the window); otherwise an array."""
    dims = GPT2(GPT2Config.tiny(), key=jax.random.key(0)).dims
    ids = jnp.arange(5)
    _, whole = begin_pass(dims, ids, None, None, None)
    mask = causal_mask(whole, window=2)
    assert isinstance(mask, CausalMask) and mask.window == 2
    q, k = jnp.arange(5)[:, None], jnp.arange(5)[None, :]
    assert bool(jnp.all(mask.dense == ((k <= q) & (q - k < 2))))
    _, padded = begin_pass(dims, ids, jnp.arange(5) > 0, None, None)
    _, cached = begin_pass(dims, ids, None, None, KVCache.empty(num_layers=1, max_len=8, num_kv_heads=1, head_dim=4))
    for slots in (padded, cached):
        assert not isinstance(causal_mask(slots), CausalMask)

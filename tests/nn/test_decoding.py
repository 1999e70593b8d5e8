"""``eqxllm.nn.decoding``: every family's cache is made by the same ``empty_cache``, so the errors of
a bad cache length are the same class and message. Models are abstract (``eqx.filter_eval_shape``):
the checks run before any array is touched."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from eqxllm.errors import InputError
from eqxllm.models import GPT2, T5, Gemma, GemmaConfig, GPT2Config, Llama, T5Config, config_preset
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


@pytest.mark.parametrize(
    ("model_cls", "config"),
    [(GPT2, GPT2Config.tiny()), (Llama, config_preset("llama-tiny")), (Gemma, GemmaConfig.tiny(1))],
)
@pytest.mark.parametrize("name", ["mask", "positions"])
def test_a_mask_or_positions_of_another_length_is_named(model_cls, config, name):
    """Without the jaxtyping hook (users' default) a broadcasting TypeError used to come from deep in
    the attention; the check runs before any weight is touched, so the model may be abstract."""
    forward = getattr(model_cls.forward, "__wrapped__", model_cls.forward)  # past the suite's hook
    other = {"mask": jnp.ones(2, bool), "positions": jnp.arange(2)}[name]
    with pytest.raises(InputError, match=rf"{name} has shape \(2,\) but input_ids has 3 positions"):
        forward(_abstract(model_cls, config), jnp.array([1, 2, 3]), **{name: other})


def test_positions_past_a_learned_table_are_refused_as_ids_are():
    """GPT-2's wpe has n_positions rows: a position at or past it gave all-NaN logits (a gather
    out of range fills NaN). Eagerly an InputError, under jit an EquinoxRuntimeError."""
    dims = _abstract(GPT2, GPT2Config.tiny()).dims
    ids = jnp.array([1, 2, 3])
    for bad, shown in ((jnp.array([126, 127, 128]), "128"), (jnp.array([-1, 0, 1]), "-1")):
        with pytest.raises(InputError, match=rf"positions must be in \[0, 128\) \(n_positions, .*\); got {shown}"):
            begin_pass(dims, ids, None, bad, None)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"positions must be in \[0, 128\)"):
        jax.block_until_ready(eqx.filter_jit(begin_pass)(dims, ids, None, jnp.array([126, 127, 128]), None))
    assert begin_pass(dims, ids, None, jnp.array([125, 126, 127]), None)[1].positions.tolist() == [125, 126, 127]
    # rotary positions have no table: a llama-like model runs past max_position_embeddings, as transformers does
    rotary = _abstract(Gemma, GemmaConfig.tiny(1)).dims
    assert begin_pass(rotary, ids, None, jnp.array([200, 201, 202]), None)[1].positions.tolist() == [200, 201, 202]

"""Sliding layers cache only their last ``sliding_window`` slots (rings), and decoding over such a cache
gives the logits of the full forward pass (through a left-padded prompt longer than the window, a chunk
shorter than it and single steps; a mixture of experts' router logits too), and the tokens of a cache
that keeps every slot in batched generation and beam search (also with a chunked prefill)."""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import InputError
from eqxllm.generation import beam_search
from eqxllm.models import Gemma, GemmaConfig, Llama
from eqxllm.models.llama_presets import llama_preset
from eqxllm.nn.decoding import CausalLM

TOL = 1e-4
PAD = 2
KEY = jax.random.key(3)
CHUNKS = (9, 3, 1, 1)  # the left-padded prompt (7 real tokens), a chunk, two steps; the window is 4


@functools.cache
def _model(name: str):
    if name == "gemma3":  # layers S S G S: one whole period of the pattern, then one layer left
        return Gemma(
            GemmaConfig.tiny(3).replace(num_hidden_layers=4, sliding_window_pattern=3, sliding_window=4), key=KEY
        )
    return Llama(llama_preset("mixtral-tiny").replace(model_type="mixtral", sliding_window=4), key=KEY)  # every layer


@pytest.fixture(scope="module", params=["gemma3", "mixtral"])
def model(request):
    return _model(request.param)


@eqx.filter_jit
def _forward(model, ids, mask, cache):
    return model.forward(ids, mask=mask, cache=cache)


def _every_slot(model):
    """The same model, of a subclass whose cache keeps every slot in every layer. Another type, so that
    the compiled generation functions trace it anew: patching ``init_cache`` on the model's own class
    would reuse the programs already compiled with rings for the same shapes."""
    cls = type(f"EverySlot{type(model).__name__}", (type(model),), {"init_cache": CausalLM.init_cache})
    plain = object.__new__(cls)
    for field in dataclasses.fields(model):
        object.__setattr__(plain, field.name, getattr(model, field.name))
    return plain


def test_the_cache_keeps_the_window_for_sliding_layers(model):
    spec = model.config.decoder
    cache = model.init_cache(32)
    sliding = sum(spec.sliding_flags)
    assert cache.ring is not None and cache.ring.k.shape == (sliding, 4, spec.num_kv_heads, spec.head_dim)
    assert cache.k.shape == (spec.num_layers - sliding, 32, spec.num_kv_heads, spec.head_dim)
    assert model.init_cache(4).ring is None  # a window as long as the cache: nothing to save
    other = _model("mixtral" if spec.dense else "gemma3")  # another stack of sliding layers
    with pytest.raises(InputError, match="rings do not fit the model's sliding layers"):
        model.decode(jnp.asarray([1]), other.init_cache(32))


def test_ring_decoding_equals_the_full_pass(model):
    total = sum(CHUNKS)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=total))
    mask = jnp.arange(total) >= PAD
    full, _, full_router = _forward(model, ids, mask, None)
    cache, start = model.init_cache(total + 2), 0
    for seq in CHUNKS:
        logits, cache, router = _forward(model, ids[start : start + seq], mask[start : start + seq], cache)
        real = np.asarray(mask[start : start + seq])  # padding sees no key: its outputs are arbitrary
        np.testing.assert_allclose(np.asarray(logits)[real], np.asarray(full)[start : start + seq][real], atol=TOL)
        if full_router is not None:  # the experts' router logits come back in layer order
            expected = np.asarray(full_router)[:, start : start + seq][:, real]
            np.testing.assert_allclose(np.asarray(router)[:, real], expected, atol=TOL)
        start += seq
    assert int(cache.index) == total and cache.ring is not None


def test_generation_and_beams_are_those_of_a_cache_of_every_slot():
    model = _model("mixtral")  # the cheaper program; the mixed stack's batched generation is in the parity tests
    prompts = [[5, 9, 14, 3, 7, 11], [8, 2]]  # left-padded to one batch
    long = jnp.array([5, 9, 14, 3, 7, 11, 2, 8, 6, 1, 12, 4])  # 11 tokens fill a beam search's cache
    options = dict(max_new_tokens=8, eos_token_id=7)
    ring = eqxllm.generate(model, prompts, **options)
    assert ring.shape == (2, 8)
    # a prefill in chunks longer than the window (the first of one token) fills the rings the same way
    np.testing.assert_array_equal(eqxllm.generate(model, prompts, prefill_chunk=5, **options), ring)
    beams = beam_search(model, long, num_beams=3, return_all=True, **options)
    np.testing.assert_array_equal(
        beam_search(model, long, num_beams=3, return_all=True, prefill_chunk=5, **options), beams
    )
    plain = _every_slot(model)
    assert plain.init_cache(32).ring is None and model.init_cache(32).ring is not None
    np.testing.assert_array_equal(eqxllm.generate(plain, prompts, **options), ring)
    np.testing.assert_array_equal(beam_search(plain, long, num_beams=3, return_all=True, **options), beams)

"""``KVCache``: an empty cache, and positions/slots/validity of left-padded and continuing chunks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.nn import KVCache

T, F = True, False


def _empty(max_len=8, dtype=jnp.float32) -> KVCache:
    return KVCache.empty(num_layers=3, max_len=max_len, num_kv_heads=2, head_dim=4, dtype=dtype)


def test_empty():
    cache = _empty()
    assert cache.k.shape == cache.v.shape == (3, 8, 2, 4)
    assert cache.k.dtype == jnp.float32 and cache.max_len == 8
    assert not np.any(np.asarray(cache.k)) and not np.any(np.asarray(cache.v))
    assert cache.valid.shape == (8,) and not np.any(np.asarray(cache.valid))
    assert cache.index.shape == () and int(cache.index) == 0
    assert _empty(dtype=jnp.bfloat16).v.dtype == jnp.bfloat16


def _advance(cache: KVCache, mask) -> tuple[KVCache, np.ndarray, np.ndarray, np.ndarray]:
    positions, slots, valid = cache.prepare(jnp.asarray(mask))
    cache = cache.advanced(cache.k, cache.v, valid, len(mask))
    return cache, np.asarray(positions), np.asarray(slots), np.asarray(valid)


def test_left_padded_prompt_then_continuing_chunks():
    cache, positions, slots, valid = _advance(_empty(), [F, F, T, T, T])
    np.testing.assert_array_equal(positions, [0, 0, 0, 1, 2])  # real tokens count from 0
    np.testing.assert_array_equal(slots, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(valid, [F, F, T, T, T, F, F, F])
    assert int(cache.index) == 5

    cache, positions, slots, valid = _advance(cache, [T])  # one decoding step
    np.testing.assert_array_equal(positions, [3])
    np.testing.assert_array_equal(slots, [5])
    np.testing.assert_array_equal(valid, [F, F, T, T, T, T, F, F])

    cache, positions, slots, valid = _advance(cache, [T, T])  # a continuing chunk
    np.testing.assert_array_equal(positions, [4, 5])
    np.testing.assert_array_equal(slots, [6, 7])
    np.testing.assert_array_equal(valid, [F, F, T, T, T, T, T, T])
    assert int(cache.index) == 8


def test_unpadded_prompt():
    _, positions, slots, valid = _advance(_empty(6), [T, T, T, T])
    np.testing.assert_array_equal(positions, [0, 1, 2, 3])
    np.testing.assert_array_equal(slots, [0, 1, 2, 3])
    np.testing.assert_array_equal(valid, [T, T, T, T, F, F])


def test_prepare_does_not_change_the_cache():
    cache = _empty()
    cache.prepare(jnp.array([T, T]))
    assert int(cache.index) == 0 and not np.any(np.asarray(cache.valid))


def test_batch_of_caches_under_vmap():
    """Each sequence of a batch has its own padding and so its own positions."""
    caches = jax.vmap(lambda _: _empty())(jnp.arange(2))
    masks = jnp.array([[F, F, T, T], [T, T, T, T]])
    positions, slots, valid = jax.vmap(KVCache.prepare)(caches, masks)
    np.testing.assert_array_equal(np.asarray(positions), [[0, 0, 0, 1], [0, 1, 2, 3]])
    np.testing.assert_array_equal(np.asarray(slots), [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(np.asarray(valid)[:, :4], np.asarray(masks))


def test_prepare_under_jit_with_a_traced_index():
    cache, *_ = _advance(_empty(), [F, T, T])
    positions, slots, _ = jax.jit(KVCache.prepare)(cache, jnp.array([T, T]))
    np.testing.assert_array_equal(np.asarray(positions), [2, 3])
    np.testing.assert_array_equal(np.asarray(slots), [3, 4])


def test_overflow_raises_instead_of_overwriting():
    """A write past the last slot would be clamped by ``dynamic_update_slice`` onto earlier slots."""
    cache, *_ = _advance(_empty(4), [T, T, T])
    cache.prepare(jnp.array([T]))  # exactly fills the cache: fine
    with pytest.raises(RuntimeError, match="KV cache overflow: 2 new token"):
        cache.prepare(jnp.array([T, T]))
    with pytest.raises(RuntimeError, match="KV cache overflow"):
        jax.block_until_ready(eqx.filter_jit(KVCache.prepare)(cache, jnp.array([T, T])))


def test_a_chunk_longer_than_the_cache_is_refused_at_once():
    """Its shape says it cannot fit: an InputError when traced, not dynamic_update_slice's TypeError."""
    for prepare in (KVCache.prepare, eqx.filter_jit(KVCache.prepare)):
        with pytest.raises(InputError, match="KV cache overflow: 5 new token.* more than the 4 slots"):
            prepare(_empty(4), jnp.ones(5, bool))

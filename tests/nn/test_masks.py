"""``attention_mask``: causal, bidirectional with padding, sliding windows (also traced), and cache slots."""

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.nn import attention_mask

T, F = True, False


def _mask(q_slots, kv_valid, **kwargs) -> np.ndarray:
    return np.asarray(attention_mask(jnp.asarray(q_slots), jnp.asarray(kv_valid), **kwargs))


def test_causal():
    out = _mask(np.arange(5), np.ones(5, bool), causal=True)
    np.testing.assert_array_equal(out, np.tril(np.ones((5, 5), bool)))


def test_bidirectional_with_padding():
    valid = [T, T, T, F, F]
    out = _mask(np.arange(5), valid, causal=False)
    np.testing.assert_array_equal(out, np.array([valid] * 5))


def test_causal_with_left_padding():
    out = _mask(np.arange(4), [F, F, T, T], causal=True)
    expected = np.array(
        [
            [F, F, F, F],  # padding rows see nothing: the kernel keeps them finite
            [F, F, F, F],
            [F, F, T, F],
            [F, F, T, T],
        ]
    )
    np.testing.assert_array_equal(out, expected)


WINDOW_3 = np.array(
    [
        [T, F, F, F, F, F],
        [T, T, F, F, F, F],
        [T, T, T, F, F, F],
        [F, T, T, T, F, F],
        [F, F, T, T, T, F],
        [F, F, F, T, T, T],
    ]
)


def test_sliding_window():
    out = _mask(np.arange(6), np.ones(6, bool), causal=True, window=3)
    np.testing.assert_array_equal(out, WINDOW_3)


def test_window_at_least_seq_is_plain_causal():
    out = _mask(np.arange(6), np.ones(6, bool), causal=True, window=6)
    np.testing.assert_array_equal(out, np.tril(np.ones((6, 6), bool)))


def test_traced_window_inside_jit():
    """Scanned layers pass their window as an array: one compiled function serves every window."""
    traces = []

    @jax.jit
    def build(window):
        traces.append(window)
        return attention_mask(jnp.arange(6), jnp.ones(6, bool), causal=True, window=window)

    np.testing.assert_array_equal(np.asarray(build(jnp.asarray(3, jnp.int32))), WINDOW_3)
    full = np.asarray(build(jnp.asarray(100, jnp.int32)))
    np.testing.assert_array_equal(full, np.tril(np.ones((6, 6), bool)))
    assert len(traces) == 1


def test_per_layer_windows_under_vmap():
    windows = jnp.array([3, 6], jnp.int32)
    masks = jax.vmap(lambda w: attention_mask(jnp.arange(6), jnp.ones(6, bool), causal=True, window=w))(windows)
    np.testing.assert_array_equal(np.asarray(masks[0]), WINDOW_3)
    np.testing.assert_array_equal(np.asarray(masks[1]), np.tril(np.ones((6, 6), bool)))


def test_cache_slots():
    """Two new tokens at slots 3 and 4 of an 6-slot cache whose slots 0..4 are written (slot 0 is padding)."""
    out = _mask([3, 4], [F, T, T, T, T, F], causal=True)
    expected = np.array([[F, T, T, T, F, F], [F, T, T, T, T, F]])
    np.testing.assert_array_equal(out, expected)
    windowed = _mask([3, 4], [F, T, T, T, T, F], causal=True, window=2)
    np.testing.assert_array_equal(windowed, np.array([[F, F, T, T, F, F], [F, F, F, T, T, F]]))

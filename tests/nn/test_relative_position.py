"""T5's relative position buckets and the learned per-head bias (Raffel et al., 2020)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import RelativePositionBias, relative_position_bucket


def _t5_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """A line-by-line NumPy port of ``T5Attention._relative_position_bucket`` (Hugging Face / Mesh
    TensorFlow), float32 logs as in PyTorch."""
    relative_position = np.asarray(relative_position, np.int64)
    relative_buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).astype(np.int64) * num_buckets
        relative_position = np.abs(relative_position)
    else:
        relative_position = -np.minimum(relative_position, np.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    with np.errstate(divide="ignore"):
        ratio = np.log(relative_position.astype(np.float32) / np.float32(max_exact))
    large = ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    with np.errstate(invalid="ignore"):
        large = max_exact + large.astype(np.int64)
    large = np.minimum(large, np.full_like(large, num_buckets - 1))
    relative_buckets += np.where(is_small, relative_position, large)
    return relative_buckets


REL = np.arange(-300, 301)


@pytest.mark.parametrize("bidirectional", [True, False], ids=["encoder", "decoder"])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (16, 64), (8, 20)])
def test_buckets_match_t5(bidirectional, num_buckets, max_distance):
    out = relative_position_bucket(
        jnp.asarray(REL, jnp.int32),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    )
    assert out.shape == REL.shape and jnp.issubdtype(out.dtype, jnp.integer)
    ref = _t5_bucket(REL, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(np.asarray(out), ref)
    assert np.asarray(out).min() >= 0 and np.asarray(out).max() < num_buckets


def test_bucket_landmarks():
    """Hand-checked values for the T5 default (32 buckets, distance 128)."""
    rel = jnp.array([0, -1, -7, -8, -128, -300, 1, 7, 300], jnp.int32)
    enc = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    # past: exact 0..7, then log buckets up to 15; future: the same shifted by 16
    np.testing.assert_array_equal(np.asarray(enc), [0, 1, 7, 8, 15, 15, 17, 23, 31])
    dec = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    # causal: the future collapses to bucket 0; 16 exact past buckets
    np.testing.assert_array_equal(np.asarray(dec), [0, 1, 7, 8, 31, 31, 0, 0, 0])


def test_buckets_of_a_matrix():
    rel = jnp.arange(5)[None, :] - jnp.arange(4)[:, None]
    out = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(np.asarray(out), _t5_bucket(np.asarray(rel)))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bias_values(bidirectional):
    heads, buckets = 3, 32
    rpb = RelativePositionBias(buckets, heads, bidirectional=bidirectional, max_distance=128, key=jax.random.key(0))
    assert rpb.weight.shape == (buckets, heads)
    q_pos, k_pos = np.arange(5) + 10, np.arange(200)
    out = rpb(jnp.asarray(q_pos), jnp.asarray(k_pos))
    assert out.shape == (heads, 5, 200)
    table = np.asarray(rpb.weight)
    idx = _t5_bucket(k_pos[None, :] - q_pos[:, None], bidirectional, buckets, 128)
    expected = np.stack([table[idx, h] for h in range(heads)])
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_relative_position_bias_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_buckets=2"):
        RelativePositionBias(2, 4, bidirectional=True, max_distance=128, key=jax.random.key(0))
    with pytest.raises(ValueError, match="max_distance=8"):
        RelativePositionBias(32, 4, bidirectional=True, max_distance=8, key=jax.random.key(0))

"""Rotary position embeddings (Su et al., 2021) in the ``rotate_half`` layout of Hugging Face's
Llama/Gemma: angles, rotation, and the relative-position property of rotated dot products."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.nn import apply_rotary
from eqxllm.nn.positions import rotary_angles

from ._reference import apply_rope, np64, rotary_cos_sin

HEAD_DIM = 16


@pytest.mark.parametrize(("base", "scale"), [(10000.0, 1.0), (1e6, 1.0), (10000.0, 4.0), (500.0, 2.5)])
def test_angles_match_reference(base, scale):
    positions = np.arange(48)
    cos, sin = rotary_angles(jnp.asarray(positions), HEAD_DIM, base=base, scale=scale)
    assert cos.shape == sin.shape == (48, HEAD_DIM) and cos.dtype == jnp.float32
    ref_cos, ref_sin = rotary_cos_sin(positions, HEAD_DIM, base, scale)
    np.testing.assert_allclose(np64(cos), ref_cos, atol=1e-5)
    np.testing.assert_allclose(np64(sin), ref_sin, atol=1e-5)


def test_bases_and_scales_change_the_angles():
    p = jnp.arange(1, 9)
    a = np64(rotary_angles(p, HEAD_DIM)[1])
    assert np.max(np.abs(a - np64(rotary_angles(p, HEAD_DIM, base=1e6)[1]))) > 1e-2
    assert np.max(np.abs(a - np64(rotary_angles(p, HEAD_DIM, scale=4.0)[1]))) > 1e-2


def test_linear_scale_is_position_interpolation():
    """Scale ``s`` at position ``p`` equals no scale at position ``p / s`` (Chen et al., 2023)."""
    cos_s, sin_s = rotary_angles(jnp.array([0, 4, 8, 12]), HEAD_DIM, scale=4.0)
    cos_1, sin_1 = rotary_angles(jnp.array([0, 1, 2, 3]), HEAD_DIM)
    np.testing.assert_allclose(np.asarray(cos_s), np.asarray(cos_1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sin_s), np.asarray(sin_1), atol=1e-6)


def test_traced_base_per_layer():
    """Scanned layers with different bases (Gemma 3: 10k local, 1M global) pass the base as an array."""
    bases = jnp.array([10000.0, 1e6])
    cos, sin = jax.jit(jax.vmap(lambda b: rotary_angles(jnp.arange(8), HEAD_DIM, base=b)))(bases)
    for i, base in enumerate([10000.0, 1e6]):
        ref_cos, ref_sin = rotary_cos_sin(np.arange(8), HEAD_DIM, base)
        np.testing.assert_allclose(np64(cos[i]), ref_cos, atol=1e-5)
        np.testing.assert_allclose(np64(sin[i]), ref_sin, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_apply_rotary_matches_rotate_half(dtype):
    positions = np.arange(10) * 3
    x = jax.random.normal(jax.random.key(0), (10, 3, HEAD_DIM), jnp.float32).astype(dtype)
    cos, sin = rotary_angles(jnp.asarray(positions), HEAD_DIM)
    out = apply_rotary(x, cos, sin)
    assert out.shape == x.shape and out.dtype == dtype
    ref = apply_rope(np64(x), *rotary_cos_sin(positions, HEAD_DIM))
    atol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np64(out), ref, atol=atol)


def test_rotation_preserves_norms_and_position_zero_is_identity():
    x = jax.random.normal(jax.random.key(0), (6, 2, HEAD_DIM), jnp.float32)
    out = apply_rotary(x, *rotary_angles(jnp.arange(6), HEAD_DIM))
    np.testing.assert_allclose(np.linalg.norm(np64(out), axis=-1), np.linalg.norm(np64(x), axis=-1), rtol=1e-5)
    np.testing.assert_allclose(np64(out[0]), np64(x[0]), atol=1e-7)


def _rotated_dot(q, k, m, n):
    """``<R(m) q, R(n) k>`` for one query and one key vector (one head)."""
    rq = apply_rotary(q[None, None], *rotary_angles(jnp.array([m]), HEAD_DIM))
    rk = apply_rotary(k[None, None], *rotary_angles(jnp.array([n]), HEAD_DIM))
    return float(jnp.sum(rq * rk))


def test_rotated_dot_product_depends_only_on_offset():
    q, k = jax.random.normal(jax.random.key(1), (2, HEAD_DIM), jnp.float32)
    for offset in (0, 3, -5):
        dots = [_rotated_dot(q, k, m, m + offset) for m in (0, 7, 19, 40)]
        np.testing.assert_allclose(dots, dots[0], rtol=1e-4, atol=1e-4)
    assert abs(_rotated_dot(q, k, 0, 3) - _rotated_dot(q, k, 0, 4)) > 1e-3


def test_odd_head_dim_is_refused():
    """Pairs of features rotate; an odd width used to give tables one column too wide."""
    with pytest.raises(ValueError, match="even head_dim .* got 7"):
        rotary_angles(jnp.arange(4), 7)


@pytest.mark.usefixtures("unchecked_annotations")
def test_a_table_for_another_head_dim_or_length_is_refused_by_name():
    x = jnp.ones((6, 2, HEAD_DIM))
    cos, sin = rotary_angles(jnp.arange(6), HEAD_DIM)
    assert apply_rotary(x, cos, sin).shape == x.shape
    with pytest.raises(
        InputError, match=r"rotary cos has shape \(6, 8\) but the heads have 6 positions of head_dim 16"
    ):
        apply_rotary(x, *rotary_angles(jnp.arange(6), 8))
    with pytest.raises(InputError, match=r"rotary cos has shape \(5, 16\) but the heads have 6 positions"):
        apply_rotary(x, *rotary_angles(jnp.arange(5), HEAD_DIM))
    with pytest.raises(InputError, match=r"rotary sin has shape \(6, 8\)"):
        apply_rotary(x, cos, sin[:, :8])

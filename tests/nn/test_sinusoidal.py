"""Sinusoidal position table against Vaswani et al. (2017), section 3.5."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn import sinusoidal_positions


def _table(positions, d):
    """``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``, entry by entry."""
    pe = np.zeros((len(positions), d))
    for row, p in enumerate(positions):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            pe[row, 2 * i] = math.sin(angle)
            pe[row, 2 * i + 1] = math.cos(angle)
    return pe


@pytest.mark.parametrize("dim", [2, 16, 18])
def test_table_matches_the_paper(dim):
    positions = np.arange(64)
    out = sinusoidal_positions(jnp.asarray(positions), dim)
    assert out.shape == (64, dim) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out, np.float64), _table(positions, dim), atol=2e-5)


def test_arbitrary_positions():
    positions = np.array([7, 0, 3, 3])
    out = np.asarray(sinusoidal_positions(jnp.asarray(positions), 8), np.float64)
    np.testing.assert_allclose(out, _table(positions, 8), atol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 1.0] * 4)  # position 0: sin 0, cos 0 interleaved


def test_odd_width_is_rejected():
    with pytest.raises(ValueError, match="even width, got 7"):
        sinusoidal_positions(jnp.arange(4), 7)

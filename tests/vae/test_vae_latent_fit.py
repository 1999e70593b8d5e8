"""A Gaussian fitted to codes, and draws from it."""

import jax
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.vae import LatentGaussian, fit_latent_gaussian, sample_latents


def _codes(n=400, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(3, 4)) * 3.0
    std = rng.uniform(0.05, 5.0, size=(3, 4))  # slots as wide as a trained model's, and nearly empty ones
    return mean + std * rng.standard_normal((n, 3, 4)), mean, std


def test_the_fit_is_each_dimensions_mean_and_standard_deviation():
    z, _, _ = _codes()
    fit = fit_latent_gaussian(z)
    assert isinstance(fit, LatentGaussian) and fit.mean.shape == fit.std.shape == (3, 4)
    np.testing.assert_allclose(fit.mean, z.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fit.std, z.std(axis=0, ddof=1), rtol=1e-6)


def test_draws_follow_the_fit_not_the_prior():
    z, mean, std = _codes(n=2000)
    fit = fit_latent_gaussian(z)
    draws = np.asarray(sample_latents(jax.random.key(0), fit, 20_000))
    assert draws.shape == (20_000, 3, 4) and draws.dtype == np.float32
    # 20,000 draws: the sample mean is within 5 standard errors of the fit, in every dimension
    assert np.all(np.abs(draws.mean(axis=0) - fit.mean) < 5 * fit.std / np.sqrt(20_000))
    np.testing.assert_allclose(draws.std(axis=0), fit.std, rtol=0.04)
    # and the fit itself recovers the Gaussian the codes came from
    np.testing.assert_allclose(fit.std, std, rtol=0.1)
    again = np.asarray(sample_latents(jax.random.key(0), fit, 20_000))
    np.testing.assert_array_equal(draws, again)  # the key decides the draws
    assert not np.array_equal(draws, np.asarray(sample_latents(jax.random.key(1), fit, 20_000)))


def test_bad_codes_and_counts_are_refused():
    z, _, _ = _codes(n=5)
    with pytest.raises(InputError, match="at least 2 sentences"):
        fit_latent_gaussian(z[:1])
    with pytest.raises(InputError, match=r"\[n, latent_tokens, latent\]"):
        fit_latent_gaussian(z[0])
    bad = z.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit_latent_gaussian(bad)
    with pytest.raises(InputError, match="num must be >= 1"):
        sample_latents(jax.random.key(0), fit_latent_gaussian(z), 0)

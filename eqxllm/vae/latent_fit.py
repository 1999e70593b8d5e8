"""Drawing new latents from a Gaussian fitted to the codes of real sentences (ex-post density estimation).

The MMD regulariser matches the batch's latent tokens to N(0, I) as one set, not token by token, and
a trained T5-VAE's codes do not fill the prior: a draw from N(0, I) often decodes to an empty
sentence (docs/t5_vae.md, "Drawing new sentences"). Fitting a density to the codes of real sentences
after training, and sampling from that instead, is the ex-post density estimation of Ghosh et al.
(2020, "From Variational to Deterministic Autoencoders"). Here the density is a Gaussian with its own
mean and standard deviation for every dimension of every latent token:

    z[t, d] = mean[t, d] + std[t, d] * eps,   eps ~ N(0, 1)

>>> fit = fit_latent_gaussian(encode_texts(vae, tok, sentences))   # sentences: a few hundred
>>> decode_latents(vae, tok, sample_latents(jax.random.key(0), fit, 5))
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from eqxllm.errors import InputError


class LatentGaussian(NamedTuple):
    """A Gaussian over codes, independent in each dimension: ``mean`` and ``std``, ``[latent_tokens, latent]``."""

    mean: np.ndarray
    std: np.ndarray


def fit_latent_gaussian(latents: Float[Array, "n latent_tokens latent"] | np.ndarray) -> LatentGaussian:
    """The per-dimension mean and standard deviation (``ddof=1``) of ``latents [n, latent_tokens,
    latent]``, the codes of ``n >= 2`` sentences (e.g. :func:`eqxllm.vae.text.encode_texts`)."""
    z = np.asarray(latents, np.float64)
    if z.ndim != 3:
        raise InputError(f"latents must be [n, latent_tokens, latent], got shape {z.shape}")
    if z.shape[0] < 2:
        raise InputError(f"fitting a Gaussian needs the codes of at least 2 sentences, got {z.shape[0]}")
    if not np.isfinite(z).all():
        raise InputError("latents hold NaN or infinite values")
    return LatentGaussian(z.mean(axis=0).astype(np.float32), z.std(axis=0, ddof=1).astype(np.float32))


def sample_latents(key: PRNGKeyArray, fit: LatentGaussian, num: int) -> Float[Array, "num latent_tokens latent"]:
    """``num`` codes drawn from ``fit``."""
    if num < 1:
        raise InputError(f"num must be >= 1, got {num}")
    mean, std = jnp.asarray(fit.mean, jnp.float32), jnp.asarray(fit.std, jnp.float32)
    return mean + std * jax.random.normal(key, (num, *mean.shape), jnp.float32)

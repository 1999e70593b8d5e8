"""The T5-VAE's regularisers, their warm-up and its metrics (the training loss built on them:
:mod:`eqxllm.train.tasks.vae_loss`).

MMD (Gretton et al., 2012) as used by InfoVAE (Zhao et al., 2019) and the Transformer-VAE: every
latent token of the batch is one sample ``x_i``; it is compared with as many standard normal samples
``y_j`` under the kernel ``k(x, y) = exp(-mean_d (x_d - y_d)^2 / scale)`` (``scale`` = the latent size
by default), with the biased estimate ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

# the normal samples of an evaluation (no key) are fixed, so that the reported MMD is reproducible
_EVAL_KEY_SEED = 0


def gaussian_kernel(x: Float[Array, "n latent"], y: Float[Array, "m latent"], scale: float) -> Float[Array, "n m"]:
    """``exp(-mean_d (x_d - y_d)^2 / scale)`` for every pair, in float32."""
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    sq = jnp.mean(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)
    return jnp.exp(-sq / scale)


def mmd(x: Float[Array, "n latent"], y: Float[Array, "m latent"], scale: float | None = None) -> Float[Array, ""]:
    """The biased squared-MMD estimate between the samples ``x`` and ``y`` (``scale``: default ``latent``)."""
    scale = float(x.shape[-1]) if scale is None else scale
    return (
        jnp.mean(gaussian_kernel(x, x, scale))
        + jnp.mean(gaussian_kernel(y, y, scale))
        - 2.0 * jnp.mean(gaussian_kernel(x, y, scale))
    )


def mmd_to_normal(
    latents: Float[Array, "*batch latent"], key: PRNGKeyArray | None, scale: float | None = None
) -> Float[Array, ""]:
    """MMD between the latent vectors (every leading index is one sample) and as many N(0, I) draws."""
    x = latents.reshape(-1, latents.shape[-1])
    key = jax.random.key(_EVAL_KEY_SEED) if key is None else key
    return mmd(x, jax.random.normal(key, x.shape, jnp.float32), scale)


def gaussian_kl(mean: Float[Array, "*batch latent"], logvar: Float[Array, "*batch latent"]) -> Float[Array, ""]:
    """``sum KL(N(mean, exp(logvar)) || N(0, 1))`` over every element, in nats."""
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def annealed_weight(step: Int[Array, ""] | int, weight: float, k: float, b: float) -> Float[Array, ""]:
    """The regulariser's weight at ``step``: ``weight * sigmoid(k * step - b)`` (the Transformer-VAE's warm-up)."""
    return weight * jax.nn.sigmoid(k * jnp.asarray(step, jnp.float32) - b)


def token_accuracy(
    logits: Float[Array, "*batch vocab"], targets: Int[Array, "*batch"], mask: Bool[Array, "*batch"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """``(correct, count)``: greedy (teacher-forced) predictions equal to the target, over ``mask``."""
    right = (jnp.argmax(logits, axis=-1) == targets) & mask
    return jnp.sum(right, dtype=jnp.float32), jnp.sum(mask, dtype=jnp.float32)


def sequence_accuracy(
    logits: Float[Array, "batch seq vocab"], targets: Int[Array, "batch seq"], mask: Bool[Array, "batch seq"]
) -> Float[Array, " batch"]:
    """1.0 for each sequence whose every unmasked token is predicted exactly, else 0.0."""
    wrong = (jnp.argmax(logits, axis=-1) != targets) & mask
    return (~jnp.any(wrong, axis=-1)).astype(jnp.float32)


def active_units(means: Float[Array, "n ..."], threshold: float = 0.01) -> Int[Array, ""]:
    """Latent dimensions whose posterior mean varies over the data: ``Var_x E[z | x] > threshold``
    (Burda et al., 2016); a collapsed dimension carries no information about its input."""
    variance = jnp.var(means.reshape(means.shape[0], -1).astype(jnp.float32), axis=0)
    return jnp.sum(variance > threshold)


def shift_right(ids: Int[Array, "*batch seq"], start: int) -> Int[Array, "*batch seq"]:
    """Decoder inputs from targets: ``[start, t_0, ..., t_{n-2}]``."""
    return jnp.concatenate([jnp.full((*ids.shape[:-1], 1), start, ids.dtype), ids[..., :-1]], axis=-1)

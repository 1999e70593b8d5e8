"""The T5-VAE's regularisers, their warm-up, its training loss and its metrics.

MMD (Gretton et al., 2012) as used by InfoVAE (Zhao et al., 2019) and the Transformer-VAE: every
latent token of the batch is one sample ``x_i``; it is compared with as many standard normal samples
``y_j`` under the kernel ``k(x, y) = exp(-mean_d (x_d - y_d)^2 / scale)`` (``scale`` = the latent size
by default), with the biased estimate ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.vae.interpolate import slerp

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


def drop_words(
    key: PRNGKeyArray, decoder_ids: Int[Array, "batch seq"], rate: float, pad_id: int
) -> Int[Array, "batch seq"]:
    """Word dropout (Bowman et al., 2016): each decoder input but the start token (column 0) becomes
    ``pad_id`` with probability ``rate``, so that the decoder must read the code, not only its prefix."""
    drop = jax.random.bernoulli(key, rate, decoder_ids.shape).at[:, 0].set(False)
    return jnp.where(drop, pad_id, decoder_ids)


def shift_right(ids: Int[Array, "*batch seq"], start: int) -> Int[Array, "*batch seq"]:
    """Decoder inputs from targets: ``[start, t_0, ..., t_{n-2}]``."""
    return jnp.concatenate([jnp.full((*ids.shape[:-1], 1), start, ids.dtype), ids[..., :-1]], axis=-1)


def splice_loss(
    model,
    means: Float[Array, "batch latent_tokens latent"],
    batch: dict[str, Array | np.ndarray],
    key: PRNGKeyArray | None,
) -> Float[Array, ""]:
    """The interpolation loss (mean per target token): row ``r``'s code slerped (per latent token) a
    share ``splice_t[r]`` of the way to its partner's (row ``r ^ 1``), decoding ``splice_ids[r]``
    (:func:`eqxllm.vae.splice.splice_rows`). With a ``key`` the point is noised and the decoder's
    inputs dropped as in the reconstruction."""
    cfg = model.config
    ids, lengths = jnp.asarray(batch["splice_ids"]), jnp.asarray(batch["splice_lengths"])
    t = jnp.asarray(batch["splice_t"], jnp.float32)
    pairs = means.reshape(means.shape[0] // 2, 2, *means.shape[1:])
    partner = pairs[:, ::-1].reshape(means.shape)
    codes = jax.vmap(slerp)(means, partner, t)
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    dec_in = shift_right(ids, cfg.decoder_start_token_id)
    keys = None
    if key is not None:
        noise_key, drop_key, dec_key = jax.random.split(key, 3)
        codes = jax.vmap(lambda z, k: model.sample_latent(z, None, k))(codes, jax.random.split(noise_key, len(codes)))
        if cfg.word_dropout > 0:
            dec_in = drop_words(drop_key, dec_in, cfg.word_dropout, cfg.pad_token_id)
        keys = jax.random.split(dec_key, len(codes))

    def one(z, d, m, k):
        return model.decode_full(z, d, decoder_mask=m, key=k)

    logits = jax.vmap(one, in_axes=(0, 0, 0, None if keys is None else 0))(codes, dec_in, mask, keys)
    total, count = cross_entropy(logits, ids, mask)
    return total / jnp.maximum(count, 1.0)


def vae_loss(
    model, batch: dict[str, Array | np.ndarray], key: PRNGKeyArray | None = None
) -> tuple[Array, dict[str, Array]]:
    """Reconstruction cross-entropy (mean per target token) + ``w(step) * regulariser`` (+ the
    bag-of-words loss, mean per target token, times ``bow_weight``).

    ``batch``: ``input_ids [batch, seq]`` (a sentence, its end token, padding), ``lengths [batch]``
    (tokens up to and including the end token) and ``step [batch]`` (the training step, for the
    warm-up, the same in every row). The sentence is both the encoder input and the decoder target.
    MMD compares the batch's latent tokens (the posterior means) with normal draws; KL is divided by
    the number of target tokens, so that with weight 1 the loss is the negative ELBO per token.
    ``key`` drives dropout, the code's noise, word dropout and the MMD's normal draws (fixed ones
    without a key, and no noise or dropout: the evaluation's setting).
    With ``splice_weight > 0`` and the batch's splice rows (``splice_ids``, ``splice_lengths``,
    ``splice_t``), ``splice_weight`` times :func:`splice_loss` is added.
    """
    cfg = model.config
    ids, lengths = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["lengths"])
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    dec_in = shift_right(ids, cfg.decoder_start_token_id)
    keys = None if key is None else jax.random.split(key, ids.shape[0] + 2)
    if keys is not None and cfg.word_dropout > 0:
        dec_in = drop_words(keys[-1], dec_in, cfg.word_dropout, cfg.pad_token_id)

    def one(i, m, d, k):
        return model.autoencode(i, d, mask=m, decoder_mask=m, key=k)

    if keys is None:
        out = jax.vmap(lambda i, m, d: one(i, m, d, None))(ids, mask, dec_in)
    else:
        out = jax.vmap(one)(ids, mask, dec_in, keys[1:-1])
    total, count = cross_entropy(out.logits, ids, mask)
    recon = total / jnp.maximum(count, 1.0)
    if cfg.regulariser == "kl":
        reg = gaussian_kl(out.mean, out.logvar) / jnp.maximum(count, 1.0)
    else:
        reg = mmd_to_normal(out.mean, None if keys is None else keys[0], cfg.kernel_scale)
    weight = annealed_weight(jnp.max(jnp.asarray(batch["step"])), cfg.reg_weight, cfg.reg_k, cfg.reg_b)
    loss = recon + weight * reg
    extra = {}
    if cfg.bow_weight > 0:
        # every target token (the end token too) under the code's bag of words
        picked = jnp.take_along_axis(jax.vmap(model.bag_of_words)(out.latent), ids, axis=-1)
        extra["bag_of_words"] = -jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.maximum(count, 1.0)
        loss = loss + cfg.bow_weight * extra["bag_of_words"]
    if cfg.splice_weight > 0 and "splice_ids" in batch:
        extra["splice"] = splice_loss(model, out.mean, batch, None if keys is None else jax.random.fold_in(keys[-1], 3))
        loss = loss + cfg.splice_weight * extra["splice"]
    correct, n = token_accuracy(out.logits, ids, mask)
    aux = {
        "loss": loss,
        "reconstruction": recon,
        cfg.regulariser: reg,
        "reg_weight": weight,
        "token_accuracy": correct / jnp.maximum(n, 1.0),
        "tokens": count,
        **extra,
    }
    return loss, aux

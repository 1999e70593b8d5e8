"""The T5-VAE's training loss: reconstruction, the warmed-up regulariser, and the optional
bag-of-words and interpolation (splice) losses; the trainer's task (:mod:`eqxllm.train.tasks.vae`)
calls :func:`vae_loss`.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from eqxllm.lora import with_adapter_dropout
from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.vae.interpolate import slerp
from eqxllm.vae.metrics import annealed_weight, gaussian_kl, mmd_to_normal, shift_right, token_accuracy


def drop_words(
    key: PRNGKeyArray, decoder_ids: Int[Array, "batch seq"], rate: float, pad_id: int
) -> Int[Array, "batch seq"]:
    """Word dropout (Bowman et al., 2016): each decoder input but the start token (column 0) becomes
    ``pad_id`` with probability ``rate``, so that the decoder must read the code, not only its prefix."""
    drop = jax.random.bernoulli(key, rate, decoder_ids.shape).at[:, 0].set(False)
    return jnp.where(drop, pad_id, decoder_ids)


def splice_loss(
    model,
    means: Float[Array, "batch latent_tokens latent"],
    batch: dict[str, Array | np.ndarray],
    key: PRNGKeyArray | None,
) -> Float[Array, ""]:
    """The interpolation loss (mean per target token): row ``r``'s code slerped (per latent token) a
    share ``splice_t[r]`` of the way to its partner's (row ``r ^ 1``), decoding ``splice_ids[r]``
    (:func:`eqxllm.train.tasks.splices.splice_rows`). With a ``key`` the point is noised and the decoder's
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

    def one(z, d, m, k):  # adapters draw this example's dropout mask
        return with_adapter_dropout(model, k).decode_full(z, d, decoder_mask=m, key=k)

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

    def one(i, m, d, k):  # adapters draw this example's dropout mask
        return with_adapter_dropout(model, k).autoencode(i, d, mask=m, decoder_mask=m, key=k)

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

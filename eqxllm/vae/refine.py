"""Refining a sentence's code: gradient steps on the code until the decoder writes the sentence back.

The encoder's single pass leaves an amortisation gap (Cremer et al., 2018, "Inference Suboptimality
in Variational Autoencoders"); semi-amortised inference (Kim et al., 2018, "Semi-Amortized
Variational Autoencoders") starts from the encoder's code and takes gradient steps on ``-log p(x | z)``
with respect to ``z`` alone. A row stops as soon as every target token (the end token included) beats
the best other token of its teacher-forced logits by ``margin`` nats: a sentence whose every
teacher-forced prediction is right is also what greedy decoding writes (each step sees the same
prefix), and the margin keeps that true under the small numerical differences of the cached decoder.
"""

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from eqxllm.data.sentences import SentenceSet
from eqxllm.errors import InputError
from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.vae.batches import fixed_batches
from eqxllm.vae.metrics import shift_right


@dataclass(frozen=True)
class Refined:
    """Codes after refinement, row for row with the sentences given: ``latents [n, latent_tokens,
    latent]``; ``exact[n]``: the code reconstructs its sentence with the margin; ``steps[n]``: gradient
    steps the row took (0: the encoder's code already did)."""

    latents: Float[np.ndarray, "n latent_tokens latent"]
    exact: Bool[np.ndarray, " n"]
    steps: Int[np.ndarray, " n"]


def _row_terms(model, latent, ids, mask, start: int):
    """One sentence given a code: its mean cross-entropy per target token and its smallest margin
    (target log-probability minus the best other's, over the real target tokens)."""
    logits = model.decode_full(latent, shift_right(ids, start), decoder_mask=mask).astype(jnp.float32)
    total, count = cross_entropy(logits, ids, mask)
    # the log-softmax's normaliser cancels in a difference of log-probabilities: logits will do
    target = jnp.take_along_axis(logits, ids[:, None], axis=-1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(ids, logits.shape[-1], dtype=bool), -jnp.inf, logits), axis=-1)
    return total / jnp.maximum(count, 1.0), jnp.min(jnp.where(mask, target - other, jnp.inf))


@eqx.filter_jit
def code_margins(
    model,
    latents: Float[Array, "batch latent_tokens latent"],
    ids: Int[Array, "batch seq"],
    lengths: Int[Array, " batch"],
) -> Float[Array, " batch"]:
    """Each row's smallest teacher-forced margin given its code: above 0 means the code reconstructs
    the sentence exactly (greedy), as :func:`refine_latents` defines it."""
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    start = model.config.decoder_start_token_id
    return jax.vmap(lambda z, i, m: _row_terms(model, z, i, m, start)[1])(latents, ids, mask)


@eqx.filter_jit
def _refine_batch(model, latents, ids, lengths, steps, learning_rate, margin):
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    start = model.config.decoder_start_token_id
    grad = jax.vmap(jax.value_and_grad(lambda z, i, m: _row_terms(model, z, i, m, start), has_aux=True))
    optimiser = optax.adam(learning_rate)

    def body(carry):
        z, state, done, taken, step = carry
        (_, margins), g = grad(z, ids, mask)
        done = done | (margins > margin)
        updates, state = optimiser.update(g, state)
        moved = jnp.asarray(optax.apply_updates(z, updates))  # an array in, an array out
        z = jnp.where(done[:, None, None], z, moved)
        return z, state, done, taken + (~done).astype(jnp.int32), step + 1

    def cond(carry):
        _, _, done, _, step = carry
        return (step < steps) & ~jnp.all(done)

    n = latents.shape[0]
    init = (latents, optimiser.init(latents), jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32), jnp.int32(0))
    z, _, _, taken, _ = jax.lax.while_loop(cond, body, init)
    return z, taken


def _check_codes(model, data: SentenceSet, latents) -> np.ndarray:
    latents = np.asarray(latents, np.float32)
    cfg = model.config
    if latents.shape != (len(data), cfg.n_latent_tokens, cfg.latent_size):
        raise InputError(
            f"one [{cfg.n_latent_tokens}, {cfg.latent_size}] code per sentence is needed: "
            f"{len(data)} sentences, latents {latents.shape}"
        )
    return latents


def reconstructs(
    model, data: SentenceSet, latents: np.ndarray | Array, *, margin: float = 0.0, batch_size: int = 64
) -> Bool[np.ndarray, " n"]:
    """Whether each code of ``latents [n, latent_tokens, latent]`` reconstructs its sentence of
    ``data`` (greedy, exactly), with every teacher-forced margin above ``margin``."""
    latents = _check_codes(model, data, latents)
    out = [
        np.asarray(code_margins(model, z, ids, lengths))[:real]
        for real, z, ids, lengths in fixed_batches(batch_size, latents, data.ids, data.lengths)
    ]
    return np.concatenate(out) > margin if out else np.zeros((0,), bool)


def refine_latents(
    model,
    data: SentenceSet,
    latents: np.ndarray | Array,
    *,
    steps: int = 300,
    learning_rate: float = 0.1,
    margin: float = 0.5,
    batch_size: int = 64,
) -> Refined:
    """Refine ``latents [n, latent_tokens, latent]``, the codes of the tokenized sentences ``data``
    (row for row), by at most ``steps`` Adam steps of ``learning_rate``, stopping a row once it
    reconstructs with ``margin``; rows that already do are not refined at all. The step count, rate
    and margin are traced, so changing them does not recompile."""
    latents = _check_codes(model, data, latents)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"refinement steps must be an integer >= 0, got {steps!r}")
    if not learning_rate > 0 or not margin >= 0:
        raise InputError(f"refinement needs learning_rate > 0 and margin >= 0, got {learning_rate} and {margin}")
    rates = (jnp.int32(steps), jnp.float32(learning_rate), jnp.float32(margin))  # traced: no recompiling
    refined, taken = latents.copy(), np.zeros((len(data),), np.int32)
    # only the rows that do not reconstruct yet are refined: a batch runs until its slowest row stops
    todo = np.flatnonzero(~reconstructs(model, data, latents, margin=margin, batch_size=batch_size))
    if steps > 0 and len(todo):
        batches = fixed_batches(batch_size, latents[todo], data.ids[todo], data.lengths[todo], todo)
        for real, z, ids, lengths, rows in batches:
            z_new, t = _refine_batch(model, z, ids, lengths, *rates)
            refined[rows[:real]], taken[rows[:real]] = np.asarray(z_new)[:real], np.asarray(t)[:real]
    exact = reconstructs(model, data, refined, margin=margin, batch_size=batch_size)
    return Refined(refined, exact, taken)

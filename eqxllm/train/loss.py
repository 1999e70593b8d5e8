"""Language-model losses: token cross-entropy in float32, and the next-token loss of a decoder-only model.

The trainer knows a model only through a loss ``loss_fn(model, batch, key) -> (scalar_loss, aux)``;
``aux`` is a dict of scalars, and ``aux["tokens"]`` (the number of predicted tokens) lets gradient
accumulation and evaluation weight micro-batches by their token counts.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError


def cross_entropy(
    logits: Float[Array, "*batch vocab"],
    targets: Int[Array, "*batch"],
    mask: Bool[Array, "*batch"] | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Summed negative log-likelihood ``-sum log softmax(logits)[target]`` over unmasked positions, and
    their count, both float32.

    The log-softmax runs in float32 whatever the logits' dtype: in bfloat16 the log-sum-exp over a
    large vocabulary loses most of its mantissa. Masked positions contribute nothing, and their target
    may be anything (e.g. ``-100`` padding); returning the sum and the count (not the mean) lets callers
    average over micro-batches, devices or a whole evaluation set exactly.
    """
    if mask is None:
        mask = jnp.ones(targets.shape, bool)
    logits32 = logits.astype(jnp.float32)
    # a masked target may be out of range (padding ids): read a valid index there and discard it below
    safe_targets = jnp.where(mask, targets, 0)
    # select with a one-hot mask rather than gather: the gradient is then a select, not a scatter, which
    # the SPMD partitioner keeps sharded like the logits (a where, not a product, so -inf logits stay finite)
    is_target = safe_targets[..., None] == jnp.arange(logits.shape[-1])
    target_logit = jnp.sum(jnp.where(is_target, logits32, 0.0), axis=-1)
    nll = jax.nn.logsumexp(logits32, axis=-1) - target_logit
    total = jnp.sum(jnp.where(mask, nll, 0.0))
    count = jnp.sum(mask, dtype=jnp.float32)
    return total, count


def next_token_loss(
    model, batch: Int[Array, "batch seq_plus_one"], key: PRNGKeyArray | None = None
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Mean next-token cross-entropy of a decoder-only model on packed sequences.

    ``batch[:, :-1]`` are the inputs and ``batch[:, 1:]`` the targets; the model is called one sequence
    at a time (``model(ids, key=k) -> [seq, vocab]``) under ``jax.vmap``. ``key`` enables dropout with
    a different key per example; ``None`` runs the model deterministically.
    Returns ``(mean_loss, {"loss": mean_loss, "tokens": number_of_predicted_tokens})``.
    """
    return _packed_loss(model, batch, None, key)


def completion_loss(
    model, batch: dict[str, Int[Array, "batch seq_plus_one"]], key: PRNGKeyArray | None = None
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """:func:`next_token_loss` on ``batch["tokens"]`` counting only the targets where
    ``batch["loss_mask"]`` is 1 (completion tokens of prompt/completion data; prompts carry no loss).
    ``aux["tokens"]`` counts those targets."""
    return _packed_loss(model, batch["tokens"], batch["loss_mask"][:, 1:] > 0, key)


def _packed_loss(model, batch, target_mask, key):
    if batch.shape[1] < 2:
        raise InputError(f"next_token_loss needs sequences of at least 2 tokens; got batch shape {batch.shape}")
    inputs, targets = batch[:, :-1], batch[:, 1:]
    if key is None:
        logits = jax.vmap(lambda ids: model(ids))(inputs)
    else:
        keys = jax.random.split(key, batch.shape[0])
        logits = jax.vmap(lambda ids, k: model(ids, key=k))(inputs, keys)
    total, count = cross_entropy(logits, targets, target_mask)
    loss = total / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "tokens": count}

"""Teacher-forced log-probabilities of target tokens, and the cross-entropy built on them.

One kernel serves training (:func:`cross_entropy`, the loss of every task), evaluation, refining a
T5-VAE's code and scoring whole texts (:func:`eqxllm.generation.text_log_likelihoods`): the
log-softmax of the logits at each target, in float32 whatever the logits' dtype (in bfloat16 the
log-sum-exp over a large vocabulary loses most of its mantissa).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def target_log_probs(logits: Float[Array, "*batch vocab"], targets: Int[Array, "*batch"]) -> Float[Array, "*batch"]:
    """``log softmax(logits)[target]`` at every position, float32; ``targets`` must be in range."""
    logits32 = logits.astype(jnp.float32)
    # select with a one-hot mask rather than gather: the gradient is then a select, not a scatter, which
    # the SPMD partitioner keeps sharded like the logits (a where, not a product, so -inf logits stay finite)
    is_target = targets[..., None] == jnp.arange(logits.shape[-1])
    return jnp.sum(jnp.where(is_target, logits32, 0.0), axis=-1) - jax.nn.logsumexp(logits32, axis=-1)


def cross_entropy(
    logits: Float[Array, "*batch vocab"],
    targets: Int[Array, "*batch"],
    mask: Bool[Array, "*batch"] | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Summed negative log-likelihood ``-sum log softmax(logits)[target]`` over unmasked positions, and
    their count, both float32.

    Masked positions contribute nothing, and their target may be anything (e.g. ``-100`` padding);
    returning the sum and the count (not the mean) lets callers average over micro-batches, devices or
    a whole evaluation set exactly.
    """
    if mask is None:
        mask = jnp.ones(targets.shape, bool)
    # a masked target may be out of range (padding ids): read a valid index there and discard it below
    logp = target_log_probs(logits, jnp.where(mask, targets, 0))
    return -jnp.sum(jnp.where(mask, logp, 0.0)), jnp.sum(mask, dtype=jnp.float32)

"""Language-model losses: token cross-entropy in float32, and the next-token loss of a decoder-only model.

The trainer knows a model only through a loss ``loss_fn(model, batch, key) -> (scalar_loss, aux)``;
``aux`` is a dict of scalars, and ``aux["tokens"]`` (the number of predicted tokens) lets gradient
accumulation and evaluation weight micro-batches by their token counts.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.models.decoder import DecoderLM
from eqxllm.nn.moe import load_balancing_loss


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

    A model with mixture-of-experts layers (Mixtral) also gives its router logits; the loss then adds
    ``router_aux_loss_coef * load_balancing_loss(...)`` over every layer and token (as transformers'
    ``MixtralForCausalLM`` does), and the metrics report the load-balancing loss as ``aux_loss``.
    """
    if batch.shape[1] < 2:
        raise InputError(f"next_token_loss needs sequences of at least 2 tokens; got batch shape {batch.shape}")
    inputs, targets = batch[:, :-1], batch[:, 1:]
    if isinstance(model, DecoderLM) and model.config.decoder.moe:
        return _moe_loss(model, inputs, targets)
    if key is None:
        logits = jax.vmap(lambda ids: model(ids))(inputs)
    else:
        keys = jax.random.split(key, batch.shape[0])
        logits = jax.vmap(lambda ids, k: model(ids, key=k))(inputs, keys)
    total, count = cross_entropy(logits, targets)
    loss = total / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "tokens": count}


def _moe_loss(model: DecoderLM, inputs, targets) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Cross-entropy plus the weighted load-balancing loss of a mixture-of-experts decoder (no dropout)."""
    spec = model.config.decoder
    logits, _, router_logits = jax.vmap(lambda ids: model.forward(ids))(inputs)  # router: [batch, layers, seq, experts]
    assert router_logits is not None
    total, count = cross_entropy(logits, targets)
    aux = load_balancing_loss(router_logits, spec.num_experts_per_tok)
    loss = total / jnp.maximum(count, 1.0) + spec.router_aux_loss_coef * aux
    return loss, {"loss": loss, "tokens": count, "aux_loss": aux}

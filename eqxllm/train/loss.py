"""Language-model losses: token cross-entropy in float32 (:mod:`eqxllm.nn.cross_entropy`, re-exported
here), and the next-token loss of a decoder-only model.

The trainer knows a model only through a loss ``loss_fn(model, batch, key) -> (scalar_loss, aux)``;
``aux`` is a dict of scalars, and ``aux["tokens"]`` (the number of predicted tokens) lets gradient
accumulation and evaluation weight micro-batches by their token counts.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.models.decoder import DecoderLM
from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.nn.moe import load_balancing_loss

__all__ = ["cross_entropy", "next_token_loss"]


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
    if isinstance(model, DecoderLM) and model.config.decoder.moe:
        return _moe_loss(model, inputs, targets, target_mask)
    if key is None:
        logits = jax.vmap(lambda ids: model(ids))(inputs)
    else:
        keys = jax.random.split(key, batch.shape[0])
        logits = jax.vmap(lambda ids, k: model(ids, key=k))(inputs, keys)
    total, count = cross_entropy(logits, targets, target_mask)
    loss = total / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "tokens": count}


def _moe_loss(model: DecoderLM, inputs, targets, target_mask) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Cross-entropy (over ``target_mask``, when given) plus the weighted load-balancing loss of a
    mixture-of-experts decoder over every token (no dropout)."""
    spec = model.config.decoder
    logits, _, router_logits = jax.vmap(lambda ids: model.forward(ids))(inputs)  # router: [batch, layers, seq, experts]
    assert router_logits is not None
    total, count = cross_entropy(logits, targets, target_mask)
    aux = load_balancing_loss(router_logits, spec.num_experts_per_tok)
    loss = total / jnp.maximum(count, 1.0) + spec.router_aux_loss_coef * aux
    return loss, {"loss": loss, "tokens": count, "aux_loss": aux}

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
from eqxllm.lora import with_adapter_dropout
from eqxllm.models.decoder import DecoderLM
from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.nn.decoding import CausalLM
from eqxllm.nn.linear_cross_entropy import linear_cross_entropy
from eqxllm.nn.moe import load_balancing_loss

__all__ = ["cross_entropy", "next_token_loss"]


def next_token_loss(
    model, batch: Int[Array, "batch seq_plus_one"], key: PRNGKeyArray | None = None
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Mean next-token cross-entropy of a decoder-only model on packed sequences.

    ``batch[:, :-1]`` are the inputs and ``batch[:, 1:]`` the targets; the model is called one sequence
    at a time (``model(ids, key=k) -> [seq, vocab]``) under ``jax.vmap``. ``key`` enables dropout with
    a different key per example; ``None`` runs the model deterministically. A decoder whose
    :meth:`~eqxllm.nn.decoding.CausalLM.output_head` is a plain matrix (GPT-2, Gemma, the llama-like
    family without adapters on the head) runs its head fused with the loss
    (:func:`eqxllm.nn.linear_cross_entropy.linear_cross_entropy`): the ``[batch, seq, vocab]`` logits
    never exist at once.
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
    keys = None if key is None else jax.random.split(key, batch.shape[0])
    head = model.output_head() if isinstance(model, CausalLM) else None
    if head is not None:  # the head fused with the cross-entropy: no [batch, seq, vocab] logits
        hidden, extras = _per_example(model, lambda m, ids, k: m.features(ids, key=k), inputs, keys)
        total, count = linear_cross_entropy(hidden, head.weight, targets, target_mask, softcap=head.softcap)
    elif isinstance(model, CausalLM):
        logits, _, extras = _per_example(model, lambda m, ids, k: m.forward(ids, key=k), inputs, keys)
        total, count = cross_entropy(logits, targets, target_mask)
    else:  # any model called as model(ids, key=k) -> [seq, vocab]
        call = lambda m, ids, k: m(ids) if k is None else m(ids, key=k)  # noqa: E731
        logits, extras = _per_example(model, call, inputs, keys), None
        total, count = cross_entropy(logits, targets, target_mask)
    loss = total / jnp.maximum(count, 1.0)
    if not (isinstance(model, DecoderLM) and model.config.decoder.moe):
        return loss, {"loss": loss, "tokens": count}
    # the router logits of every layer: [batch, layers, seq, experts]
    spec = model.config.decoder
    assert extras is not None
    aux = load_balancing_loss(extras, spec.num_experts_per_tok)
    loss = loss + spec.router_aux_loss_coef * aux
    return loss, {"loss": loss, "tokens": count, "aux_loss": aux}


def _per_example(model, fn, inputs, keys):
    """``fn(model, ids, key)`` over the batch under ``jax.vmap`` (``key`` None for every row without
    keys); with keys, the model's LoRA adapters draw each example's dropout mask from its key."""
    if keys is None:
        return jax.vmap(lambda ids: fn(model, ids, None))(inputs)
    return jax.vmap(lambda ids, k: fn(with_adapter_dropout(model, k), ids, k))(inputs, keys)

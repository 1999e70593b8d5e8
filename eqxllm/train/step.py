"""The compiled training and evaluation steps.

``step = make_train_step(loss_fn, optimizer, ...)`` returns
``step(model, opt_state, batch, key) -> (model, opt_state, metrics)``: one ``eqx.filter_jit`` program
per batch shape that computes the loss and float32 gradients (optionally in a lower compute dtype and
accumulated over micro-batches with ``jax.lax.scan``), applies the optimizer, and returns the metrics
as device arrays, so the loop never waits on the device unless it reads them.

Buffer donation: the model and optimizer state passed in are donated (their memory is reused for the
new ones), so after ``model, opt_state, m = step(model, opt_state, batch, key)`` the old references
must not be used again. The batch and the key are *not* donated: a fixed batch may be fed repeatedly.

Sharding: given ``model_sharding`` / ``opt_state_sharding`` (pytrees of ``NamedSharding`` as built by
:mod:`eqxllm.train.sharding`) and ``batch_sharding``, the inputs and outputs are constrained with
``eqx.filter_shard`` at entry and exit, and XLA's SPMD partitioner inserts the collectives.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from eqxllm.errors import ConfigError
from eqxllm.lora import trainable_filter, trainable_params, with_adapter_dropout
from eqxllm.train.optim import current_learning_rate
from eqxllm.train.precision import cast_floating

LossFn = Callable[[Any, Any, Any], tuple[Array, dict[str, Array]]]


def _leading_size(batch: PyTree) -> int:
    sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ConfigError(f"every array of a batch must share its leading (batch) size; found sizes {sorted(sizes)}")
    return sizes.pop()


def _batch_divisor(batch_sharding) -> int:
    """How many ways the batch axis is split by ``batch_sharding`` (1 without one)."""
    if batch_sharding is None:
        return 1
    entry = batch_sharding.spec[0] if len(batch_sharding.spec) else None
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    size = 1
    for name in names:
        size *= batch_sharding.mesh.shape[name]
    return size


def _split_micro(x: Array, accum_steps: int) -> Array:
    """``[batch, ...] -> [accum_steps, batch / accum_steps, ...]`` taking every ``accum_steps``-th row,
    so each micro-batch draws rows from every device's shard of a batch-sharded array (a contiguous
    split would put a whole micro-batch on a few devices)."""
    return jnp.swapaxes(x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1)


def _token_weight(aux: Any) -> Float[Array, ""]:
    if isinstance(aux, dict) and "tokens" in aux:
        return jnp.asarray(aux["tokens"], jnp.float32)
    return jnp.ones((), jnp.float32)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    accum_steps: int = 1,
    compute_dtype: Any = None,
    model_sharding: PyTree | None = None,
    opt_state_sharding: PyTree | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    max_traces: int | None = None,
) -> Callable:
    """Build ``step(model, opt_state, batch, key=None) -> (model, opt_state, metrics)``.

    - ``loss_fn(model, batch, key) -> (loss, aux)``: e.g. :func:`eqxllm.train.loss.next_token_loss`.
    - ``accum_steps``: split the batch's leading axis into this many micro-batches, scanned one after
      another; gradients are averaged with weights ``aux["tokens"]`` (1 when absent), so the update
      equals the one-big-batch update up to float rounding while only one micro-batch is live (for
      losses that are sums over tokens; a mixture of experts' load-balancing loss pools its router
      statistics per micro-batch, as ``transformers`` does per forward pass, so it differs slightly).
      A batch with no scored token is a zero update, with or without accumulation.
    - ``compute_dtype``: e.g. ``jnp.bfloat16``; the float32 model is cast inside the differentiated
      loss, so parameters, gradients and optimizer state stay float32.
    - ``model_sharding`` / ``opt_state_sharding`` / ``batch_sharding``: see the module docstring.
    - ``max_traces``: raise ``RuntimeError`` if the step is traced (compiled) more often than this,
      a guard against silent recompilation (``eqx.debug.assert_max_traces`` inside the jit).

    ``metrics`` holds ``loss``, ``grad_norm`` (before clipping), ``learning_rate`` (when the optimizer
    records it, as :func:`make_optimizer`'s does) and the other ``aux`` entries (``tokens`` summed over
    micro-batches, the rest token-weighted means), all device scalars.
    """
    if accum_steps < 1:
        raise ConfigError(f"accum_steps must be >= 1, got {accum_steps}")

    def loss_in_compute_dtype(trainable, frozen, batch, key):
        model = eqx.combine(trainable, frozen)
        # LoRA adapters with dropout get keys (a no-op without them); eqxllm's losses redraw them per example
        model = with_adapter_dropout(model, key)
        return loss_fn(cast_floating(model, compute_dtype), batch, key)

    # only the trainable leaves (every float array, or the LoRA adapters alone) are differentiated
    grad_of_trainable = eqx.filter_value_and_grad(loss_in_compute_dtype, has_aux=True)

    def grad_fn(model, batch, key):
        trainable, frozen = eqx.partition(model, trainable_filter(model))
        return grad_of_trainable(trainable, frozen, batch, key)

    def accumulate(model, batch, key):
        size = _leading_size(batch)
        divisor = accum_steps * _batch_divisor(batch_sharding)
        if size % divisor:
            raise ConfigError(
                f"batch size {size} is not divisible by accum_steps={accum_steps} x "
                f"{_batch_divisor(batch_sharding)} batch shards = {divisor}"
            )
        if accum_steps == 1:
            (loss, aux), grads = grad_fn(model, batch, key)
            return loss.astype(jnp.float32), aux, grads
        micro = jax.tree.map(lambda x: _split_micro(x, accum_steps), batch)
        keys = None if key is None else jax.random.split(key, accum_steps)

        def body(carry, xs):
            grad_sum, loss_sum, weight_sum = carry
            batch, key = xs
            if batch_sharding is not None:  # keep each micro-batch spread over the batch shards
                batch = eqx.filter_shard(batch, batch_sharding)
            (loss, aux), grads = grad_fn(model, batch, key)
            w = _token_weight(aux)
            grad_sum = jax.tree.map(lambda acc, g: acc + w * g, grad_sum, grads)
            return (grad_sum, loss_sum + w * loss.astype(jnp.float32), weight_sum + w), (aux, w)

        zeros = jax.tree.map(jnp.zeros_like, trainable_params(model))
        init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        (grad_sum, loss_sum, weight_sum), (auxs, weights) = jax.lax.scan(body, init, (micro, keys))
        # a batch with no scored token (all prompt, say) weighs 0 everywhere: its sums are 0, and so is
        # the update, as without accumulation (dividing by 0 would make the weights NaN)
        weight_sum = jnp.where(weight_sum > 0, weight_sum, 1.0)
        grads = jax.tree.map(lambda g: g / weight_sum, grad_sum)
        aux = {
            name: jnp.sum(v, axis=0) if name == "tokens" else jnp.tensordot(weights, v, axes=1) / weight_sum
            for name, v in (auxs.items() if isinstance(auxs, dict) else ())
        }
        return loss_sum / weight_sum, aux, grads

    def step_impl(batch_and_key, model, opt_state):
        batch, key = batch_and_key
        if model_sharding is not None:
            model = eqx.filter_shard(model, model_sharding)
        if opt_state_sharding is not None:
            opt_state = eqx.filter_shard(opt_state, opt_state_sharding)
        if batch_sharding is not None:
            batch = eqx.filter_shard(batch, batch_sharding)
        loss, aux, grads = accumulate(model, batch, key)
        params = trainable_params(model)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        if model_sharding is not None:
            model = eqx.filter_shard(model, model_sharding)
        if opt_state_sharding is not None:
            opt_state = eqx.filter_shard(opt_state, opt_state_sharding)
        metrics = {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        lr = current_learning_rate(opt_state)
        if lr is not None:
            metrics["learning_rate"] = lr
        return model, opt_state, metrics

    if max_traces is not None:
        step_impl = eqx.debug.assert_max_traces(step_impl, max_traces=max_traces)
    # the first argument (batch, key) is kept; model and opt_state (the rest) are donated
    jitted = eqx.filter_jit(step_impl, donate="all-except-first")

    def step(model, opt_state, batch, key: PRNGKeyArray | None = None):
        return jitted((batch, key), model, opt_state)

    step.lower = lambda model, opt_state, batch, key=None: jitted.lower((batch, key), model, opt_state)
    return step


def make_eval_step(
    loss_fn: LossFn,
    *,
    compute_dtype: Any = None,
    model_sharding: PyTree | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """Build ``eval_step(model, batch) -> (summed_loss, tokens)``, jitted, no dropout and no donation.

    Summing ``summed_loss`` and ``tokens`` over batches and dividing once gives the exact mean loss
    of an evaluation set (``loss * aux["tokens"]``; ``tokens`` is 1 per batch if ``aux`` lacks it).
    """

    @eqx.filter_jit
    def eval_step(model, batch):
        if model_sharding is not None:
            model = eqx.filter_shard(model, model_sharding)
        if batch_sharding is not None:
            batch = eqx.filter_shard(batch, batch_sharding)
        loss, aux = loss_fn(cast_floating(model, compute_dtype), batch, None)
        tokens = _token_weight(aux)
        return loss.astype(jnp.float32) * tokens, tokens

    return eval_step

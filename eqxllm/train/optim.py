"""The optimizer: global-norm clipping, then AdamW with linear warmup and cosine decay.

AdamW (Loshchilov & Hutter, 2019) with the GPT-2/3 recipe (Radford et al., 2019; Brown et al., 2020):
clip the gradient's global norm, Adam moments, decoupled weight decay on matrices only, learning rate
warmed up linearly from 0 and decayed along a cosine to ``min_lr_ratio * learning_rate``.

Which leaves decay is decided from the model's structure, not from shapes alone: the ``weight`` of
every :class:`eqxllm.nn.Linear` (a matrix, or a stack of them) decays; embeddings and position tables
(:class:`eqxllm.nn.Embedding`, relative-position biases), norm scales and every bias do not (stacked
norm scales are 2-D, which is why ``ndim`` alone would get them wrong).

The optimizer acts on :func:`eqxllm.lora.trainable_params` only (every floating-point array, or the
LoRA adapters alone when the model has any); see :func:`init_opt_state`.
The current learning rate is kept in the optimizer state (``optax.inject_hyperparams``), so the train
step can report it without knowing the schedule.
"""

import dataclasses
from dataclasses import dataclass

import equinox as eqx
import jax
import optax
from jaxtyping import PyTree

from eqxllm.errors import ConfigError
from eqxllm.lora import LoraLinear, trainable_params
from eqxllm.nn import Linear
from eqxllm.nn.moe import MoE


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW hyperparameters and the learning-rate schedule, checked when made.

    ``total_steps`` is the schedule's length including warmup; past it the rate stays at
    ``min_lr_ratio * learning_rate``. ``None`` (in a training run's config) means the run's
    ``train.max_steps``, and a ``warmup_steps`` of ``None`` means ``round(warmup_fraction *
    total_steps)``: a shorter or longer run keeps the schedule's shape (:meth:`resolved`).
    ``grad_clip_norm=None`` disables clipping.
    """

    learning_rate: float = 3e-4
    warmup_steps: int | None = 100
    """Steps of linear warmup; ``None``: ``warmup_fraction`` of ``total_steps``."""
    total_steps: int | None = 10_000
    """The schedule's length; ``None``: the training run's length (``train.max_steps``)."""
    warmup_fraction: float = 0.01
    """Warmup as a fraction of ``total_steps``, used when ``warmup_steps`` is ``None``."""
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip_norm: float | None = 1.0

    def __post_init__(self):
        warmup, total = self.warmup_steps, self.total_steps
        checks = [
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("warmup_steps", warmup is None or warmup >= 0, ">= 0"),
            ("total_steps", total is None or total >= 1, ">= 1"),
            ("total_steps", total is None or warmup is None or total > warmup, f"> warmup_steps={warmup}"),
            ("warmup_fraction", 0.0 <= self.warmup_fraction < 1.0, "in [0, 1)"),
            ("min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0, "in [0, 1]"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("b1", 0.0 <= self.b1 < 1.0, "in [0, 1)"),
            ("b2", 0.0 <= self.b2 < 1.0, "in [0, 1)"),
            ("eps", self.eps > 0, "> 0"),
            ("grad_clip_norm", self.grad_clip_norm is None or self.grad_clip_norm > 0, "> 0 or None"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"OptimConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    def resolved(self, run_steps: int) -> "OptimConfig":
        """This config with ``total_steps`` (``None``: ``run_steps``) and ``warmup_steps`` (``None``:
        ``round(warmup_fraction * total_steps)``) filled in."""
        total = run_steps if self.total_steps is None else self.total_steps
        warmup = round(self.warmup_fraction * total) if self.warmup_steps is None else self.warmup_steps
        return dataclasses.replace(self, total_steps=total, warmup_steps=warmup)


def learning_rate_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio * learning_rate`` at ``total_steps``."""
    if cfg.total_steps is None or cfg.warmup_steps is None:
        raise ConfigError(
            "OptimConfig.total_steps/warmup_steps are None (the run's length): call cfg.resolved(max_steps) first"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps,
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


def decay_mask(model: PyTree) -> PyTree[bool]:
    """True for the leaves that get weight decay, False for the others, None where
    :func:`eqxllm.lora.trainable_params` has None: the same structure as the optimized params.

    Only matrices decay: ``Linear.weight`` leaves with ``ndim >= 2`` (a stacked Linear's weight is
    ``[layers, out, in]``) and a mixture of experts' stacked expert matrices; biases, norms,
    embeddings and position tables do not.
    """
    params = trainable_params(model)
    is_node = lambda x: isinstance(x, Linear | LoraLinear | MoE)  # noqa: E731

    def mark(node):
        if isinstance(node, MoE):  # its router is a Linear; its experts are plain stacked arrays
            flags = eqx.tree_at(lambda m: m.router, jax.tree.map(lambda _: False, node), mark(node.router))
            experts = [name for name in ("gate", "up", "down") if getattr(node, name) is not None]
            return eqx.tree_at(lambda m: [getattr(m, name) for name in experts], flags, [True] * len(experts))
        if isinstance(node, LoraLinear):  # with adapters only they train, and their matrices decay
            flags = jax.tree.map(lambda _: False, node)
            return eqx.tree_at(lambda lin: (lin.lora_a, lin.lora_b), flags, (True, True))
        if isinstance(node, Linear):
            flags = jax.tree.map(lambda _: False, node)
            if node.weight is None:  # a frozen linear of a LoRA model
                return flags
            return eqx.tree_at(lambda lin: lin.weight, flags, node.weight.ndim >= 2)
        return jax.tree.map(lambda _: False, node)

    return jax.tree.map(mark, params, is_leaf=is_node)


def make_optimizer(cfg: OptimConfig, model: PyTree) -> optax.GradientTransformation:
    """``clip_by_global_norm -> scale_by_adam -> add_decayed_weights(mask) -> -learning_rate(step)``.

    This is ``optax.adamw`` behind clipping, with the weight-decay mask computed from ``model``'s
    structure (:func:`decay_mask`). Use it on :func:`eqxllm.lora.trainable_params`.
    """
    parts = []
    if cfg.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask(model)))
    # inject_hyperparams stores the rate used by each update in the state, where the step reads it
    parts.append(optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=learning_rate_schedule(cfg)))
    return optax.chain(*parts)


def init_opt_state(optimizer: optax.GradientTransformation, model: PyTree) -> optax.OptState:
    """``optimizer.init`` on the model's trainable leaves (the only ones it updates): every floating-point
    array, or the LoRA adapters alone."""
    return optimizer.init(trainable_params(model))


def current_learning_rate(opt_state: optax.OptState) -> jax.Array | None:
    """The learning rate of the last update (or of the first, before any), read from the state that
    ``make_optimizer`` builds; None for optimizers that do not record it."""
    return optax.tree_utils.tree_get(
        opt_state, "learning_rate", filtering=lambda _path, value: isinstance(value, jax.Array)
    )

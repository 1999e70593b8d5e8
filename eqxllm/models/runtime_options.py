"""Run-time options: config fields that change how a model's weights are computed with or trained,
not what they compute, and :func:`reconfigure`, which sets them on a model that already has weights.

They are the dropout rates, the rematerialisation policy (``remat``), the attention kernel
(``attention_impl``), a mixture of experts' dispatch (``moe_dispatch``) and a T5-VAE's loss-only
fields (its regulariser's weight and schedule, the code's noise, the splice loss weight). None of them
is saved in ``config.json``, none changes a weight's shape, and ``--init-from`` runs may set them
(:mod:`eqxllm.train.init_from`). Nested configs (a T5-VAE's ``t5``) name their fields with dots
(``t5.dropout_rate``).
"""

import dataclasses
import re
from typing import Any

import equinox as eqx
import jax

from eqxllm.errors import ConfigError, InputError

RUNTIME_OPTIONS = re.compile(
    r"(pdrop|dropout|(^|\.)remat$|(^|\.)attention_impl$|(^|\.)moe_dispatch$"
    r"|^(reg_weight|reg_k|reg_b|mmd_scale|latent_noise|splice_weight)$)"
)
RUNTIME_OPTIONS_TEXT = (
    "only dropout rates, remat, attention_impl, moe_dispatch and a T5-VAE's reg_weight, reg_k, reg_b, "
    "mmd_scale, latent_noise and splice_weight may change"
)


def is_runtime_option(name: str) -> bool:
    """Whether the config field of dotted ``name`` is a run-time option."""
    return bool(RUNTIME_OPTIONS.search(name))


def config_fields(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Every field of ``cfg`` by dotted name, nested config dataclasses (a T5-VAE's ``t5``) opened."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out |= config_fields(value, f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = value
    return out


def with_field(cfg: Any, name: str, value: Any) -> Any:
    """``cfg`` with the field of dotted ``name`` set to ``value`` (validated by the config)."""
    head, _, rest = name.partition(".")
    return dataclasses.replace(cfg, **{head: with_field(getattr(cfg, head), rest, value) if rest else value})


def reconfigure(model: Any, **changes: Any) -> Any:
    """``model`` with run-time options of its config changed, its weights shared (not copied).

    ``eqxllm.reconfigure(model, attention_impl="cudnn", remat="dots")`` gives a loaded checkpoint
    the GPU kernel and rematerialisation that ``from_pretrained`` leaves at their defaults;
    ``moe_dispatch="dense"`` gives a Mixtral exact per-example expert-weight gradients (see
    :class:`eqxllm.nn.MoE`). A nested field is named with a dot: ``**{"t5.remat": "dots"}``.

    Raises :class:`ConfigError` for a field that is not a run-time option (it would change what the
    weights compute, or their shapes: build a new model instead), an unknown field or a bad value,
    and :class:`InputError` for a model whose structure its config does not rebuild (LoRA adapters
    applied: reconfigure before :func:`eqxllm.lora.apply_lora`).
    """
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise InputError(f"reconfigure needs an eqxllm model (with a .config), got {type(model).__name__}")
    if not changes:
        return model
    fields = config_fields(cfg)
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ConfigError(f"{type(cfg).__name__} has no field(s) {unknown}")
    fixed = sorted(name for name in changes if not is_runtime_option(name))
    if fixed:
        raise ConfigError(
            f"{fixed} would change what the weights compute, so reconfigure does not set them: "
            f"{RUNTIME_OPTIONS_TEXT}; build a new {type(model).__name__} from a new config instead"
        )
    for name, value in changes.items():
        cfg = with_field(cfg, name, value)
    skeleton = eqx.filter_eval_shape(type(model), cfg, key=jax.random.key(0))
    leaves = jax.tree.leaves(model)
    shapes = jax.tree.leaves(skeleton)
    if len(leaves) != len(shapes) or any(
        getattr(a, "shape", None) != getattr(b, "shape", None) for a, b in zip(leaves, shapes, strict=True)
    ):
        raise InputError(
            f"this {type(model).__name__} does not have the structure its config builds (LoRA adapters, or "
            "layers replaced by hand): reconfigure the model before apply_lora or other surgery"
        )
    return jax.tree.unflatten(jax.tree.structure(skeleton), leaves)

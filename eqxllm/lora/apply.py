"""Adding, merging and selecting LoRA adapters on any eqxllm model.

A *module path* names a linear layer by the attributes leading to it from the model, dotted:
``blocks.blocks.attn.q_proj`` (GPT-2, Gemma, the llama-like family), ``encoder.layers.blocks.self_attn.q_proj``
(T5). A stacked layer has one path for all its layers (it is one module with a leading ``layers`` axis),
so a target selects a projection in every layer. ``targets`` is a regular expression searched
(``re.search``) in each path: ``attn`` adapts every attention projection, ``q_proj|v_proj`` the
query and value projections, ``mlp`` the feed-forward ones (``ffn`` in T5).
"""

import math
import operator
import re
from typing import Any

import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray, PyTree

from eqxllm.errors import ConfigError
from eqxllm.lora.linear import LoraLinear, lora_linear, plain_linear
from eqxllm.nn.linear import Linear


def _is_linear(x: Any) -> bool:
    return isinstance(x, Linear | LoraLinear)


def _path_str(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return ".".join(parts)


def _getter(path):
    def get(tree):
        for k in path:
            if isinstance(k, jax.tree_util.GetAttrKey):
                tree = getattr(tree, k.name)
            elif isinstance(k, jax.tree_util.SequenceKey):
                tree = tree[k.idx]
            else:
                tree = tree[k.key]
        return tree

    return get


def linear_modules(model: PyTree) -> dict[str, Linear | LoraLinear]:
    """Every linear layer of ``model`` (plain or adapted) by module path, in tree order."""
    flat = jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_linear)[0]
    return {_path_str(path): leaf for path, leaf in flat if _is_linear(leaf)}


# A mixture of experts' router takes no adapter: PEFT cannot load one on it (transformers' Mixtral
# router is not an nn.Linear), and the experts themselves are stacked arrays, not linear layers.
_ROUTER = re.compile(r"(^|\.)router$")


def _select(model: PyTree, kind: type, targets: str | None = None):
    flat = jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_linear)[0]
    pattern = None if targets is None else re.compile(targets)
    return [
        (path, leaf)
        for path, leaf in flat
        if isinstance(leaf, kind) and (pattern is None or pattern.search(_path_str(path)))
    ]


def apply_lora(
    model: PyTree,
    *,
    rank: int,
    alpha: float,
    targets: str,
    dropout: float = 0.0,
    key: PRNGKeyArray,
) -> PyTree:
    """``model`` with every :class:`eqxllm.nn.Linear` whose module path matches ``targets`` replaced by
    a :class:`LoraLinear` (frozen base, ``A`` random, ``B`` zero, scale ``alpha / rank``), so the
    returned model computes exactly what ``model`` did until ``B`` is trained.

    A mixture of experts' router is never adapted (see ``_ROUTER``). Raises ``ConfigError`` for
    ``rank <= 0`` (or not an integer), ``alpha <= 0`` or infinite, a dropout outside ``[0, 1)``, an
    invalid regular expression, a ``targets`` that matches no linear layer (or only routers), or a
    model that already has adapters.
    """
    integer = not isinstance(rank, bool) and hasattr(type(rank), "__index__")  # numpy's integers too
    if not integer or operator.index(rank) <= 0:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}")
    rank = operator.index(rank)
    try:  # a Python float: a JAX array would become a static field of every adapted layer
        number = float(alpha) if not isinstance(alpha, str | bytes) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise ConfigError(f"LoRA alpha must be a number, got {alpha!r}")
    alpha = number
    if not 0 < alpha < math.inf:
        raise ConfigError(f"LoRA alpha must be finite and > 0, got {alpha!r} (the update is scaled by alpha / rank)")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if _select(model, LoraLinear):
        raise ConfigError("the model already has LoRA adapters; merge_lora it first to add new ones")
    try:
        re.compile(targets)
    except re.error as e:
        raise ConfigError(f"LoRA targets {targets!r} is not a valid regular expression: {e}") from None
    matched = _select(model, Linear, targets)
    chosen = [(path, lin) for path, lin in matched if not _ROUTER.search(_path_str(path))]
    if matched and not chosen:
        raise ConfigError(
            f"LoRA targets {targets!r} matches only mixture-of-experts routers "
            f"({_path_str(matched[0][0])}), which take no adapter (the experts are stacked arrays, not "
            "linear layers); adapt the attention instead, e.g. targets='attn'"
        )
    if not chosen:
        available = list(linear_modules(model))
        raise ConfigError(
            f"LoRA targets {targets!r} matches no linear layer; module paths are searched with re.search, "
            f"available ones include {available[:8]}"
        )
    keys = jax.random.split(key, len(chosen))
    new = [lora_linear(lin, rank=rank, alpha=alpha, dropout_rate=dropout, key=k) for (_, lin), k in zip(chosen, keys)]
    getters = [_getter(path) for path, _ in chosen]
    return eqx.tree_at(lambda m: [g(m) for g in getters], model, new)


def merge_lora(model: PyTree) -> PyTree:
    """``model`` with every :class:`LoraLinear` folded into a plain :class:`eqxllm.nn.Linear` of weight
    ``W + (alpha / rank) B @ A``: the original model type and structure, ready for ``save_pretrained``."""
    chosen = _select(model, LoraLinear)
    if not chosen:
        return model
    getters = [_getter(path) for path, _ in chosen]
    return eqx.tree_at(lambda m: [g(m) for g in getters], model, [plain_linear(lora) for _, lora in chosen])


def has_lora(model: PyTree) -> bool:
    return bool(_select(model, LoraLinear))


def lora_filter(model: PyTree) -> PyTree[bool]:
    """A filter spec (same structure as ``model``): True on every adapter's ``lora_a`` and ``lora_b``,
    False on every other leaf. ``eqx.partition(model, lora_filter(model))`` splits trainable from frozen."""

    def mark(node):
        if isinstance(node, LoraLinear):
            flags = jax.tree.map(lambda _: False, node)
            return eqx.tree_at(lambda lin: (lin.lora_a, lin.lora_b), flags, (True, True))
        return jax.tree.map(lambda _: False, node)

    return jax.tree.map(mark, model, is_leaf=lambda x: isinstance(x, LoraLinear))


def trainable_filter(model: PyTree) -> PyTree[bool]:
    """What a training step differentiates and updates: the adapters when ``model`` has any
    (:func:`lora_filter`), else every floating-point array."""
    if has_lora(model):
        return lora_filter(model)
    return jax.tree.map(eqx.is_inexact_array, model)


def trainable_params(model: PyTree) -> PyTree:
    """``eqx.filter(model, trainable_filter(model))``: the tree the optimizer sees."""
    return eqx.filter(model, trainable_filter(model))


def with_dropout_keys(model: PyTree, key: PRNGKeyArray) -> PyTree:
    """``model`` with a fresh dropout key in every adapter that has a dropout rate (one independent
    key per stacked layer); other adapters and the rest of the model are untouched."""
    chosen = [(p, lin) for p, lin in _select(model, LoraLinear) if lin.dropout_rate > 0]
    if not chosen:
        return model
    keys = jax.random.split(key, len(chosen))
    new = [
        jax.random.split(k, lin.weight.shape[:-2]) if lin.weight.ndim > 2 else k for (_, lin), k in zip(chosen, keys)
    ]
    getters = [_getter(path) for path, _ in chosen]
    return eqx.tree_at(lambda m: [g(m).dropout_key for g in getters], model, new, is_leaf=lambda x: x is None)


# The adapters' dropout keys are folded off the key a loss gives an example, so that they are
# independent of the model's own dropout, which draws from that key itself.
_ADAPTER_DROPOUT_STREAM = 0x10A


def with_adapter_dropout(model: PyTree, key: PRNGKeyArray | None) -> PyTree:
    """``model`` whose adapters drop out with keys drawn from ``key`` (``None``: ``model`` unchanged).

    A loss calls it on each example's key inside its ``jax.vmap``, so that every example of a batch
    draws its own mask, as PEFT's ``nn.Dropout`` does; eqxllm's losses do. A training step also calls
    it once on the step's key, so a loss of your own that never calls it gets one mask per step,
    shared by the whole batch."""
    if key is None:
        return model
    return with_dropout_keys(model, jax.random.fold_in(key, _ADAPTER_DROPOUT_STREAM))


def cast_frozen(model: PyTree, dtype: Any) -> PyTree:
    """``model`` with every floating-point leaf outside the adapters cast to ``dtype`` (e.g. ``jnp.bfloat16``
    to halve the frozen base's memory); adapters stay float32."""
    spec = trainable_filter(model)
    return jax.tree.map(
        lambda x, train: x.astype(dtype) if eqx.is_inexact_array(x) and not train else x,
        model,
        spec,
    )

"""The machinery shared by every family's key map: Hugging Face tensors <-> model leaves.

A family describes its checkpoint as a list of :class:`Param` entries. Loading builds an abstract
skeleton with ``eqx.filter_eval_shape`` (no weights allocated), converts each checkpoint tensor,
checks its dtype and shape against the skeleton (naming the key), and places all arrays in one
``eqx.tree_at``. Saving reads the same entries backwards.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.errors import (
    CheckpointError,
    DtypeMismatchError,
    MissingKeyError,
    ShapeMismatchError,
    UnexpectedKeyError,
)

# an accessor from a model to one of its leaves, e.g. ``lambda m: m.wte.weight``
Where = Callable[[Any], Any]


def _identity_in(x: np.ndarray) -> tuple[np.ndarray, ...]:
    return (x,)


def _identity_out(xs: tuple[np.ndarray, ...]) -> np.ndarray:
    return xs[0]


@dataclass(frozen=True)
class Param:
    """One checkpoint tensor and the model leaves it fills.

    ``key`` may contain ``{i}`` for per-layer tensors; then ``layered`` is true and each leaf has a
    leading ``layers`` axis (a scanned :class:`eqxllm.nn.Stack`). It may also contain ``{j}`` for
    per-expert tensors, stacked on the next axis (``[layers, experts, ...]``). ``to_model``
    splits/transposes one checkpoint tensor into the leaves' values (one layer's, one expert's
    slice); ``to_hf`` is its inverse.
    """

    key: str
    leaves: tuple[Where, ...]
    to_model: Callable[[np.ndarray], tuple[np.ndarray, ...]] = _identity_in
    to_hf: Callable[[tuple[np.ndarray, ...]], np.ndarray] = _identity_out
    num_layers: int = 0
    num_experts: int = 0

    @property
    def layered(self) -> bool:
        return "{i}" in self.key

    @property
    def stacked_axes(self) -> int:
        """How many leading axes of each leaf the checkpoint spreads over keys (layers, experts)."""
        return int(self.layered) + int("{j}" in self.key)

    def keys(self) -> list[str]:
        layers = range(self.num_layers) if self.layered else [0]
        experts = range(self.num_experts) if "{j}" in self.key else [0]
        return [self.key.format(i=i, j=j) for i in layers for j in experts]


def param(key: str, *leaves: Where, num_layers: int = 0, **transforms) -> Param:
    return Param(key=key, leaves=tuple(leaves), num_layers=num_layers, **transforms)


def transpose(x: np.ndarray) -> tuple[np.ndarray, ...]:
    return (np.ascontiguousarray(x.T),)


def transpose_back(xs: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.ascontiguousarray(xs[0].T)


@dataclass(frozen=True)
class KeyMap:
    """A family's full map: entries, plus checkpoint keys that are known and ignored (buffers)."""

    params: list[Param]
    ignore: tuple[str, ...] = field(default=())  # suffixes of keys to skip (e.g. GPT-2's attn.bias)


def _float_dtype_check(key: str, arr: np.ndarray) -> None:
    if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.name != "bfloat16":
        raise DtypeMismatchError(
            f"checkpoint tensor {key!r} has dtype {arr.dtype}; expected a floating dtype "
            "(float32, float16 or bfloat16). The file does not hold weights of this model."
        )


def load_into(skeleton: eqx.Module, keymap: KeyMap, tensors: dict[str, np.ndarray], dtype) -> eqx.Module:
    """Fill ``skeleton`` (a ``filter_eval_shape`` of the model) with ``tensors`` cast to ``dtype``
    (``None`` keeps each tensor's stored dtype)."""
    expected = {k for p in keymap.params for k in p.keys()}
    missing = sorted(expected - tensors.keys())
    if missing == ["lm_head.weight"]:  # a base model's save (MistralModel, not MistralForCausalLM)
        raise MissingKeyError(
            "checkpoint lacks the output head 'lm_head.weight', which config.json says is not tied to the "
            "embeddings: it holds a base model without a language-modelling head (transformers' *Model rather "
            "than *ForCausalLM / *LMHeadModel); load a checkpoint saved with its head"
        )
    if missing:
        raise MissingKeyError(
            f"checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:5]}; "
            "the checkpoint was written for a different architecture or config.json does not match it"
        )
    extra = sorted(k for k in tensors.keys() - expected if not k.endswith(keymap.ignore))
    if extra:
        raise UnexpectedKeyError(
            f"checkpoint holds {len(extra)} tensor(s) the model has no place for, e.g. {extra[:5]}; "
            "check that config.json describes these weights (layer count, tied head, model_type)"
        )
    wheres, values = [], []
    for p in keymap.params:
        per_layer: list[tuple[np.ndarray, ...]] = []
        for key in p.keys():
            arr = tensors[key]
            _float_dtype_check(key, arr)
            per_layer.append(p.to_model(arr))
        for j, where in enumerate(p.leaves):
            target = where(skeleton)
            slices = [parts[j] for parts in per_layer]
            axes = p.stacked_axes
            want = target.shape[axes:]
            for key, s in zip(p.keys(), slices):
                if tuple(s.shape) != tuple(want):
                    raise ShapeMismatchError(
                        f"checkpoint tensor {key!r} has shape {tuple(s.shape)} after conversion; the config implies "
                        f"{tuple(want)}. config.json and the weights disagree."
                    )
            value = np.stack(slices).reshape(target.shape[:axes] + tuple(want)) if axes else slices[0]
            wheres.append(where)
            values.append(jnp.asarray(value) if dtype is None else jnp.asarray(value, dtype=dtype))
    model = eqx.tree_at(lambda m: [w(m) for w in wheres], skeleton, values)
    leftover = [x for x in jax.tree.leaves(model) if isinstance(x, jax.ShapeDtypeStruct)]
    if leftover:  # a key map that forgets a leaf is a bug in eqxllm, not in the user's file
        raise CheckpointError(f"internal: {len(leftover)} model leaves have no checkpoint key")
    return model


def export_from(model: eqx.Module, keymap: KeyMap, dtype=None) -> dict[str, np.ndarray]:
    """The model's tensors under their checkpoint keys, as contiguous NumPy arrays."""
    out: dict[str, np.ndarray] = {}
    for p in keymap.params:
        leaves = [np.asarray(w(model)) for w in p.leaves]
        if dtype is not None:
            leaves = [x.astype(dtype) for x in leaves]
        if p.stacked_axes:
            flat = [x.reshape(-1, *x.shape[p.stacked_axes :]) for x in leaves]
            for i, key in enumerate(p.keys()):
                out[key] = np.ascontiguousarray(p.to_hf(tuple(x[i] for x in flat)))
        else:
            out[p.key] = np.ascontiguousarray(p.to_hf(tuple(leaves)))
    return out


def drop_tied_head(tensors: dict[str, np.ndarray], tied: bool, embed_key: str) -> dict[str, np.ndarray]:
    """Drop a stored copy of a tied head (``lm_head.weight``): it must equal the embedding
    ``embed_key``, or the config is wrong."""
    if not tied or "lm_head.weight" not in tensors:
        return tensors
    out = dict(tensors)
    head = out.pop("lm_head.weight")
    embed = out.get(embed_key)
    if embed is not None and (head.shape != embed.shape or not np.array_equal(head, embed)):
        raise CheckpointError(
            f"config.json says tie_word_embeddings=true but lm_head.weight differs from {embed_key}; "
            "set tie_word_embeddings=false in config.json"
        )
    return out

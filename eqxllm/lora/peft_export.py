"""LoRA adapters in PEFT's directory layout, derived from each family's checkpoint key map.

PEFT (Mangrulkar et al., 2022, ``huggingface/peft``) stores, for every adapted ``transformers`` module
``NAME``, ``base_model.model.NAME.lora_A.weight [r, in]`` and ``...lora_B.weight [out, r]`` and adds
``scaling * B @ A`` to the module's output, with ``scaling = lora_alpha / r`` (per module through
``rank_pattern`` / ``alpha_pattern``). ``in`` and ``out`` are the module's feature counts whatever
its storage layout: GPT-2's ``Conv1D`` keeps ``[in, out]`` weights (``fan_in_fan_out``) and the same
``A [r, in]``, ``B [out, r]``.

One table serves every family: each :class:`eqxllm.checkpoints.keymap.Param` already says which
model leaves fill a checkpoint tensor and how (``to_hf``: transposes, fused q/k/v, vocabulary
padding). Those maps only move entries, so applying ``to_hf`` to the ``B`` factors (with the rank in
place of the input axis) lays them out as the checkpoint lays out output features. Adapters that
share one tensor (GPT-2's fused ``c_attn`` from q, k and v) become one adapter of their summed rank,
``A`` stacked and ``B`` block-diagonal, with ``alpha`` raised in proportion so the scale, and the
update, are exactly the same.
"""

import json
import os
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from eqxllm.checkpoints.atomic import (
    atomic_write_text,
    check_destination,
    fsync_dir,
    temporary_folder,
    withdraw_description,
    write_directory,
)
from eqxllm.checkpoints.keymap import Param
from eqxllm.checkpoints.registry import family_for_model
from eqxllm.checkpoints.safetensors_io import write_file
from eqxllm.errors import ConfigError
from eqxllm.lora.apply import _path_str, linear_modules
from eqxllm.lora.linear import LoraLinear

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Bases whose config.json wraps the text model that eqxllm loads: transformers (5) names its modules
# under another prefix there. gemma-3-4b and larger are Gemma3ForConditionalGeneration, whose text
# layers are model.language_model.layers.N (the text-only Gemma3ForCausalLM: model.layers.N).
_WRAPPED_TEXT_PREFIXES = {"gemma3": ("model.", "model.language_model.")}


def base_module_prefix(base_config: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(text model's prefix, the base's prefix)`` for a base whose ``config.json`` (``base_config``)
    wraps the text model, else None."""
    model_type = None if base_config is None else base_config.get("model_type")
    return _WRAPPED_TEXT_PREFIXES.get(model_type) if isinstance(model_type, str) else None


def _local_config(base_model_name_or_path: str | None) -> dict[str, Any] | None:
    path = None if base_model_name_or_path is None else Path(base_model_name_or_path) / "config.json"
    if path is None or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _leaf_paths(model: Any) -> Any:
    """``model`` with each array leaf replaced by its dotted path, so a key map's accessors return
    where a leaf lives instead of its value."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _path_str(p), model)


def _orientation(p: Param, out_sizes: list[int], rank: int) -> tuple[int, bool]:
    """Apply ``to_hf`` to probe factors ``[out_j, probe]`` and report ``probe`` and whether the
    checkpoint stores the result transposed (output features last, as Conv1D does)."""
    probe = rank + 1 if rank + 1 != sum(out_sizes) else rank + 2
    shape = p.to_hf(tuple(np.zeros((o, probe), np.float32) for o in out_sizes)).shape
    return probe, shape[0] == probe


def _fused_factors(p: Param, loras: list[LoraLinear | None], out_sizes: list[int]):
    """Per-layer ``(A [R, in], B [out_hf, R], scale)`` of the one PEFT adapter on ``p``'s tensor."""
    used = [lin for lin in loras if lin is not None]
    scales = {lin.scale for lin in used}
    if len(scales) != 1:
        raise ConfigError(
            f"adapters fused into {p.key!r} have different scales {sorted(scales)}; PEFT cannot hold them"
        )
    total = sum(lin.rank for lin in used)
    probe, transposed = _orientation(p, out_sizes, total)
    a = np.concatenate([np.asarray(lin.lora_a, np.float32) for lin in used], axis=-2)
    layers = a.shape[:-2]
    blocks, offset = [], 0
    for lin, out in zip(loras, out_sizes):
        block = np.zeros((*layers, out, probe), np.float32)
        if lin is not None:
            block[..., offset : offset + lin.rank] = np.asarray(lin.lora_b, np.float32)
            offset += lin.rank
        blocks.append(block)

    def b_of(idx) -> np.ndarray:
        b = p.to_hf(tuple(blk[idx] for blk in blocks))
        return (b.T if transposed else b)[:, :total]

    if layers:
        bs = np.stack([b_of(i) for i in range(layers[0])])
    else:
        bs = b_of(())
    return a, bs, scales.pop()


def peft_adapter(
    model: Any, *, base_model_name_or_path: str | None = None, base_config: dict[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors (PEFT key names) and ``adapter_config.json`` contents of ``model``'s adapters.

    Module names are those of the base model: ``base_config`` (its ``config.json``; read from
    ``base_model_name_or_path`` when that is a local directory) says whether the base wraps the text
    model under another prefix (a multimodal Gemma 3)."""
    config = model.config
    if base_config is None:
        base_config = _local_config(base_model_name_or_path)
    prefix = base_module_prefix(base_config)
    family = family_for_model(model)
    modules = linear_modules(model)
    paths = _leaf_paths(model)
    tensors: dict[str, np.ndarray] = {}
    module_patterns: list[str] = []
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for p in family.key_map(config).params:
        if not p.key.endswith(".weight"):
            continue
        owners = [modules.get(str(w(paths)).removesuffix(".weight")) for w in p.leaves]
        loras = [lin if isinstance(lin, LoraLinear) else None for lin in owners]
        if all(lin is None for lin in loras):
            continue
        out_sizes = [lin.weight.shape[-2] for lin in owners if lin is not None]
        if len(out_sizes) != len(p.leaves):  # a LoRA leaf fused with a non-linear leaf: not expressible
            raise ConfigError(f"checkpoint tensor {p.key!r} mixes adapted and non-linear leaves; no PEFT layout")
        a, b, scale = _fused_factors(p, loras, out_sizes)
        name = p.key.removesuffix(".weight")
        if prefix is not None and name.startswith(prefix[0]):
            name = prefix[1] + name.removeprefix(prefix[0])
        layered = [(name.format(i=i), a[i], b[i]) for i in range(p.num_layers)] if p.layered else [(name, a, b)]
        for module, ai, bi in layered:
            tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(ai)
            tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(bi)
        pattern = re.escape(name).replace(re.escape("{i}"), r"\d+")
        module_patterns.append(pattern)
        ranks[pattern] = a.shape[-2]
        alphas[pattern] = scale * a.shape[-2]
    if not tensors:
        raise ConfigError("the model has no LoRA adapters to export; apply_lora adds them")
    rank = min(ranks.values())
    alpha = next(alphas[k] for k in ranks if ranks[k] == rank)
    cfg = {
        "peft_type": "LORA",
        "task_type": "SEQ_2_SEQ_LM" if config.is_encoder_decoder else "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": rank,
        "lora_alpha": alpha,
        # a regular expression PEFT matches in full against module names: exactly the adapted ones
        "target_modules": "(" + "|".join(module_patterns) + ")",
        "rank_pattern": {k: v for k, v in ranks.items() if v != rank},
        "alpha_pattern": {k: v for k, v in alphas.items() if v != alpha},
        "lora_dropout": max(lin.dropout_rate for lin in modules.values() if isinstance(lin, LoraLinear)),
        "bias": "none",
        "fan_in_fan_out": config.model_type == "gpt2",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "revision": None,
    }
    return tensors, cfg


def save_peft_adapter(
    model: Any,
    dst: str | os.PathLike,
    *,
    base_model_name_or_path: str | None = None,
    base_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (float32) for ``model``'s adapters,
    loadable with ``peft.PeftModel.from_pretrained(transformers_model, dst)``. Each file is replaced
    atomically, the config last; a new ``dst`` appears whole or not at all. ``base_config`` (the base's
    ``config.json``, read from a local ``base_model_name_or_path`` if not given) names the modules as
    the base does: a multimodal Gemma 3's text layers are ``model.language_model.layers.N``."""
    tensors, cfg = peft_adapter(model, base_model_name_or_path=base_model_name_or_path, base_config=base_config)
    directory = Path(dst)
    check_destination(directory)

    def write_into(target: Path) -> None:  # the weights first, the config that describes them last
        with temporary_folder(target) as tmp:
            write_file(tmp / ADAPTER_WEIGHTS, tensors, {"format": "pt"})
            withdraw_description(target, ADAPTER_CONFIG)  # a cut-off save must not load under the old config
            os.replace(tmp / ADAPTER_WEIGHTS, target / ADAPTER_WEIGHTS)
        atomic_write_text(target / ADAPTER_CONFIG, json.dumps(cfg, indent=2) + "\n")
        fsync_dir(target)

    return write_directory(directory, write_into)

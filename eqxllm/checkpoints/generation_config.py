"""``generation_config.json``: the end-of-sequence ids and sampling defaults saved beside a model.

Written from a model config on export (its special ids), or copied from the checkpoint a run started
from; read by ``eqxllm generate``, where an explicit flag still wins over the file.
"""

import json
import math
from pathlib import Path
from typing import Any

from eqxllm.errors import CheckpointError

GENERATION_CONFIG = "generation_config.json"


def generation_config(model_cfg: Any) -> dict[str, Any]:
    """``generation_config.json`` contents from a model config: its special token ids."""
    out: dict[str, Any] = {}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        value = getattr(model_cfg, name, None)
        if value is not None:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def read_generation_config(directory: str | Path) -> dict[str, Any]:
    """The known entries of ``directory/generation_config.json`` (``{}`` when there is none):
    ``eos_token_id`` as a list, and ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
    ``repetition_penalty``, ``num_beams``, ``length_penalty`` and ``early_stopping`` when set (not
    null). A ``repetition_penalty`` that is not a number > 0, a ``min_p`` outside ``[0, 1]``, a
    ``num_beams`` that is not an integer >= 1, a ``length_penalty`` that is not a finite number (of
    either sign, as in ``transformers``) or an ``early_stopping`` other than true, false or ``"never"`` raises :class:`CheckpointError` naming the file and the field."""
    path = Path(directory) / GENERATION_CONFIG
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(raw).__name__}")
    out: dict[str, Any] = {}
    eos = raw.get("eos_token_id")
    if eos is not None:
        out["eos_token_id"] = [eos] if isinstance(eos, int) else [int(i) for i in eos]
    for name, kind in (("do_sample", bool), ("temperature", float), ("top_k", int), ("top_p", float)):
        if raw.get(name) is not None:
            out[name] = kind(raw[name])
    for name, ok, expected in (
        ("repetition_penalty", lambda v: v > 0, "a number > 0 (1.0 is no penalty)"),
        ("min_p", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ("length_penalty", lambda v: True, "a finite number"),
        ("num_beams", lambda v: v >= 1 and float(v).is_integer(), "an integer >= 1"),
    ):
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
            raise CheckpointError(f"{path}: {name} must be {expected}, found {value!r}")
        out[name] = int(value) if name == "num_beams" else float(value)
    stopping = raw.get("early_stopping")
    if stopping is not None:
        if not (isinstance(stopping, bool) or stopping == "never"):
            raise CheckpointError(f'{path}: early_stopping must be true, false or "never", found {stopping!r}')
        out["early_stopping"] = stopping
    return out

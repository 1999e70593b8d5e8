"""``generation_config.json``: the end-of-sequence ids and sampling defaults saved beside a model.

Written from a model config on export (its special ids), or copied from the checkpoint a run started
from; read by ``eqxllm generate``, where an explicit flag still wins over the file.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eqxllm.checkpoints.config_json import is_json_int, is_json_number
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


def _as_is(v: Any) -> Any:
    return v


# name -> (accepts, what it must be, how it is read)
_FIELDS: dict[str, tuple[Callable[[Any], bool], str, Callable[[Any], Any]]] = {
    "do_sample": (lambda v: isinstance(v, bool), "true or false", _as_is),
    "temperature": (lambda v: is_json_number(v) and v >= 0, "a number >= 0", float),
    "top_k": (lambda v: is_json_int(v) and v >= 0, "an integer >= 0 (0: no top-k filtering)", int),
    "top_p": (lambda v: is_json_number(v) and 0 <= v <= 1, "a number in [0, 1]", float),
    "min_p": (lambda v: is_json_number(v) and 0 <= v <= 1, "a number in [0, 1]", float),
    "repetition_penalty": (lambda v: is_json_number(v) and v > 0, "a number > 0 (1.0 is no penalty)", float),
    "length_penalty": (is_json_number, "a finite number", float),
    "num_beams": (lambda v: is_json_number(v) and v >= 1 and float(v).is_integer(), "an integer >= 1", int),
    "early_stopping": (lambda v: isinstance(v, bool) or v == "never", 'true, false or "never"', _as_is),
}


def read_generation_config(directory: str | Path) -> dict[str, Any]:
    """The known entries of ``directory/generation_config.json`` (``{}`` when there is none):
    ``eos_token_id`` as a list, and ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
    ``repetition_penalty``, ``num_beams``, ``length_penalty`` and ``early_stopping`` when set (not
    null). A ``top_k`` of 0 is no top-k filtering, as in ``transformers``, and is left out. A value of
    the wrong type or out of range (a string for a number or a flag, a negative or fractional token
    id, a ``min_p`` outside ``[0, 1]``) raises :class:`CheckpointError` naming the file and the field,
    rather than being read as something else."""
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
        ids = [eos] if not isinstance(eos, list) else eos
        if not all(is_json_int(i) and i >= 0 for i in ids):
            raise CheckpointError(
                f"{path}: eos_token_id must be a token id (an integer >= 0) or a list of them, found {eos!r}"
            )
        out["eos_token_id"] = ids
    for name, (accepts, expected, read) in _FIELDS.items():
        value = raw.get(name)
        if value is None:
            continue
        if not accepts(value):
            raise CheckpointError(f"{path}: {name} must be {expected}, found {value!r}")
        if not (name == "top_k" and value == 0):  # transformers: top_k 0 filters nothing
            out[name] = read(value)
    return out

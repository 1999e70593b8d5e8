"""A training run's directory (``--out``): what it may hold before a run starts, and a start that
leaves nothing behind when it fails.

A run writes ``run_config.json`` first, then whatever its task prepares (``tokenizer.json``), then
metrics and checkpoints. A folder of other files is never merged into; a run with checkpoints is
continued only with ``--resume`` and the same model, data, task and ``train.seed``; a run that never saved a step
(and exported no model) is cleared and started afresh.
"""

import json
import math
import shutil
from pathlib import Path
from typing import Any

from eqxllm.checkpoints.atomic import (
    atomic_write_text,
    check_destination,
    create_folders,
    missing_folders,
    remove_created,
)
from eqxllm.errors import CheckpointError, ConfigError
from eqxllm.models.runtime_options import is_runtime_option
from eqxllm.train.config import TrainConfig
from eqxllm.train.distributed import share_lead_outcome
from eqxllm.train.metrics import read_metrics
from eqxllm.train.tasks import Task, make_task

# What a run writes into --out before its first checkpoint: a run that stopped before saving a step
# left only these, and a fresh start clears them (a stale tokenizer.json would be silently reused).
_RUN_FILES = ("run_config.json", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "loss.png")
# where a run exports its model (Hugging Face layout) when it ends: a run that has one is never cleared
EXPORT_DIR = "model"


def clear_run_files(out: Path) -> None:
    """Remove what a run writes before its first checkpoint (and nothing else); ``out`` too if that
    leaves it empty."""
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def check_out_dir(cfg: TrainConfig, out: Path) -> None:
    """``out`` must be absent or empty, or hold a run: never merge into a folder of other files (its
    metrics.jsonl appended to). A run with checkpoints continues only with ``--resume`` and the same
    model, data, task and ``train.seed``; a run that never saved a step is cleared and started afresh,
    unless it exported a model (a finished run whose checkpoints were deleted): that is refused.
    Only process 0 calls it (it owns the files)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory (empty, or a run to --resume)")
    try:  # below a file, or in a folder that cannot be written: refused before any work
        check_destination(out)
    except CheckpointError as e:
        raise ConfigError(f"--out: {e}") from None
    if not out.is_dir() or not any(out.iterdir()):
        if cfg.resume:
            raise CheckpointError(f"--resume: {out} holds no checkpoint to resume from (no run); drop --resume")
        return
    saved = out / "run_config.json"
    if not saved.is_file():
        found = ", ".join(sorted(p.name for p in out.iterdir())[:6])
        raise ConfigError(
            f"--out {out} is not empty and is not an eqxllm run (no run_config.json; found: {found}); "
            "choose an empty or new --out directory"
        )
    # a step folder, not a killed write's temporary (Orbax renames a step into place when complete)
    has_ckpt = (out / "checkpoints").is_dir() and any(p.name.isdigit() for p in (out / "checkpoints").iterdir())
    if not has_ckpt:
        if cfg.resume:
            raise CheckpointError(f"--resume: {out / 'checkpoints'} holds no checkpoint to resume from")
        if (out / EXPORT_DIR).exists():
            raise ConfigError(
                f"{out} holds a finished run (its exported {EXPORT_DIR}/) and no checkpoint; choose another --out, "
                f"or remove {out} to train afresh there"
            )
        clear_run_files(out)  # an earlier start that saved nothing: start afresh
        return
    if not cfg.resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    _check_same_run(cfg, saved, out)


# what a resume may not change (lora/init_from: absent from older runs' files, read as unchanged),
# less what only changes how the same run is computed or where its files are (see _comparable)
_SAME_ON_RESUME = ("model", "data", "task", "lora", "init_from")
# the batches are a function of (train.seed, step) and of their shape: other values go on over other batches
_SAME_BATCHES = ("seed", "batch_size", "seq_len")


def _check_same_run(cfg: TrainConfig, saved: Path, out: Path) -> None:
    try:
        old = json.loads(saved.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{saved} is not valid JSON ({e}); it cannot be resumed") from e
    new = json.loads(cfg.to_json())
    parts = [
        (part, _comparable(part, old.get(part, new.get(part))), _comparable(part, new.get(part)))
        for part in _SAME_ON_RESUME
    ]
    parts += [(f"train.{name}", old.get("train", {}).get(name), new["train"][name]) for name in _SAME_BATCHES]
    for part, was, now in parts:
        if was != now:
            raise ConfigError(
                f"--resume: {_first_difference(part, was, now)} differs from the run in {out}; resume with the "
                f"same flags, or with --config-file {saved} --resume"
            )


def _comparable(part: str, value: Any) -> Any:
    """``value``, the run config's ``part``, less what a resume may change: the model's run-time options
    (remat, the attention kernel, dropout: :mod:`eqxllm.models.runtime_options`) and the data's cache
    folder; a data file that exists is compared by its resolved path (relative or absolute)."""
    if part == "model" and isinstance(value, dict):
        return _without_runtime_options(value)
    if part == "data" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache_dir"}
        source = value.get("source")
        if isinstance(source, str) and source and Path(source).exists():
            value["source"] = str(Path(source).resolve())
    return value


def _without_runtime_options(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {
        k: _without_runtime_options(v, f"{prefix}{k}.") if isinstance(v, dict) else v
        for k, v in fields.items()
        if not is_runtime_option(prefix + k)
    }


def _first_difference(name: str, was: Any, now: Any) -> str:
    """``name.field (was X, now Y)`` for the first field that differs between two JSON values."""
    if isinstance(was, dict) and isinstance(now, dict):
        for key in sorted(was.keys() | now.keys()):
            if was.get(key) != now.get(key):
                return _first_difference(f"{name}.{key}", was.get(key), now.get(key))
    return f"{name} (was {was!r}, now {now!r})"


def start_run(cfg: TrainConfig, out: Path, *, lead: bool, progress: bool) -> Task:
    """Check ``out`` and write ``run_config.json`` (a fresh run), both by the ``lead`` process alone
    while the others wait for its verdict (a folder it is writing would look like no run to them), then
    prepare the task's data and tokenizer on every process. A start that fails (bad data, no network)
    removes what it wrote, and the folders it created."""
    created: list[Path] = []
    failure = None
    if lead:
        try:
            check_out_dir(cfg, out)
            created = missing_folders(out)
            if not cfg.resume:  # first, so that whatever the task writes (tokenizer.json) is this run's
                _write_run_config(cfg, out, created)
        except BaseException as e:  # the others learn of it below, and stop too
            failure = e
    share_lead_outcome(failure)
    try:
        return make_task(cfg, out, progress=progress and lead)
    except BaseException:
        if lead and not cfg.resume:
            clear_run_files(out)
            remove_created(created)
        raise


def _write_run_config(cfg: TrainConfig, out: Path, created: list[Path]) -> None:
    try:
        create_folders(out)  # a place the system refuses (/proc) is one line, not an OSError
        atomic_write_text(out / "run_config.json", cfg.to_json())
    except BaseException:
        clear_run_files(out)
        remove_created(created)
        raise


def record_resumed_config(cfg: TrainConfig, out: Path) -> None:
    """A resume may change what does not touch the weights (the schedule, ``max_steps``): once its
    checkpoint has restored, ``run_config.json`` says so, so that ``--config-file`` replays the run.
    An unchanged config leaves the file untouched."""
    path = out / "run_config.json"
    text = cfg.to_json()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def best_val_loss(out: Path, upto: int) -> float:
    """The lowest ``val_loss`` that the run in ``out`` logged at or before step ``upto`` (a resumed run's
    best so far; evaluations after its last checkpoint are replayed)."""
    rows = read_metrics(out)
    return min((r["val_loss"] for r in rows if r.get("kind") == "eval" and r["step"] <= upto), default=math.inf)

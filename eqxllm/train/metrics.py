"""Run logs: JSONL (one object a line, the record of truth), TensorBoard, and a console progress bar.

Only process 0 writes; other processes get a logger that does nothing.
"""

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eqxllm.checkpoints.atomic import atomic_write_text
from eqxllm.errors import DataError


class RunLogger:
    """``log(kind, step, **values)`` appends ``{"kind", "step", "time", ...}`` to ``metrics.jsonl`` and
    mirrors scalars to TensorBoard under ``kind/name``."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool = True,
        progress: bool = True,
        total_steps: int = 0,
        initial_step: int = 0,
    ):
        self.enabled = enabled
        self.run_dir = run_dir
        self._start = time.time()
        if enabled:
            drop_torn_line(run_dir / "metrics.jsonl")
        self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self._tb = None
        tensorboard_missing = False
        if enabled:
            try:  # TensorBoard is optional (pip install 'eqxllm[tensorboard]'); the JSONL log is enough
                self._tb = summary_writer_class()(str(run_dir / "tensorboard"))
            except ImportError:
                tensorboard_missing = True
        self.bar = tqdm(
            total=total_steps,
            initial=initial_step,
            disable=not (enabled and progress),
            unit="step",
            dynamic_ncols=True,
        )
        if tensorboard_missing:
            self.text(
                "tensorboard",
                initial_step,
                "no TensorBoard log (pip install 'eqxllm[tensorboard]'); metrics.jsonl has every row",
            )

    def log(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "step": step, "time": round(time.time() - self._start, 3), **values}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"{kind}/{name}", v, step)
            self._tb.flush()

    def text(self, tag: str, step: int, text: str) -> None:
        if self.enabled:
            if not self.bar.disable:
                self.bar.write(text)
            if self._tb is not None:
                self._tb.add_text(tag, text, step)

    def close(self) -> None:
        self.bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


_IMPORT_LOCK = threading.Lock()


def summary_writer_class() -> type:
    """``tensorboardX.SummaryWriter``, imported without PyTorch (ImportError without tensorboardX).

    tensorboardX imports ``torch`` whenever it is installed, only so that it can also take torch
    tensors; a run logs Python floats, and the import costs each training process seconds and
    hundreds of MB. While tensorboardX is first imported, ``import torch`` fails as if it were absent
    (tensorboardX's own fallback); it imports as usual afterwards. When torch is already imported,
    tensorboardX finds it and nothing is hidden."""
    with _IMPORT_LOCK:
        if "tensorboardX" in sys.modules or "torch" in sys.modules:
            from tensorboardX import SummaryWriter

            return SummaryWriter
        sys.modules["torch"] = None  # type: ignore[assignment]  # the import system's "not installed"
        try:
            from tensorboardX import SummaryWriter
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
        return SummaryWriter


def drop_torn_line(path: Path) -> None:
    """Cut a last line that a kill or a full disk left without its newline, so that appending goes on
    from a whole row (the torn row is lost; every row before it is kept)."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def forget_replayed_rows(run_dir: Path, step: int, *, finished: bool) -> None:
    """Before a run resumes from its checkpoint at ``step``, drop the rows it is about to log again: those
    of later steps (logged before a kill, then lost with their checkpoint), and, when ``step`` is the
    last (``finished``: the final evaluation runs again), every row at ``step`` but its training metrics.
    The log then holds each step once, and a resumed ``export_best`` compares against evaluations of
    kept steps only. Rewritten atomically; TensorBoard's event files are append-only and keep both."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    drop_torn_line(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)

    def kept(line: str) -> bool:
        try:
            row = json.loads(line)
        except ValueError:
            return True  # not ours to judge: read_metrics reports it
        at = row.get("step") if isinstance(row, dict) else None
        if not isinstance(at, int):
            return True
        return at < step or (at == step and not (finished and row.get("kind") != "train"))

    keep = [line for line in lines if kept(line)]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(keep))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl``; a torn last line (no newline, or not JSON: a killed
    write) is skipped. A malformed line elsewhere is corruption and raises :class:`DataError`."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # the last line, without its newline: a write that was cut short
                continue
            raise DataError(f"{path}: line {i + 1} is not JSON ({line[:80]!r}); the log is corrupted") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows

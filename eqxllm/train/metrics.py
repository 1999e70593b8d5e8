"""Run logs: JSONL (one object a line, the record of truth), TensorBoard, and a console progress bar.

Only process 0 writes; other processes get a logger that does nothing.
"""

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


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
        self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self._tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # TensorBoard is optional; the JSONL log is enough
                self._tb = None
        self.bar = tqdm(
            total=total_steps,
            initial=initial_step,
            disable=not (enabled and progress),
            unit="step",
            dynamic_ncols=True,
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


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

"""Training tasks: what a run learns, separate from how it is trained.

The loop (:mod:`eqxllm.train.loop`) knows a task only through :class:`Task`: it prepares data and a
tokenizer once, turns a model config into the one it trains (vocabulary from the tokenizer), gives
each step's batch (this process's rows, a pure function of the step), a loss, an evaluation and
sample texts. ``TrainConfig.task`` picks one by name from :data:`TASKS`.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from eqxllm.errors import ConfigError


@runtime_checkable
class Task(Protocol):
    tokenizer: Any

    def model_config(self, model_cfg: Any) -> Any:
        """The config actually trained (e.g. ``vocab_size`` and special ids from the tokenizer)."""
        ...

    def loss_fn(self, model: Any, batch: Any, key: Any) -> tuple[Any, dict[str, Any]]: ...

    def batch(self, step: int, *, process_index: int, process_count: int) -> Any:
        """This process's rows of step ``step``'s global batch (NumPy arrays)."""
        ...

    def evaluate(self, model: Any) -> dict[str, float]:
        """Validation metrics; ``val_loss`` is always present."""
        ...

    def samples(self, model: Any, key: Any) -> list[str]: ...


def _lm(cfg, run_dir: Path, progress: bool) -> Task:
    from eqxllm.train.tasks.lm import LMTask

    return LMTask(cfg, run_dir, progress=progress)


def _vae(cfg, run_dir: Path, progress: bool) -> Task:
    from eqxllm.train.tasks.vae import VAETask

    return VAETask(cfg, run_dir, progress=progress)


def _seq2seq(cfg, run_dir: Path, progress: bool) -> Task:
    from eqxllm.train.tasks.seq2seq import Seq2SeqTask

    return Seq2SeqTask(cfg, run_dir, progress=progress)


TASKS: dict[str, Callable[[Any, Path, bool], Task]] = {"lm": _lm, "seq2seq": _seq2seq, "vae": _vae}


def make_task(cfg, run_dir: Path, *, progress: bool = True) -> Task:
    try:
        factory = TASKS[cfg.task]
    except KeyError:
        raise ConfigError(f"unknown task {cfg.task!r}; known: {sorted(TASKS)}") from None
    return factory(cfg, run_dir, progress)


__all__ = ["TASKS", "Task", "make_task"]

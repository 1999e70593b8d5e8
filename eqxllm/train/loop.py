"""The training loop: data -> compiled step on a mesh -> evaluation, samples, logs, checkpoints -> export.

One compiled step per run (no retracing), no host sync inside the hot loop except every
``log_every`` steps, where the metrics of all steps since the last pull are read at once (so a
NaN is reported with the exact step that produced it). The data order is a function of
``(seed, step)`` and each step's dropout key is ``fold_in(key, step)``, so ``--resume`` continues
bit for bit. SIGINT/SIGTERM finish the current step, save a checkpoint and exit cleanly.
"""

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray, PyTree

from eqxllm.checkpoints.atomic import missing_folders, remove_created
from eqxllm.errors import MissingExtraError, NonFiniteError
from eqxllm.lora import has_lora, lora_filter
from eqxllm.train.checkpoint import RebuiltBase, TrainCheckpointer
from eqxllm.train.config import TrainConfig
from eqxllm.train.distributed import initialize_distributed, lead_number
from eqxllm.train.export import export_run
from eqxllm.train.host_memory import keep_freed_host_memory
from eqxllm.train.init_from import initial_model
from eqxllm.train.metrics import RunLogger, forget_replayed_rows
from eqxllm.train.optim import init_opt_state, make_optimizer
from eqxllm.train.plot import plot_run
from eqxllm.train.precision import resolve_dtype
from eqxllm.train.run_dir import (
    EXPORT_DIR,
    best_val_loss,
    clear_run_files,
    record_resumed_config,
    start_run,
)
from eqxllm.train.sharding import (
    batch_sharding,
    check_batch_size,
    gather,
    load_process_batch,
    make_mesh,
    model_shardings,
    opt_state_shardings,
    place,
    place_batch,
)
from eqxllm.train.step import make_train_step
from eqxllm.train.tasks import Task


class TrainingDiverged(NonFiniteError):
    """The loss became NaN or infinite."""


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass(kw_only=True)
class _Run:
    """A run between steps: its fixed parts, and the state each step advances (``model``,
    ``opt_state``, ``step``) or each evaluation may lower (``best``, the lowest ``val_loss`` so far)."""

    cfg: TrainConfig
    out: Path
    lead: bool  # process 0: writes the files
    task: Task
    mesh: Mesh
    step_fn: Callable
    ckpt: TrainCheckpointer
    log: RunLogger
    train_key: PRNGKeyArray
    sample_key: PRNGKeyArray
    model: eqx.Module
    opt_state: PyTree
    step: int
    best: float

    @property
    def export(self) -> Path:
        return self.out / EXPORT_DIR


def train(
    cfg: TrainConfig,
    *,
    progress: bool = True,
    stop_after_step: int | None = None,
    check_task: Callable[[Task], None] | None = None,
) -> Path:
    """Run a whole training job; returns the exported model directory ``OUT/model``.

    ``stop_after_step`` pauses the run there (checkpoint saved, nothing exported), as a preemption
    would; ``cfg.replace(resume=True)`` then continues it exactly. ``check_task`` is called with the
    task once its data and tokenizer are ready, before the model is built: what it raises stops the
    run as bad data does (a fresh run leaves nothing behind), so that a caller can refuse options that
    depend on the data before training rather than after.
    """
    initialize_distributed()
    keep_freed_host_memory()  # after the distributed start: it asks JAX for the backend
    out = Path(cfg.out)
    lead = jax.process_index() == 0
    created = missing_folders(out)
    task = start_run(cfg, out, lead=lead, progress=progress)
    try:
        if check_task is not None:
            check_task(task)
        run = _build_run(cfg, task, out, lead=lead, progress=progress)
    except BaseException:  # bad input found while building (mesh, adapters, weights, data): leave nothing
        if lead and not cfg.resume:
            clear_run_files(out)
            remove_created(created)
        raise
    if lead and cfg.resume:  # restored: the settings it continues under are now the run's
        record_resumed_config(cfg, out)
    try:
        if not _run_steps(run, stop_after_step):
            return out / "checkpoints"
        return _evaluate_and_export(run)
    finally:
        run.log.close()
        run.ckpt.close()


def _build_run(cfg: TrainConfig, task: Task, out: Path, *, lead: bool, progress: bool) -> _Run:
    """The mesh, the placed model and optimizer state (restored from the latest checkpoint with
    ``--resume``), the compiled step, the checkpointer and the logger."""
    t = cfg.train
    model_cfg = cfg.model if cfg.init_from else task.model_config(cfg.model)  # a checkpoint's stays as is
    mesh = make_mesh(f"data={jax.device_count()}" if cfg.mesh == "auto" else cfg.mesh)
    check_batch_size(t.batch_size, mesh, t.accum_steps)  # before anything is written
    _local_batch(task, 0, mesh)  # too little data: now
    init_key, train_key, sample_key = jax.random.split(jax.random.key(t.seed), 3)
    model = initial_model(cfg, model_cfg, init_key)
    optimizer = make_optimizer(cfg.resolved_optim(), model)
    shardings = (model_shardings(model, mesh), opt_state_shardings(optimizer, model, mesh))
    model = place(model, shardings[0])
    # from the placed model, so that the moments are born sharded (place reshards what spans processes)
    opt_state = place(init_opt_state(optimizer, model), shardings[1])
    step_fn = make_train_step(
        task.loss_fn,
        optimizer,
        accum_steps=t.accum_steps,
        compute_dtype=resolve_dtype(t.compute_dtype),
        model_sharding=shardings[0],
        opt_state_sharding=shardings[1],
        batch_sharding=batch_sharding(mesh),
        max_traces=1,
    )
    ckpt = TrainCheckpointer(out / "checkpoints", keep=t.keep_checkpoints, rebuilt=_rebuilt_base(cfg, model))
    start = 0
    if cfg.resume:
        start = ckpt.latest_step() or 0
        model, opt_state, train_key, _ = ckpt.restore(start, model, opt_state, shardings)
    if lead and cfg.resume:
        forget_replayed_rows(out, start, finished=start >= t.max_steps)
    log = RunLogger(out, enabled=lead, progress=progress, total_steps=t.max_steps, initial_step=start)
    # only process 0 holds metrics.jsonl, and every process must agree on which evaluation is exported
    best = lead_number(best_val_loss(out, start) if cfg.resume and lead else math.inf)
    return _Run(
        cfg=cfg, out=out, lead=lead, task=task, mesh=mesh, step_fn=step_fn, ckpt=ckpt, log=log, train_key=train_key,
        sample_key=sample_key, model=model, opt_state=opt_state, step=start, best=best,
    )  # fmt: skip


def _rebuilt_base(cfg: TrainConfig, model: eqx.Module) -> RebuiltBase | None:
    """A LoRA run's checkpoints hold the adapters and their optimizer state only: the frozen base is
    what ``--init-from`` (or the seed) gives again on resume, checked by its fingerprint."""
    if not has_lora(model):
        return None
    source = (
        f"--init-from {cfg.init_from}"
        if cfg.init_from
        else f"the random initialisation of --train.seed {cfg.train.seed}"
    )
    return RebuiltBase.of(model, lora_filter(model), source)


def _run_steps(run: _Run, stop_after_step: int | None) -> bool:
    """Step to ``train.max_steps`` or the time budget (``True``), or until a signal or ``stop_after_step``
    pauses the run (``False``); either way the last step is checkpointed and its metrics logged."""
    t = run.cfg.train
    window = _MetricsWindow(run.log, t.batch_size * t.seq_len)
    t0 = time.time()
    with _StopFlag() as stop:
        while run.step < t.max_steps:
            batch = place_batch(_local_batch(run.task, run.step, run.mesh), run.mesh)
            step_key = jax.random.fold_in(run.train_key, run.step)
            run.model, run.opt_state, metrics = run.step_fn(run.model, run.opt_state, batch, step_key)
            run.step += 1
            window.add(run.step, metrics)
            run.log.bar.update(1)
            timed_out = t.max_minutes is not None and time.time() - t0 > 60 * t.max_minutes
            paused = stop_after_step is not None and run.step >= stop_after_step
            if run.step % t.log_every == 0 or run.step == t.max_steps or stop.signal or timed_out or paused:
                window.flush()
            if run.step % t.checkpoint_every == 0 or stop.signal or timed_out or paused:
                _save(run)
            if stop.signal is not None or paused:
                why = f"signal {stop.signal}" if stop.signal is not None else "stop_after_step"
                run.log.text("stop", run.step, f"{why}: saved checkpoint at step {run.step}, exiting")
                return False
            if run.step % t.eval_every == 0 and run.step != t.max_steps and not timed_out:
                _evaluate_and_sample(run)
            if timed_out:
                run.log.text("time", run.step, f"time budget of {t.max_minutes} min reached at step {run.step}")
                break
    window.flush()
    return True


def _evaluate_and_export(run: _Run) -> Path:
    """Checkpoint the last step (unless saved already), evaluate and sample it, export the weights
    (the best evaluation's with ``export_best``, else the last step's) and draw the loss curve."""
    if run.step not in run.ckpt.all_steps():
        _save(run)
    _evaluate_and_sample(run)
    if not (run.cfg.train.export_best and math.isfinite(run.best)):  # no finite val_loss: the last weights
        _export(run)
    if run.lead:
        try:
            plot_run(run.out)
        except MissingExtraError as e:  # the curve is optional; the run is not
            run.log.text("plot", run.step, f"loss.png not drawn: {e}")
    return run.export


def _save(run: _Run) -> None:
    run.ckpt.save(run.step, run.model, run.opt_state, run.train_key, {"data_step": run.step})


def _local_batch(task: Task, step: int, mesh: Mesh) -> Any:
    """This process's rows of step ``step``'s batch: those its devices hold in the batch sharding."""
    return load_process_batch(lambda index, count: task.batch(step, process_index=index, process_count=count), mesh)


def _export(run: _Run) -> None:
    """Called by every process: weights that span processes are gathered together, then process 0
    writes them."""
    model = gather(run.model)
    if run.lead:
        chat = getattr(run.task, "chat_templates", None)  # the language-modelling task's chat records
        export_run(model, run.export, tokenizer=run.task.tokenizer, init_from=run.cfg.init_from, chat=chat)


def _evaluate_and_sample(run: _Run) -> None:
    """Log the validation metrics and sample texts of the current step; with ``export_best``, export
    the weights when ``val_loss`` is the lowest so far."""
    step, log = run.step, run.log
    metrics = run.task.evaluate(run.model)
    log.log("eval", step, **metrics)
    log.text("eval", step, f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if run.cfg.train.export_best and float(metrics["val_loss"]) < run.best:
        run.best = float(metrics["val_loss"])  # the same on every process: all export together
        _export(run)
        log.log("best", step, val_loss=run.best)
        log.text("best", step, f"step {step}: lowest val_loss so far ({run.best:.4f}), exported to {run.export}")
    for i, text in enumerate(run.task.samples(run.model, jax.random.fold_in(run.sample_key, step))):
        log.log("sample", step, text=text)
        log.text(f"sample/{i}", step, f"  sample {i}: {text!r}")


class _MetricsWindow:
    """The metrics of the steps since the last pull, still on device: read in one transfer, checked
    for a non-finite loss step by step, and logged as the last step's with the window's throughput."""

    def __init__(self, log: RunLogger, tokens_per_step: int):
        self.log = log
        self.tokens_per_step = tokens_per_step
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.start = time.time()

    def add(self, step: int, metrics: dict[str, Any]) -> None:
        self.pending.append((step, metrics))

    def flush(self) -> None:
        if not self.pending:
            return
        host = jax.device_get([m for _, m in self.pending])
        for (s, _), m in zip(self.pending, host):
            if not math.isfinite(float(m["loss"])):
                raise TrainingDiverged(f"loss is {float(m['loss'])} at step {s}; lower the learning rate or check data")
        s, m = self.pending[-1][0], host[-1]
        tps = self.tokens_per_step * len(self.pending) / max(time.time() - self.start, 1e-9)
        extra = {k: float(v) for k, v in m.items() if k not in ("loss", "tokens")}
        self.log.log("train", s, loss=float(m["loss"]), tokens_per_s=tps, **extra)
        self.log.bar.set_postfix(loss=f"{float(m['loss']):.3f}", tok_s=f"{tps:,.0f}")
        self.pending.clear()
        self.start = time.time()

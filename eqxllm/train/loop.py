"""The training loop: data -> compiled step on a mesh -> evaluation, samples, logs, checkpoints -> export.

One compiled step per run (no retracing), no host sync inside the hot loop except every
``log_every`` steps, where the metrics of all steps since the last pull are read at once (so a
NaN is reported with the exact step that produced it). The data order is a function of
``(seed, step)`` and each step's dropout key is ``fold_in(key, step)``, so ``--resume`` continues
bit for bit. SIGINT/SIGTERM finish the current step, save a checkpoint and exit cleanly.
"""

import json
import math
import shutil
import signal
import time
from pathlib import Path

import jax

from eqxllm.checkpoints.atomic import atomic_write_text, remove_created
from eqxllm.errors import CheckpointError, ConfigError, MissingExtraError, NonFiniteError
from eqxllm.train.checkpoint import TrainCheckpointer
from eqxllm.train.config import TrainConfig
from eqxllm.train.distributed import initialize_distributed
from eqxllm.train.export import export_run
from eqxllm.train.init_from import initial_model
from eqxllm.train.metrics import RunLogger, read_metrics
from eqxllm.train.optim import init_opt_state, make_optimizer
from eqxllm.train.plot import plot_run
from eqxllm.train.precision import resolve_dtype
from eqxllm.train.sharding import (
    batch_sharding,
    check_batch_size,
    make_mesh,
    model_shardings,
    opt_state_shardings,
    place,
    place_batch,
)
from eqxllm.train.step import make_train_step
from eqxllm.train.tasks import make_task


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


# What a run writes into --out before its first checkpoint: a run that stopped before saving a step
# left only these, and a fresh start clears them (a stale tokenizer.json would be silently reused).
_RUN_FILES = ("run_config.json", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "loss.png")


def _clear_run_files(out: Path) -> None:
    """Remove what a run writes before its first checkpoint (and nothing else); ``out`` too if that
    leaves it empty."""
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _check_out_dir(cfg: TrainConfig, out: Path, *, lead: bool = True) -> None:
    """``out`` must be absent or empty, or hold a run: never merge into a folder of other files (its
    metrics.jsonl appended to). A run with checkpoints continues only with ``--resume`` and the same
    model, data and task; a run that never saved a step is cleared and started afresh."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory (empty, or a run to --resume)")
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
        if lead:  # an earlier start that saved nothing: start afresh (process 0 owns the files)
            _clear_run_files(out)
        return
    if not cfg.resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    try:
        old = json.loads(saved.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{saved} is not valid JSON ({e}); it cannot be resumed") from e
    new = json.loads(cfg.to_json())
    for part in ("model", "data", "task", "lora", "init_from"):  # lora/init_from: absent from older runs' files
        if old.get(part, new.get(part)) != new.get(part):
            raise ConfigError(f"--resume: the {part} config differs from the run in {out}; resume with the same one")


def _best_val_loss(out: Path, upto: int) -> float:
    """The lowest ``val_loss`` that the run in ``out`` logged at or before step ``upto`` (a resumed run's
    best so far; evaluations after its last checkpoint are replayed)."""
    rows = read_metrics(out)
    return min((r["val_loss"] for r in rows if r.get("kind") == "eval" and r["step"] <= upto), default=math.inf)


def train(cfg: TrainConfig, *, progress: bool = True, stop_after_step: int | None = None) -> Path:
    """Run a whole training job; returns the exported model directory ``OUT/model``.

    ``stop_after_step`` pauses the run there (checkpoint saved, nothing exported), as a preemption
    would; ``cfg.replace(resume=True)`` then continues it exactly.
    """
    initialize_distributed()
    out = Path(cfg.out)
    lead = jax.process_index() == 0
    _check_out_dir(cfg, out, lead=lead)
    t = cfg.train
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        if lead and not cfg.resume:  # first, so that whatever the task writes (tokenizer.json) is this run's
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "run_config.json", cfg.to_json())
        task = make_task(cfg, out, progress=progress and lead)
    except BaseException:
        if lead and not cfg.resume:  # bad data, no network: a failed start leaves nothing behind
            _clear_run_files(out)
            remove_created(created)
        raise
    model_cfg = cfg.model if cfg.init_from else task.model_config(cfg.model)  # a checkpoint's stays as is

    mesh = make_mesh(f"data={jax.device_count()}" if cfg.mesh == "auto" else cfg.mesh)
    check_batch_size(t.batch_size, mesh)
    init_key, train_key, sample_key = jax.random.split(jax.random.key(t.seed), 3)
    model = initial_model(cfg, model_cfg, init_key)
    optimizer = make_optimizer(cfg.resolved_optim(), model)
    model_sh = model_shardings(model, mesh)
    opt_sh = opt_state_shardings(optimizer, model, mesh)
    model = place(model, model_sh)
    opt_state = place(init_opt_state(optimizer, model), opt_sh)
    step_fn = make_train_step(
        task.loss_fn,
        optimizer,
        accum_steps=t.accum_steps,
        compute_dtype=resolve_dtype(t.compute_dtype),
        model_sharding=model_sh,
        opt_state_sharding=opt_sh,
        batch_sharding=batch_sharding(mesh),
        max_traces=1,
    )
    ckpt = TrainCheckpointer(out / "checkpoints", keep=t.keep_checkpoints)
    start = 0
    if cfg.resume:
        start = ckpt.latest_step() or 0
        model, opt_state, train_key, _ = ckpt.restore(start, model, opt_state, (model_sh, opt_sh))

    log = RunLogger(out, enabled=lead, progress=progress, total_steps=t.max_steps, initial_step=start)
    export = out / "model"
    best = _best_val_loss(out, start) if cfg.resume else math.inf
    tokens_per_step = t.batch_size * t.seq_len
    pending: list[tuple[int, dict]] = []
    t0, window_start, step = time.time(), time.time(), start

    def evaluate_and_sample(step: int) -> None:
        nonlocal best
        metrics = task.evaluate(model)
        log.log("eval", step, **metrics)
        log.text("eval", step, f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if t.export_best and float(metrics["val_loss"]) < best:
            best = float(metrics["val_loss"])
            if lead:
                export_run(model, export, tokenizer=task.tokenizer, init_from=cfg.init_from)
            log.log("best", step, val_loss=best)
            log.text("best", step, f"step {step}: lowest val_loss so far ({best:.4f}), exported to {export}")
        for i, text in enumerate(task.samples(model, jax.random.fold_in(sample_key, step))):
            log.log("sample", step, text=text)
            log.text(f"sample/{i}", step, f"  sample {i}: {text!r}")

    def flush_metrics() -> None:
        nonlocal window_start
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, host):
            if not math.isfinite(float(m["loss"])):
                raise TrainingDiverged(f"loss is {float(m['loss'])} at step {s}; lower the learning rate or check data")
        s, m = pending[-1][0], host[-1]
        tps = tokens_per_step * len(pending) / max(time.time() - window_start, 1e-9)
        extra = {k: float(v) for k, v in m.items() if k not in ("loss", "tokens")}
        log.log("train", s, loss=float(m["loss"]), tokens_per_s=tps, **extra)
        log.bar.set_postfix(loss=f"{float(m['loss']):.3f}", tok_s=f"{tps:,.0f}")
        pending.clear()
        window_start = time.time()

    try:
        with _StopFlag() as stop:
            while step < t.max_steps:
                local = task.batch(step, process_index=jax.process_index(), process_count=jax.process_count())
                batch = place_batch(local, mesh)
                step_key = jax.random.fold_in(train_key, step)
                model, opt_state, metrics = step_fn(model, opt_state, batch, step_key)
                step += 1
                pending.append((step, metrics))
                log.bar.update(1)
                timed_out = t.max_minutes is not None and time.time() - t0 > 60 * t.max_minutes
                paused = stop_after_step is not None and step >= stop_after_step
                if step % t.log_every == 0 or step == t.max_steps or stop.signal or timed_out or paused:
                    flush_metrics()
                if step % t.checkpoint_every == 0 or stop.signal or timed_out or paused:
                    ckpt.save(step, model, opt_state, train_key, {"data_step": step})
                if stop.signal is not None or paused:
                    why = f"signal {stop.signal}" if stop.signal is not None else "stop_after_step"
                    log.text("stop", step, f"{why}: saved checkpoint at step {step}, exiting")
                    return out / "checkpoints"
                if step % t.eval_every == 0 and step != t.max_steps and not timed_out:
                    evaluate_and_sample(step)
                if timed_out:
                    log.text("time", step, f"time budget of {t.max_minutes} min reached at step {step}")
                    break
        flush_metrics()
        if step not in ckpt.all_steps():
            ckpt.save(step, model, opt_state, train_key, {"data_step": step})
        evaluate_and_sample(step)
        if lead:
            if not (t.export_best and math.isfinite(best)):  # no finite val_loss: the last step's weights
                export_run(model, export, tokenizer=task.tokenizer, init_from=cfg.init_from)
            try:
                plot_run(out)
            except MissingExtraError as e:  # the curve is optional; the run is not
                log.text("plot", step, f"loss.png not drawn: {e}")
        return export
    finally:
        log.close()
        ckpt.close()

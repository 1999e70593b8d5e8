"""The training loop: data -> compiled step on a mesh -> evaluation, samples, logs, checkpoints -> export.

One compiled step per run (no retracing), no host sync inside the hot loop except every
``log_every`` steps, where the metrics of all steps since the last pull are read at once (so a
NaN is reported with the exact step that produced it). The data order is a function of
``(seed, step)`` and each step's dropout key is ``fold_in(key, step)``, so ``--resume`` continues
bit for bit. SIGINT/SIGTERM finish the current step, save a checkpoint and exit cleanly.
"""

import json
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.checkpoints import save_pretrained
from eqxllm.data import batch_at
from eqxllm.errors import CheckpointError, ConfigError, EqxllmError
from eqxllm.models.gpt2 import GPT2
from eqxllm.train.checkpoint import TrainCheckpointer
from eqxllm.train.config import TrainConfig
from eqxllm.train.distributed import initialize_distributed
from eqxllm.train.evaluate import evaluate_tokens
from eqxllm.train.loss import next_token_loss
from eqxllm.train.metrics import RunLogger
from eqxllm.train.optim import init_opt_state, make_optimizer
from eqxllm.train.plot import plot_run
from eqxllm.train.prepare import PreparedData, prepare_data
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


class TrainingDiverged(EqxllmError, FloatingPointError):
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


def _check_out_dir(cfg: TrainConfig, out: Path) -> None:
    has_ckpt = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    if has_ckpt and not cfg.resume:
        raise ConfigError(
            f"{out} already holds a training run; pass --resume to continue it or choose another --out"
        )
    if cfg.resume and not has_ckpt:
        raise CheckpointError(f"--resume: {out / 'checkpoints'} holds no checkpoint to resume from")
    if cfg.resume and (out / "run_config.json").is_file():
        old = json.loads((out / "run_config.json").read_text())
        for part in ("model", "data"):
            if old.get(part) != json.loads(cfg.to_json())[part]:
                raise ConfigError(
                    f"--resume: the {part} config differs from the run in {out}; resume with the same one"
                )


def _samples(model, data: PreparedData, cfg: TrainConfig, key) -> list[str]:
    from eqxllm.generation import generate

    t = cfg.train
    prompt = np.asarray(data.tokenizer.encode(t.sample_prompt).ids, np.int32)
    room = model.config.max_positions - len(prompt)
    if t.num_samples < 1 or room < 1:
        return []
    prompts = np.repeat(prompt[None], t.num_samples, axis=0)
    new = generate(
        model,
        jnp.asarray(prompts),
        max_new_tokens=min(t.sample_tokens, room),
        temperature=0.8,
        top_k=50,
        key=key,
        eos_token_id=data.eot,
    )
    return [
        t.sample_prompt + data.tokenizer.decode([i for i in row.tolist() if i != data.eot])
        for row in np.asarray(new)
    ]


def train(cfg: TrainConfig, *, progress: bool = True, stop_after_step: int | None = None) -> Path:
    """Run a whole training job; returns the exported model directory ``OUT/model``.

    ``stop_after_step`` pauses the run there (checkpoint saved, nothing exported), as a preemption
    would; ``cfg.replace(resume=True)`` then continues it exactly.
    """
    initialize_distributed()
    out = Path(cfg.out)
    _check_out_dir(cfg, out)
    lead = jax.process_index() == 0
    t = cfg.train
    data = prepare_data(cfg.data, out, seed=t.seed, progress=progress and lead)
    model_cfg = cfg.model.replace(
        vocab_size=data.tokenizer.get_vocab_size(), bos_token_id=data.eot, eos_token_id=data.eot
    )
    if lead and not cfg.resume:
        (out / "run_config.json").write_text(cfg.to_json())

    mesh = make_mesh(f"data={jax.device_count()}" if cfg.mesh == "auto" else cfg.mesh)
    check_batch_size(t.batch_size, mesh)
    key = jax.random.key(t.seed)
    init_key, train_key, sample_key = jax.random.split(key, 3)
    model = GPT2(model_cfg, key=init_key)
    optimizer = make_optimizer(cfg.optim, model)
    model_sh = model_shardings(model, mesh)
    opt_sh = opt_state_shardings(optimizer, model, mesh)
    model = place(model, model_sh)
    opt_state = place(init_opt_state(optimizer, model), opt_sh)
    from eqxllm.train.step import make_train_step

    step_fn = make_train_step(
        next_token_loss,
        optimizer,
        accum_steps=t.accum_steps,
        compute_dtype=resolve_dtype(t.compute_dtype),
        model_sharding=model_sh,
        opt_state_sharding=opt_sh,
        batch_sharding=batch_sharding(mesh),
        max_traces=1,
    )
    uses_dropout = max(model_cfg.resid_pdrop, model_cfg.embd_pdrop, model_cfg.attn_pdrop) > 0
    ckpt = TrainCheckpointer(out / "checkpoints", keep=cfg.train.keep_checkpoints)
    start = 0
    if cfg.resume:
        start = ckpt.latest_step()  # type: ignore[assignment]
        model, opt_state, train_key, _ = ckpt.restore(start, model, opt_state, (model_sh, opt_sh))

    log = RunLogger(out, enabled=lead, progress=progress, total_steps=t.max_steps, initial_step=start)
    tokens_per_step = t.batch_size * t.seq_len
    pending: list[tuple[int, dict]] = []
    t0, window_start, step = time.time(), time.time(), start

    def evaluate_and_sample(step: int) -> None:
        res = evaluate_tokens(
            model,
            data.validation,
            num_bytes=data.validation_bytes,
            seq_len=t.seq_len,
            batch_size=t.batch_size,
            max_batches=t.eval_batches or None,
        )
        log.log(
            "eval",
            step,
            val_loss=res.loss,
            val_perplexity=res.perplexity,
            val_bits_per_byte=res.bits_per_byte,
        )
        log.text(
            "eval",
            step,
            f"step {step}: val loss {res.loss:.4f}  ppl {res.perplexity:.2f}  bpb {res.bits_per_byte:.4f}",
        )
        for i, text in enumerate(_samples(model, data, cfg, jax.random.fold_in(sample_key, step))):
            log.log("sample", step, text=text)
            log.text(f"sample/{i}", step, f"  sample {i}: {text!r}")

    def flush_metrics() -> None:
        nonlocal window_start
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, host):
            if not math.isfinite(float(m["loss"])):
                raise TrainingDiverged(
                    f"loss is {float(m['loss'])} at step {s}; lower the learning rate or check data"
                )
        s, m = pending[-1][0], host[-1]
        elapsed = time.time() - window_start
        tps = tokens_per_step * len(pending) / max(elapsed, 1e-9)
        log.log(
            "train",
            s,
            loss=float(m["loss"]),
            grad_norm=float(m["grad_norm"]),
            learning_rate=float(m.get("learning_rate", float("nan"))),
            tokens_per_s=tps,
        )
        log.bar.set_postfix(loss=f"{float(m['loss']):.3f}", tok_s=f"{tps:,.0f}")
        pending.clear()
        window_start = time.time()

    try:
        with _StopFlag() as stop:
            while step < t.max_steps:
                local = batch_at(
                    data.train,
                    step,
                    batch_size=t.batch_size,
                    seq_len=t.seq_len,
                    seed=t.seed,
                    process_index=jax.process_index(),
                    process_count=jax.process_count(),
                )
                batch = place_batch(jnp.asarray(local), mesh)
                step_key = jax.random.fold_in(train_key, step) if uses_dropout else None
                model, opt_state, metrics = step_fn(model, opt_state, batch, step_key)
                step += 1
                pending.append((step, metrics))
                log.bar.update(1)
                timed_out = t.max_minutes is not None and time.time() - t0 > 60 * t.max_minutes
                if step % t.log_every == 0 or step == t.max_steps or stop.signal or timed_out:
                    flush_metrics()
                paused = stop_after_step is not None and step >= stop_after_step
                if step % t.checkpoint_every == 0 or stop.signal or timed_out or paused:
                    ckpt.save(step, model, opt_state, train_key, {"data_step": step})
                if stop.signal is not None or paused:
                    flush_metrics()
                    why = f"signal {stop.signal}" if stop.signal is not None else "stop_after_step"
                    log.text("stop", step, f"{why}: saved checkpoint at step {step}, exiting")
                    return out / "checkpoints"
                if step % t.eval_every == 0 and step != t.max_steps:
                    evaluate_and_sample(step)
                if timed_out:
                    log.text("time", step, f"time budget of {t.max_minutes} min reached at step {step}")
                    break
        flush_metrics()
        if step not in ckpt.all_steps():
            ckpt.save(step, model, opt_state, train_key, {"data_step": step})
        evaluate_and_sample(step)
        export = out / "model"
        if lead:
            save_pretrained(model, export, tokenizer=data.tokenizer)
            plot_run(out)
        return export
    finally:
        log.close()
        ckpt.close()

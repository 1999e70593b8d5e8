"""Full fine-tuning against LoRA (rank 8 on the attention projections) for the GPT-2 124M shape.

For each mode, in a fresh process (so that the peak resident memory is that mode's alone): the
trainer's compiled step (:func:`eqxllm.train.make_train_step`, AdamW, float32, random weights) at a
small batch; reports the step time (best of ``--steps`` after a compile), XLA's own account of the
compiled step's memory (arguments + outputs + temporaries - aliased, ``memory_analysis()``), the
process's peak resident memory (``ru_maxrss``), the trainable parameter count, the optimizer
state's size, and the size of a training checkpoint as ``eqxllm train`` writes it (a LoRA run's
leaves out the frozen base) with the time to save it. Prints one JSON line per mode, then the LoRA/full ratios, with the 1-minute load
average (``load1``): on a shared machine step times move with the load.

    python benchmarks/finetune.py [--batch 2] [--seq 128] [--steps 3] [--rank 8] [--targets attn]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def run_mode(mode: str, args) -> dict:
    from eqxllm.lora import apply_lora, trainable_params
    from eqxllm.models import GPT2, GPT2Config
    from eqxllm.train import OptimConfig
    from eqxllm.train.loss import next_token_loss
    from eqxllm.train.optim import init_opt_state, make_optimizer
    from eqxllm.train.step import make_train_step

    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2(cfg, key=jax.random.key(0))
    if mode == "lora":
        model = apply_lora(model, rank=args.rank, alpha=2.0 * args.rank, targets=args.targets, key=jax.random.key(1))
    optimizer = make_optimizer(OptimConfig(warmup_steps=0, total_steps=100), model)
    opt_state = init_opt_state(optimizer, model)
    step = make_train_step(next_token_loss, optimizer)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seq + 1), np.int32))
    mem = step.lower(model, opt_state, batch).compile().compiled.memory_analysis()
    xla_bytes = None
    if mem is not None:
        xla_bytes = (
            mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
        )
    trainable = sum(x.size for x in jax.tree.leaves(trainable_params(model)))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(eqx.filter(opt_state, eqx.is_array)))
    t0 = time.perf_counter()
    model, opt_state, m = step(model, opt_state, batch)
    jax.block_until_ready(m["loss"])
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        model, opt_state, m = step(model, opt_state, batch)
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the checkpoint's buffers
    ckpt_bytes, ckpt_s = _checkpoint(model, opt_state)
    return {
        "mode": mode,
        "batch": args.batch,
        "seq": args.seq,
        "step_s": min(times),
        "first_step_s": first,
        "trainable_params": int(trainable),
        "opt_state_bytes": int(state_bytes),
        "xla_step_bytes": xla_bytes,
        "peak_rss_bytes": peak_rss,
        "checkpoint_bytes": ckpt_bytes,
        "checkpoint_save_s": ckpt_s,
        "device": jax.devices()[0].device_kind,
        "load1": os.getloadavg()[0],
    }


def _checkpoint(model, opt_state) -> tuple[int, float]:
    """The bytes of one training checkpoint of ``(model, opt_state)`` as the trainer writes it, and the
    seconds its save took (the base's fingerprint, computed once per run, not included)."""
    from eqxllm.lora import has_lora, lora_filter
    from eqxllm.train.checkpoint import RebuiltBase, TrainCheckpointer

    rebuilt = RebuiltBase.of(model, lora_filter(model), "the benchmark's base") if has_lora(model) else None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = TrainCheckpointer(Path(tmp), rebuilt=rebuilt)
        t0 = time.perf_counter()
        ckpt.save(1, model, opt_state, jax.random.key(0), {})
        seconds = time.perf_counter() - t0
        ckpt.close()
        return sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="attn")
    p.add_argument("--mode", choices=["full", "lora"], default=None, help="run one mode in this process")
    args = p.parse_args()
    if args.mode is not None:
        print(json.dumps(run_mode(args.mode, args)))
        return
    rows = {}
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--mode", mode] + sys.argv[1:]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(out, flush=True)
        rows[mode] = json.loads(out)
    full, lora = rows["full"], rows["lora"]
    ratios = {
        "opt_state_lora_over_full": lora["opt_state_bytes"] / full["opt_state_bytes"],
        "peak_rss_lora_over_full": lora["peak_rss_bytes"] / full["peak_rss_bytes"],
        "step_time_lora_over_full": lora["step_s"] / full["step_s"],
        "checkpoint_lora_over_full": lora["checkpoint_bytes"] / full["checkpoint_bytes"],
    }
    if full["xla_step_bytes"] and lora["xla_step_bytes"]:
        ratios["xla_step_bytes_lora_over_full"] = lora["xla_step_bytes"] / full["xla_step_bytes"]
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()

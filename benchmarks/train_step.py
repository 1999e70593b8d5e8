"""Training-step throughput: tokens/s, step time, compile time, peak memory and MFU, as one JSON line.

    python benchmarks/train_step.py --preset gpt2-tinystories [--batch 32 --seq 128 --steps 20]
    python benchmarks/train_step.py --preset gpt2-tinystories-gpu --peak-tflops 989   # H100 bf16 dense

MFU = model FLOPs per step / (step time x device peak FLOP/s), with model FLOPs per token
6 N + 12 L T d (Kaplan et al., 2020; PaLM appendix B: the attention term), N = non-embedding params.
Random tokens: this measures the step, not the data pipeline.
"""

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.models.gpt2 import GPT2
from eqxllm.train import init_opt_state, make_optimizer, make_train_step, next_token_loss, resolve_dtype
from eqxllm.train.config import train_preset


def flops_per_token(model: GPT2, seq: int) -> float:
    cfg = model.config
    # arrays, or the ShapeDtypeStructs of a model built under eqx.filter_eval_shape
    params = sum(x.size for x in jax.tree.leaves(model) if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)))
    embed = model.wte.weight.size + model.wpe.weight.size
    non_embedding = params - embed
    # the tied head is a real matmul: count it as 2 * d * vocab forward (x3 for fwd+bwd)
    head = cfg.n_embd * cfg.padded_vocab_size
    return 6 * (non_embedding + head) + 12 * cfg.n_layer * seq * cfg.n_embd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-tinystories")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dtype", default=None, help="compute dtype (default: the preset's)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (per device)")
    args = ap.parse_args()

    cfg = train_preset(args.preset)
    batch = args.batch or cfg.train.batch_size
    seq = args.seq or cfg.train.seq_len
    model = GPT2(cfg.model, key=jax.random.key(0))
    opt = make_optimizer(cfg.resolved_optim(), model)
    opt_state = init_opt_state(opt, model)
    step = make_train_step(next_token_loss, opt, compute_dtype=resolve_dtype(args.dtype or cfg.train.compute_dtype))
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.integers(0, cfg.model.vocab_size, (batch, seq + 1)), jnp.int32)

    t0 = time.perf_counter()
    model, opt_state, m = step(model, opt_state, data)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        model, opt_state, m = step(model, opt_state, data)
    jax.block_until_ready(m["loss"])
    step_s = (time.perf_counter() - t0) / args.steps
    tokens = batch * seq
    fpt = flops_per_token(model, seq)
    stats = jax.devices()[0].memory_stats() or {}
    peak_mem = stats.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "preset": args.preset,
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "batch": batch,
        "seq": seq,
        "tokens_per_s": round(tokens / step_s, 1),
        "step_ms": round(1000 * step_s, 2),
        "compile_s": round(compile_s, 2),
        "peak_memory_mb": round(peak_mem / 2**20, 1),
        "model_tflops_per_s": round(fpt * tokens / step_s / 1e12, 4),
        "mfu": None
        if args.peak_tflops is None
        else round(fpt * tokens / step_s / (args.peak_tflops * 1e12 * jax.device_count()), 4),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

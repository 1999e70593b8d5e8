"""Compile time of the training step against depth: the layers are one ``jax.lax.scan`` over stacked
weights, so tracing and compiling should not grow with the number of layers.

    python benchmarks/compile.py [--layers 6 12 24] [--preset gpt2-tinystories]

For each depth, in a fresh process (no compilation cache): the preset's model with ``n_layer`` (or
``num_hidden_layers``) set, and its AdamW train step traced and compiled ahead of time on the
preset's batch shape (``lower`` = tracing to StableHLO, ``compile`` = XLA). Prints one JSON line per
depth, then a summary with each depth's total over the smallest depth's.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def worker(preset: str, layers: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from eqxllm.checkpoints.registry import family_for_config
    from eqxllm.train import init_opt_state, make_optimizer, make_train_step, next_token_loss
    from eqxllm.train.config import train_preset

    cfg = train_preset(preset)
    depth_field = "n_layer" if hasattr(cfg.model, "n_layer") else "num_hidden_layers"
    model_cfg = cfg.model.replace(**{depth_field: layers})
    model = family_for_config(model_cfg).model_cls(model_cfg, key=jax.random.key(0))
    opt = make_optimizer(cfg.resolved_optim(), model)
    opt_state = init_opt_state(opt, model)
    step = make_train_step(next_token_loss, opt)
    batch = jnp.zeros((cfg.train.batch_size, cfg.train.seq_len + 1), jnp.int32)
    t0 = time.perf_counter()
    lowered = eqx.filter_jit(step).lower(model, opt_state, batch)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"preset": preset, "layers": layers, "lower_s": round(t1 - t0, 2), "compile_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 12, 24])
    ap.add_argument("--preset", default="gpt2-tinystories")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.preset, args.worker)))
        return
    totals = {}
    for layers in args.layers:
        cmd = [sys.executable, __file__, "--preset", args.preset, "--worker", str(layers)]
        line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(line, flush=True)
        totals[layers] = json.loads(line)["total_s"]
    base = min(totals)
    ratios = {f"{n}/{base}": round(totals[n] / totals[base], 2) for n in totals if n != base}
    print(json.dumps({"preset": args.preset, **ratios, "cores": os.cpu_count(), "load1": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()

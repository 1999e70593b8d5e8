"""Mixture-of-experts layer step time (forward + backward, jitted), grouped against dense dispatch.

    python benchmarks/moe.py [--batch 4 --seq 128 --dim 256 --hidden 512 --top-k 2 --experts 8 16 32 --repeats 5]

One JSON line per (experts, dispatch, batching): the best of ``--repeats`` timed steps after a compiling
one. ``vmap`` applies the layer per example under ``jax.vmap``, as a model vmapped over its batch does
(grouped dispatch folds the batch into one dispatch); ``flat`` passes all ``batch x seq`` tokens in
one call (the layer accepts leading axes). Dense dispatch grows with the number of experts; grouped
dispatch should grow only by the cost of reading (and, backward, writing) every expert's weights once.
"""

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
from host import processor  # benchmarks/host.py: run as a script, this folder is on the path

from eqxllm.nn import MoE


def step_ms(moe: MoE, x: jax.Array, batching: str, repeats: int) -> float:
    def loss(moe, x):
        y, logits = jax.vmap(moe)(x) if batching == "vmap" else moe(x)
        return jnp.sum(y.astype(jnp.float32) ** 2) + 0.01 * jnp.sum(logits**2)

    step = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    jax.block_until_ready(step(moe, x))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(moe, x))
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--experts", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--batching", nargs="+", default=["vmap", "flat"], choices=["vmap", "flat"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    x = jax.random.normal(jax.random.key(0), (args.batch, args.seq, args.dim), jnp.float32)
    for experts in args.experts:
        for dispatch in ("grouped", "dense"):
            moe = MoE(
                args.dim, args.hidden, num_experts=experts, top_k=args.top_k, dispatch=dispatch, key=jax.random.key(1)
            )
            for batching in args.batching:
                record = {
                    "experts": experts,
                    "top_k": args.top_k,
                    "dispatch": dispatch,
                    "batching": batching,
                    "tokens": args.batch * args.seq,
                    "dim": args.dim,
                    "hidden": args.hidden,
                    "step_ms": round(step_ms(moe, x, batching, args.repeats), 2),
                    "device": jax.devices()[0].device_kind,
                    "processor": processor(),
                }
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

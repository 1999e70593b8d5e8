"""What keeping only the window of sliding layers (rings, :mod:`eqxllm.nn.ring_cache`) saves in a KV
cache: its size for published shapes, and the time of a decoding step against a cache that keeps
every slot of every layer, side by side in one process.

    python benchmarks/sliding_cache.py [--lengths 1024 8192 32768] [--steps 64]

Sizes are per sequence in bfloat16, from abstract models (nothing is allocated). Step times are a
small Gemma 3 shaped model (the preset ``gemma3-tiny`` with 12 layers, five sliding to one global,
window 512) and a small Mistral (``mistral-tiny``, 12 layers, window 512), float32, one sequence:
``--steps`` single-token steps in one compiled loop, best of three, after a warm-up.
"""

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from eqxllm.models import Gemma, GemmaConfig, Llama
from eqxllm.models.gemma_config import GEMMA_PRESETS
from eqxllm.models.llama_presets import llama_preset
from eqxllm.nn.decoding import CausalLM


def _bytes(cache) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))


def sizes(length: int) -> list[dict]:
    rows = []
    shapes = {
        "gemma-3-1b": (Gemma, GEMMA_PRESETS["gemma-3-1b"]()),
        "gemma-2-2b": (Gemma, GEMMA_PRESETS["gemma-2-2b"]()),
        "mistral-7b": (Llama, llama_preset("mistral-7b")),
    }
    for name, (cls, cfg) in shapes.items():
        n = min(length, cfg.max_position_embeddings)
        model = eqx.filter_eval_shape(cls, cfg, key=jax.random.key(0))
        ring = jax.eval_shape(lambda m=model, n=n: m.init_cache(n, jnp.bfloat16))
        plain = jax.eval_shape(lambda m=model, n=n: CausalLM.init_cache(m, n, jnp.bfloat16))
        rows.append({"model": name, "slots": n, "window": cfg.sliding_window, "ring_MiB": round(_bytes(ring) / 2**20, 1),
                     "every_slot_MiB": round(_bytes(plain) / 2**20, 1)})  # fmt: skip
    return rows


def _step_ms(model, cache, steps: int) -> float:
    @eqx.filter_jit
    def run(model, cache):
        def body(i, c):
            return model.decode(jnp.asarray([i % 100], jnp.int32), c)[1]

        return jax.lax.fori_loop(0, steps, body, cache)

    jax.block_until_ready(run(model, cache))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(run(model, cache))
        best = min(best, time.perf_counter() - t)
    return best / steps * 1e3


def step_times(lengths: list[int], steps: int) -> list[dict]:
    models = {
        "gemma3-shaped": Gemma(
            GemmaConfig.tiny(3).replace(num_hidden_layers=12, sliding_window_pattern=6, sliding_window=512,
                                        max_position_embeddings=max(lengths)),
            key=jax.random.key(0),
        ),
        "mistral-shaped": Llama(
            llama_preset("mistral-tiny").replace(num_hidden_layers=12, sliding_window=512,
                                                 max_position_embeddings=max(lengths)),
            key=jax.random.key(0),
        ),
    }  # fmt: skip
    rows = []
    for name, model in models.items():
        for n in lengths:
            ring = _step_ms(model, model.init_cache(n), steps)
            plain = _step_ms(model, CausalLM.init_cache(model, n), steps)
            rows.append({"model": name, "slots": n, "ring_ms": round(ring, 3), "every_slot_ms": round(plain, 3),
                         "speedup": round(plain / ring, 2)})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--steps", type=int, default=64)
    args = ap.parse_args()
    for row in sizes(max(args.lengths)):
        print(json.dumps(row), flush=True)
    for row in step_times(args.lengths, args.steps):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

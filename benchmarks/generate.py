"""Generation throughput on CPU: eqxllm beside ``transformers`` (PyTorch), in the same run.

GPT-2 124M shape with random weights, greedy decoding, 32- and 512-token prompts and 128 new tokens (no
early stop: EOS is disabled in both), batch 1 and batch 8. ``tokens_per_s`` counts new tokens over the
whole call (prefill included); eqxllm's compile time is measured on the first call and reported
apart (``compile_s``); both report the best of ``--repeats`` timed calls after a warm-up. Prints one
JSON line per (implementation, batch, prompt), with the processor and the machine's 1-minute load average
(``load1``); eqxllm's carries ``speedup`` = its tokens/s over transformers'. A table of the speedups ends
the output.

    python benchmarks/generate.py [--batch 1 8] [--prompt 32 512] [--new 128] [--repeats 3]
"""

import argparse
import itertools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from host import processor  # benchmarks/host.py: run as a script, this folder is on the path

import eqxllm
from eqxllm.models import GPT2, GPT2Config


def time_eqxllm(model, ids: np.ndarray, new: int, repeats: int) -> dict:
    prompt = jnp.asarray(ids, jnp.int32)
    t0 = time.perf_counter()
    out = eqxllm.generate(model, prompt, max_new_tokens=new, eos_token_id=())
    out.block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        eqxllm.generate(model, prompt, max_new_tokens=new, eos_token_id=()).block_until_ready()
        times.append(time.perf_counter() - t0)
    assert out.shape == (ids.shape[0], new), out.shape
    best = min(times)
    return {"seconds": best, "compile_s": max(first - best, 0.0)}


def time_transformers(model, ids: np.ndarray, new: int, repeats: int) -> dict:
    import torch

    input_ids = torch.tensor(ids, dtype=torch.long)
    kwargs = dict(attention_mask=torch.ones_like(input_ids), do_sample=False, max_new_tokens=new, pad_token_id=0)
    with torch.inference_mode():
        out = model.generate(input_ids, **kwargs)  # warm-up
        assert out.shape == (ids.shape[0], ids.shape[1] + new), tuple(out.shape)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.generate(input_ids, **kwargs)
            times.append(time.perf_counter() - t0)
    return {"seconds": min(times)}


def _load() -> float:
    """The 1-minute load average: on a shared machine, other processes move both timings (and their ratio)."""
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt", type=int, nargs="+", default=[32, 512], help="prompt lengths in tokens")
    parser.add_argument("--new", type=int, default=128, help="new tokens per sequence")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()

    config = GPT2Config.gpt2_small()
    model = GPT2(config, key=jax.random.key(0))
    hf = None
    if not args.skip_transformers:
        import torch
        import transformers

        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
        hf.generation_config.eos_token_id = None  # never stop early, like eos_token_id=() here

    rng = np.random.default_rng(0)
    common = {"model": "gpt2-124M-random", "new_tokens": args.new, "device": "cpu", "processor": processor(),
              "cores": os.cpu_count()}  # fmt: skip
    table = []
    for prompt, batch in itertools.product(args.prompt, args.batch):
        ids = rng.integers(0, config.vocab_size, size=(batch, prompt))
        ref = None
        if hf is not None:
            ref = time_transformers(hf, ids, args.new, args.repeats)
            tps = batch * args.new / ref["seconds"]
            line = {"impl": "transformers", "batch": batch, "prompt": prompt, **common, "seconds": round(ref["seconds"], 3),
                    "tokens_per_s": round(tps, 1), "threads": torch.get_num_threads(), "load1": _load()}  # fmt: skip
            print(json.dumps(line), flush=True)
        ours = time_eqxllm(model, ids, args.new, args.repeats)
        tps = batch * args.new / ours["seconds"]
        line = {"impl": "eqxllm", "batch": batch, "prompt": prompt, **common, "seconds": round(ours["seconds"], 3),
                "tokens_per_s": round(tps, 1), "compile_s": round(ours["compile_s"], 2), "load1": _load()}  # fmt: skip
        if ref is not None:
            line["speedup"] = round(ref["seconds"] / ours["seconds"], 2)
            table.append((batch, prompt, batch * args.new / ref["seconds"], tps, line["speedup"], line["load1"]))
        print(json.dumps(line), flush=True)
    if table:
        print(
            f"\n{common['processor']}, {common['cores']} cores; {args.new} new tokens, greedy; best of {args.repeats}"
        )
        print(f"{'batch':>5} {'prompt':>6} {'transformers tok/s':>18} {'eqxllm tok/s':>12} {'speedup':>7} {'load1':>5}")
        for batch, prompt, theirs, ours_tps, speedup, load in table:
            print(f"{batch:>5} {prompt:>6} {theirs:>18.1f} {ours_tps:>12.1f} {speedup:>6.2f}x {load:>5.2f}")


if __name__ == "__main__":
    main()

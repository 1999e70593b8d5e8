"""Training-step throughput beside PyTorch, in one run: eqxllm, ``transformers`` eager and
``transformers`` under ``torch.compile``, each in a fresh process, on the same shapes, one after another.

    python benchmarks/peer_step.py                       # every shape, every implementation
    python benchmarks/peer_step.py --shapes gpt2-tinystories --impls eqxllm eager

Shapes: ``gpt2-tinystories`` (the README main job's model: 4 layers, width 256, vocabulary 4096,
batch 32 x 128), ``gpt2-124m`` (GPT-2 small, batch 4 x 256) and ``llama-tinystories`` (the llama
preset: GQA, SwiGLU, untied head, batch 32 x 128). Every implementation takes an AdamW step with the
preset's hyper-parameters, global-norm clipping and weight decay on matrices, float32, on random
tokens (the step, not the data pipeline), with all of this machine's cores. After warm-up (which
holds the compilations) it times ``--rounds`` rounds of ``--steps`` steps and keeps the best round.

Prints one JSON line per (shape, implementation) as it goes, then one summary line per shape with the
ratios ``eqxllm / eager`` and ``eqxllm / compile`` (tokens/s over tokens/s; above 1 means eqxllm is
faster), the processor and the load average: a ratio from one run holds on its machine only.

The eqxllm process calls ``keep_freed_host_memory()`` before its first step, as ``eqxllm.train.loop.train``
does; ``--torch-keeps-memory`` gives the PyTorch processes the same glibc settings.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from host import processor  # benchmarks/host.py: run as a script, this folder is on the path

SHAPES = {
    "gpt2-tinystories": dict(preset="gpt2-tinystories", batch=32, seq=128, steps=8),
    "gpt2-124m": dict(preset="gpt2-tinystories", model="gpt2", batch=4, seq=256, steps=3),
    "llama-tinystories": dict(preset="llama-tinystories", batch=32, seq=128, steps=8),
}
IMPLS = ("eqxllm", "eager", "compile")


def _config(shape: dict):
    """The eqxllm run config of a shape (the preset's optimizer; GPT-2 small's model for ``gpt2-124m``)."""
    from eqxllm.models.gpt2 import GPT2Config
    from eqxllm.train.config import train_preset

    cfg = train_preset(shape["preset"])
    if shape.get("model") == "gpt2":
        cfg = cfg.replace(model=GPT2Config.gpt2_small())
    return cfg


def _time_steps(step, steps: int, rounds: int, sync) -> dict:
    """Best seconds per step over ``rounds`` rounds of ``steps`` calls of ``step()``, with the minor page
    faults and the system CPU time per step over all rounds (the kernel's share: mapping and zeroing
    freshly allocated memory)."""
    best = float("inf")
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        best = min(best, (time.perf_counter() - t0) / steps)
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = rounds * steps
    return {
        "seconds_per_step": best,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) // n,
        "system_s_per_step": round((after.ru_stime - before.ru_stime) / n, 3),
    }


def run_eqxllm(shape: dict, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from eqxllm.checkpoints.registry import family_for_config
    from eqxllm.train import init_opt_state, keep_freed_host_memory, make_optimizer, make_train_step, next_token_loss

    keep_freed_host_memory()  # as eqxllm.train.loop.train does before its first step
    cfg = _config(shape)
    model = family_for_config(cfg.model).model_cls(cfg.model, key=jax.random.key(0))
    opt = make_optimizer(cfg.resolved_optim(), model)
    state = {"model": model, "opt": init_opt_state(opt, model)}
    step_fn = make_train_step(next_token_loss, opt)
    rng = np.random.default_rng(0)
    vocab = cfg.model.vocab_size
    batch = jnp.asarray(rng.integers(0, vocab, (shape["batch"], shape["seq"] + 1)), jnp.int32)

    def step():
        state["model"], state["opt"], metrics = step_fn(state["model"], state["opt"], batch)
        return metrics["loss"]

    t0 = time.perf_counter()
    jax.block_until_ready(step())
    warmup_s = time.perf_counter() - t0
    jax.block_until_ready(step())
    timing = _time_steps(step, shape["steps"], rounds, jax.block_until_ready)
    return {**timing, "warmup_s": round(warmup_s, 2), "jax": jax.__version__}


def run_torch(shape: dict, rounds: int, compiled: bool) -> dict:
    import numpy as np
    import torch
    import transformers

    from eqxllm.checkpoints.registry import family_for_config

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    cfg = _config(shape)
    hf_dict = family_for_config(cfg.model).config_to_hf(cfg.model)
    hf_cfg = transformers.AutoConfig.for_model(**hf_dict)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
        if hasattr(hf_cfg, name):
            setattr(hf_cfg, name, 0.0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa").train()
    rng = np.random.default_rng(0)
    tokens = torch.from_numpy(rng.integers(0, hf_cfg.vocab_size, (shape["batch"], shape["seq"] + 1))).long()
    step = torch_train_step(model, cfg.resolved_optim(), tokens, compiled=compiled)
    t0 = time.perf_counter()
    step()
    warmup_s = time.perf_counter() - t0
    step()
    timing = _time_steps(step, shape["steps"], rounds, lambda loss: float(loss))
    return {**timing, "warmup_s": round(warmup_s, 2), "torch": torch.__version__}


def torch_train_step(model, o, tokens, *, compiled: bool, fused: bool = False, autocast_dtype=None):
    """``step() -> loss``: one AdamW step (``o``'s hyper-parameters, weight decay on matrices only,
    global-norm clipping) of a ``transformers`` causal LM on the next-token loss of ``tokens``
    ``[batch, seq + 1]``; the forward pass under ``torch.compile`` with ``compiled``, and under
    ``torch.autocast(autocast_dtype)`` when one is given (the loss then in float32)."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps, fused=fused)
    forward = torch.compile(model) if compiled else model
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        with torch.autocast(tokens.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = forward(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
        opt.step()
        return loss

    return step


def worker(shape_name: str, impl: str, rounds: int) -> None:
    shape = SHAPES[shape_name]
    result = run_eqxllm(shape, rounds) if impl == "eqxllm" else run_torch(shape, rounds, impl == "compile")
    tokens = shape["batch"] * shape["seq"]
    result["tokens_per_s"] = round(tokens / result["seconds_per_step"], 1)
    result["seconds_per_step"] = round(result["seconds_per_step"], 4)
    print(json.dumps({"shape": shape_name, "impl": impl, "batch": shape["batch"], "seq": shape["seq"], **result}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--torch-keeps-memory",
        action="store_true",
        help="give the PyTorch processes glibc's settings of keep_freed_host_memory too (through MALLOC_* "
        "variables), for a comparison with the same allocator behaviour on both sides",
    )
    ap.add_argument("--worker", nargs=2, metavar=("SHAPE", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.rounds)
        return
    machine = {"processor": processor(), "cores": os.cpu_count()}
    for name in args.shapes:
        speeds: dict[str, float] = {}
        for impl in args.impls:
            cmd = [sys.executable, __file__, "--worker", name, impl, "--rounds", str(args.rounds)]
            env = dict(os.environ)
            if args.torch_keeps_memory and impl != "eqxllm":
                env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**62))  # never, in effect
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(json.dumps({"shape": name, "impl": impl, "error": done.stderr.strip().splitlines()[-1:]}))
                continue
            line = done.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            speeds[impl] = json.loads(line)["tokens_per_s"]
        ratios = {
            f"eqxllm/{peer}": round(speeds["eqxllm"] / speeds[peer], 2)
            for peer in ("eager", "compile")
            if "eqxllm" in speeds and peer in speeds
        }
        summary = {"shape": name, **ratios, **machine, "load1": round(os.getloadavg()[0], 2)}
        if args.torch_keeps_memory:
            summary["torch_keeps_memory"] = True
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

"""One prepared run for a GPU: GPT-2 350M (``gpt2-medium``) training steps at sequence 1024 in bfloat16,
eqxllm with cuDNN attention beside PyTorch ``transformers`` (eager and ``torch.compile``) on the same GPU,
then greedy generation beside ``transformers``. Every training line carries its MFU.

    python benchmarks/gpu.py --out DIR [--budget-s 420]   # on the GPU machine
    python benchmarks/gpu.py --smoke                      # anywhere: a tiny model through every part

Each part runs in a fresh process (JAX and PyTorch never share the GPU) and prints one JSON line. The
lines are appended to ``DIR/gpu.jsonl`` as they come, so a run cut short keeps what it measured. Parts
run in the order of ``--parts``; a part whose estimate no longer fits in what is left of ``--budget-s``
is skipped (its line says so), and a part that overruns its own limit is killed.

Training parts take AdamW steps with the ``gpt2-tinystories-gpu`` preset's hyper-parameters (global-norm
clipping, weight decay on matrices), float32 parameters and optimizer state, bfloat16 compute, random
tokens (the step, not the data pipeline), and report the best of ``rounds`` rounds of ``steps`` steps:

- ``eqxllm-cudnn``: attention through ``jax.nn.dot_product_attention(implementation="cudnn")``. The line
  names the cuDNN attention kernels in the lowered forward and backward pass (``cudnn_attention_kernels``:
  ``__cudnn$fmhaSoftmax`` and its backward for the causal kernel; ``ScaleBias`` in a name would mean a
  dense mask reached cuDNN as a bias), so a fallback to another path would show;
- ``eqxllm-xla``: eqxllm's plain XLA attention, for comparison;
- ``eqxllm-cudnn-remat``: cuDNN attention with ``remat="dots"`` (the GPU preset's rematerialisation);
- ``torch-eager`` and ``torch-compile``: ``GPT2LMHeadModel`` with SDPA attention under
  ``torch.autocast(bfloat16)``, fused AdamW, the same clipping and weight decay.

The eqxllm model pads its vocabulary to a multiple of 128 (50,304), as the GPU preset does; ``transformers``
keeps 50,257. MFU = model FLOPs per token (6 N + 12 L T d, N the non-embedding parameters plus the head,
as in ``benchmarks/train_step.py``, with each side's own vocabulary) x tokens/s / the device's dense
bfloat16 peak (``--peak-tflops``, else a table of device names). ``matmul_tflops`` is a measured
8192^3 bfloat16 product on the same device: the peak that is reachable in practice.

Generation parts: greedy decoding of ``new`` tokens after a ``prompt``-token prompt at each batch size,
random bfloat16 weights, no early stop, best of three calls after a warm-up; eqxllm's compile time is
reported apart. eqxllm uses the model's default attention (``"xla"``), as ``from_pretrained`` gives it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

# benchmarks/host.py and peer_step.py: run as a script, this folder is on the path
from host import processor
from peer_step import _time_steps, torch_train_step


@dataclass(frozen=True)
class Setup:
    """The shapes of one run: the full GPU measurement or the smoke test."""

    width: int
    layers: int
    heads: int
    vocab: int
    batch: int
    seq: int
    steps: int
    rounds: int
    gen_batches: tuple[int, ...]
    prompt: int
    new: int


FULL = Setup(width=1024, layers=24, heads=16, vocab=50257, batch=16, seq=1024, steps=10, rounds=2,
             gen_batches=(1, 8), prompt=128, new=128)  # fmt: skip
SMOKE = Setup(width=64, layers=2, heads=4, vocab=512, batch=2, seq=32, steps=2, rounds=1, gen_batches=(1, 2),
              prompt=8, new=8)  # fmt: skip
# part -> a generous estimate in seconds on an H100 for FULL (process start, compile, timing)
PARTS = {
    "eqxllm-cudnn": 90,
    "torch-eager": 60,
    "torch-compile": 150,
    "eqxllm-xla": 90,
    "generate-eqxllm": 120,
    "generate-torch": 60,
    "eqxllm-cudnn-remat": 90,
}
# dense bfloat16 tensor-core peaks from the vendors' data sheets (SXM parts), in TFLOP/s
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0}


def _gpt2_config(setup: Setup, *, padded: bool, attention: str = "xla", remat: str = "none"):
    from eqxllm.models.gpt2 import GPT2Config

    return GPT2Config(
        vocab_size=setup.vocab, n_positions=max(setup.seq, setup.prompt + setup.new), n_embd=setup.width,
        n_layer=setup.layers, n_head=setup.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        pad_vocab_multiple=128 if padded else 1, attention_impl=attention, remat=remat,
    )  # fmt: skip


def _flops_per_token(config, seq: int) -> float:
    """Training FLOPs per token of a GPT-2 of ``config`` (forward and backward), from its parameter shapes."""
    import equinox as eqx
    import jax
    from train_step import flops_per_token

    from eqxllm.models.gpt2 import GPT2

    return flops_per_token(eqx.filter_eval_shape(GPT2, config, key=jax.random.key(0)), seq)


def _optim():
    from eqxllm.train.presets import train_preset

    return train_preset("gpt2-tinystories-gpu").resolved_optim()


def _matmul_tflops_jax() -> float:
    import jax
    import jax.numpy as jnp

    n = 8192
    a = jnp.ones((n, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(10):
        out = f(a, a)
    out.block_until_ready()
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def train_eqxllm(setup: Setup, attention: str, remat: str) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from eqxllm.models.gpt2 import GPT2
    from eqxllm.train import (
        cast_floating,
        init_opt_state,
        keep_freed_host_memory,
        make_optimizer,
        make_train_step,
        next_token_loss,
    )

    keep_freed_host_memory()  # as train() does (a no-op off the CPU backend)
    gpu = jax.default_backend() == "gpu"
    impl = attention if gpu or attention == "xla" else "jax"  # no cuDNN without a GPU (the smoke test)
    config = _gpt2_config(setup, padded=True, attention=impl, remat=remat)
    model = GPT2(config, key=jax.random.key(0))
    opt = make_optimizer(_optim(), model)
    state = {"model": model, "opt": init_opt_state(opt, model)}
    step_fn = make_train_step(next_token_loss, opt, compute_dtype=jnp.bfloat16)
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.integers(0, setup.vocab, (setup.batch, setup.seq + 1)), jnp.int32)

    def bf16_loss(m, b):
        return next_token_loss(cast_floating(m, jnp.bfloat16), b)[0]

    lowered = eqx.filter_jit(eqx.filter_grad(bf16_loss)).lower(model, batch).as_text()

    def step():
        state["model"], state["opt"], metrics = step_fn(state["model"], state["opt"], batch)
        return metrics["loss"]

    t0 = time.perf_counter()
    loss = float(step())
    warmup_s = time.perf_counter() - t0
    timing = _time_steps(step, setup.steps, setup.rounds, jax.block_until_ready)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        **timing,
        "warmup_s": round(warmup_s, 2),
        "first_loss": round(loss, 3),
        "attention": impl,
        "remat": remat,
        "cudnn_attention_kernels": sorted(set(re.findall(r"__cudnn\$fmha\w*", lowered))),
        "peak_memory_gib": round(stats["peak_bytes_in_use"] / 2**30, 2) if "peak_bytes_in_use" in stats else None,
        "flops_per_token": _flops_per_token(config, setup.seq),
        "matmul_tflops": round(_matmul_tflops_jax(), 1) if gpu else None,
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _hf_model(setup: Setup):
    import torch
    import transformers

    from eqxllm.checkpoints.registry import family_for_config

    torch.manual_seed(0)
    config = _gpt2_config(setup, padded=False)
    hf_config = transformers.AutoConfig.for_model(**family_for_config(config).config_to_hf(config))
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
    return model.to(_torch_device()), config


def train_torch(setup: Setup, compiled: bool) -> dict:
    import numpy as np
    import torch

    device = _torch_device()
    model, config = _hf_model(setup)
    model.train()
    rng = np.random.default_rng(0)
    tokens = torch.from_numpy(rng.integers(0, setup.vocab, (setup.batch, setup.seq + 1))).long().to(device)
    gpu = device.type == "cuda"
    step = torch_train_step(model, _optim(), tokens, compiled=compiled, fused=gpu, autocast_dtype=torch.bfloat16)
    t0 = time.perf_counter()
    loss = float(step())
    warmup_s = time.perf_counter() - t0
    timing = _time_steps(step, setup.steps, setup.rounds, lambda loss: float(loss))
    return {
        **timing,
        "warmup_s": round(warmup_s, 2),
        "first_loss": round(loss, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
        "flops_per_token": _flops_per_token(config, setup.seq),
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "torch": torch.__version__,
    }


def _best_of_three(call) -> float:
    call()  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def generate_eqxllm(setup: Setup) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import eqxllm
    from eqxllm.models.gpt2 import GPT2
    from eqxllm.train import cast_floating

    model = cast_floating(GPT2(_gpt2_config(setup, padded=False), key=jax.random.key(0)), jnp.bfloat16)
    rng = np.random.default_rng(0)
    lines = []
    for batch in setup.gen_batches:
        prompt = jnp.asarray(rng.integers(0, setup.vocab, (batch, setup.prompt)), jnp.int32)

        def call(prompt=prompt):
            out = eqxllm.generate(model, prompt, max_new_tokens=setup.new, eos_token_id=())
            return out.block_until_ready()

        t0 = time.perf_counter()
        call()
        first = time.perf_counter() - t0
        best = _best_of_three(call)
        lines.append({"batch": batch, "seconds": round(best, 4), "tokens_per_s": round(batch * setup.new / best, 1),
                      "compile_s": round(max(first - best, 0.0), 2), "device": jax.devices()[0].device_kind})  # fmt: skip
    return lines


def generate_torch(setup: Setup) -> list[dict]:
    import numpy as np
    import torch

    model, _ = _hf_model(setup)
    model = model.to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None  # never stop early, like eos_token_id=() in eqxllm
    device = _torch_device()
    rng = np.random.default_rng(0)
    lines = []
    for batch in setup.gen_batches:
        ids = torch.from_numpy(rng.integers(0, setup.vocab, (batch, setup.prompt))).long().to(device)
        kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=setup.new, pad_token_id=0)

        def call(ids=ids, kwargs=kwargs):
            with torch.inference_mode():
                out = model.generate(ids, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        best = _best_of_three(call)
        lines.append({"batch": batch, "seconds": round(best, 4), "tokens_per_s": round(batch * setup.new / best, 1),
                      "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"})  # fmt: skip
    return lines


def worker(part: str, setup: Setup) -> None:
    if part.startswith("generate-"):
        lines = generate_eqxllm(setup) if part == "generate-eqxllm" else generate_torch(setup)
        for line in lines:
            print(json.dumps({"part": part, "prompt": setup.prompt, "new": setup.new, **line}))
        return
    if part.startswith("torch-"):
        result = train_torch(setup, compiled=part == "torch-compile")
    else:
        attention = "xla" if part == "eqxllm-xla" else "cudnn"
        result = train_eqxllm(setup, attention, remat="dots" if part.endswith("-remat") else "none")
    tokens_per_s = setup.batch * setup.seq / result["seconds_per_step"]
    result["seconds_per_step"] = round(result["seconds_per_step"], 4)
    result["tokens_per_s"] = round(tokens_per_s, 1)
    result["model_tflops_per_s"] = round(result["flops_per_token"] * tokens_per_s / 1e12, 3)
    print(json.dumps({"part": part, "batch": setup.batch, "seq": setup.seq, **result}))


def _peak_tflops(device: str, given: float | None) -> float | None:
    if given is not None:
        return given
    return next((peak for name, peak in PEAK_TFLOPS.items() if name in device), None)


def _summary(lines: list[dict], peak: float | None) -> list[str]:
    """A markdown table of the training lines (tokens/s, MFU), eqxllm-cudnn's ratios to the two PyTorch
    lines of the same run, and a table of generation with eqxllm's ratio to ``transformers``."""
    train = [x for x in lines if "tokens_per_s" in x and "seq" in x]
    gen = [x for x in lines if x.get("part", "").startswith("generate-") and "tokens_per_s" in x]
    out = [
        "| part | tokens/s | step ms | model TFLOP/s | MFU | peak GiB | cuDNN kernels |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in train:
        device_peak = _peak_tflops(x.get("device", ""), peak)
        mfu = f"{x['model_tflops_per_s'] / device_peak:.1%}" if device_peak else "-"
        out.append(f"| {x['part']} | {x['tokens_per_s']:,.0f} | {1000 * x['seconds_per_step']:.1f} | "
                   f"{x['model_tflops_per_s']} | {mfu} | {x.get('peak_memory_gib')} | "
                   f"{', '.join(x.get('cudnn_attention_kernels') or ['-'])} |")  # fmt: skip
    by_part = {x["part"]: x["tokens_per_s"] for x in train}
    for peer in ("torch-eager", "torch-compile"):
        if "eqxllm-cudnn" in by_part and peer in by_part:
            out.append(f"\neqxllm-cudnn / {peer}: {by_part['eqxllm-cudnn'] / by_part[peer]:.2f}x")
    if gen:
        out += ["", "| batch | eqxllm tok/s | transformers tok/s | ratio |", "|---|---|---|---|"]
        ours = {x["batch"]: x["tokens_per_s"] for x in gen if x["part"] == "generate-eqxllm"}
        theirs = {x["batch"]: x["tokens_per_s"] for x in gen if x["part"] == "generate-torch"}
        for b in sorted(set(ours) | set(theirs)):
            ratio = f"{ours[b] / theirs[b]:.2f}x" if b in ours and b in theirs else "-"
            out.append(f"| {b} | {ours.get(b, '-')} | {theirs.get(b, '-')} | {ratio} |")
    return out


def _run_parts(parts: list[str], smoke: bool, budget_s: float, emit) -> None:
    """Each part in a fresh process, in order, within ``budget_s`` seconds in all; ``emit`` gets its lines."""
    start = time.perf_counter()
    for part in parts:
        left = budget_s - (time.perf_counter() - start)
        estimate = PARTS[part] * (0.2 if smoke else 1.0)
        if left < estimate:
            emit({"part": part, "skipped": f"{left:.0f} s left of the budget, estimate {estimate:.0f} s"})
            continue
        cmd = [sys.executable, __file__, "--worker", part] + (["--smoke"] if smoke else [])
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            emit({"part": part, "error": f"killed after {left:.0f} s, at the end of the budget"})
            continue
        if done.returncode != 0:
            emit({"part": part, "error": done.stderr.strip().splitlines()[-3:]})
            continue
        for text in done.stdout.strip().splitlines():
            if text.startswith("{"):
                emit({**json.loads(text), "wall_s": round(time.perf_counter() - t0, 1)})


def _gpu_name() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="folder for gpu.jsonl and summary.md (default: print only)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall-clock seconds for all parts together")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    ap.add_argument("--smoke", action="store_true", help="a tiny model: checks every part runs, on any machine")
    ap.add_argument("--worker", metavar="PART", help=argparse.SUPPRESS)
    args = ap.parse_args()
    setup = SMOKE if args.smoke else FULL
    if args.worker:
        worker(args.worker, setup)
        return
    lines: list[dict] = []
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    def emit(line: dict) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)
        if args.out:  # appended line by line: a run cut short keeps what it measured
            with open(os.path.join(args.out, "gpu.jsonl"), "a") as f:
                f.write(json.dumps(line) + "\n")

    host = {"processor": processor(), "cores": os.cpu_count()}
    emit({"gpu": _gpu_name(), **host, "setup": setup.__dict__, "smoke": args.smoke})
    _run_parts(args.parts, args.smoke, args.budget_s, emit)
    table = _summary(lines, args.peak_tflops)
    print("\n".join(table))
    if args.out:
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()

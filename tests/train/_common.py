"""A tiny GPT-2, a fixed batch and an optimizer shared by the in-process tests and the subprocess
scripts (which import this file as a plain module, so only absolute imports here)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from eqxllm.models.gpt2 import GPT2, GPT2Config
from eqxllm.train import OptimConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
VOCAB = 128
SEQ = 16
BATCH = 8

TINY = GPT2Config(
    vocab_size=VOCAB,
    n_positions=32,
    n_embd=32,
    n_layer=2,
    n_head=4,
    bos_token_id=0,
    eos_token_id=0,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
)
# no warmup: the schedule starts at 0, which would make a test's first update a no-op
OPTIM = OptimConfig(learning_rate=1e-3, warmup_steps=0, total_steps=20, weight_decay=0.1, grad_clip_norm=1.0)


def tiny_model(seed: int = 0, **changes) -> GPT2:
    return GPT2(TINY.replace(**changes), key=jax.random.key(seed))


def fixed_batch(batch: int = BATCH, seq: int = SEQ, seed: int = 1) -> np.ndarray:
    """``[batch, seq + 1]`` token ids: inputs and shifted targets of a next-token loss."""
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, seq + 1), dtype=np.int32)


def story_corpus(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A text file of ``n`` tiny stories separated by ``<|endoftext|>``: training data for ``train()``."""
    rng = np.random.default_rng(seed)
    names, things = ["Lily", "Tom", "Mia", "Ben", "Sue"], ["ball", "cat", "tree", "cake", "boat", "kite"]
    stories = []
    for _ in range(n):
        a, b = rng.choice(names), rng.choice(things)
        stories.append(
            f"Once upon a time, {a} had a {b}. {a} loved the {b} very much. One day the {b} was lost. "
            f"{a} looked and looked. At last {a} found the {b} and was happy."
        )
    path.write_text("\n<|endoftext|>\n".join(stories) + "\n<|endoftext|>\n", encoding="utf-8")
    return path


def params_numpy(model) -> list[np.ndarray]:
    """Every floating array leaf of ``model`` on the host, gathered whole (in leaf order)."""
    return [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


def copy_tree(tree):
    """A fresh copy of every array (the train step donates its inputs)."""
    return jax.tree.map(lambda x: x.copy() if eqx.is_array(x) else x, tree)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(args: list[str], *, devices: int, extra_env: dict | None = None) -> subprocess.Popen:
    """Run a Python script from this folder with ``devices`` virtual CPU devices (fixed at JAX import,
    hence a fresh process)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(devices, extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def subprocess_env(devices: int, extra_env: dict | None = None) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    return env

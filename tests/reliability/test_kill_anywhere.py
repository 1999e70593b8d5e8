"""Kill-anywhere: ``eqxllm train`` is SIGKILLed during a step, during a checkpoint write and during
the export, and resumed after each; every destination is whole or absent after every kill, and the
final weights are bit-identical to those of an uninterrupted run."""

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import eqxllm
from eqxllm.train.config import TrainConfig, train_preset
from eqxllm.train.loop import train
from eqxllm.train.metrics import read_metrics

from ._helpers import story_file

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _cfg(tmp_path: Path, out: Path) -> TrainConfig:
    cfg = train_preset("gpt2-tinystories-test")
    data = dataclasses.replace(
        cfg.data, source=str(story_file(tmp_path / "stories.txt", n=80)), cache_dir=str(tmp_path / "cache")
    )
    loop = dataclasses.replace(cfg.train, max_steps=8, checkpoint_every=2, eval_every=4, num_samples=0, log_every=1)
    return cfg.replace(data=data, train=loop, out=str(out))


def _has_step(out: Path) -> bool:
    ckpts = out / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def _start(config_file: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "eqxllm.cli", "train", "--config-file", str(config_file)]
    # the starts share a compilation cache: each resume runs the programs compiled by the first start
    cache = {
        "JAX_COMPILATION_CACHE_DIR": str(out.parent / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **cache}
    return subprocess.Popen(
        argv + (["--resume"] if _has_step(out) else []), env=env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _moment(kind: str, out: Path, rng: random.Random):
    """A predicate that is true at the moment to kill."""
    if kind == "step":  # some time after the first logged step, somewhere in the next ones
        delay = rng.uniform(0.0, 0.05)
        seen: list[float] = []

        def during_step() -> bool:
            if not seen and any(r.get("kind") == "train" for r in read_metrics(out)):
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= delay

        return during_step
    if kind == "never":
        return lambda: False
    if kind == "checkpoint":  # while Orbax writes a step (its temporary folder exists)
        return lambda: any("tmp" in n for n in _names(out / "checkpoints"))
    return lambda: any(n.startswith(".eqxllm-save-") for n in _names(out))  # while the export is staged


def _run_until(kind: str, config_file: Path, out: Path, rng: random.Random) -> bool:
    """Start (or resume) the run and SIGKILL it at ``kind``; False if it finished first."""
    proc = _start(config_file, out)
    hit = _moment(kind, out, rng)
    while proc.poll() is None:
        if hit():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)  # leave the CPU to the run; the export's staging lasts milliseconds
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return False


def _check_whole_or_absent(out: Path) -> None:
    model = out / "model"
    if model.exists():  # the export appears whole (renamed into place) or not at all
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(_names(model))
        eqxllm.from_pretrained(model)
    if (out / "run_config.json").exists():
        TrainConfig.from_json((out / "run_config.json").read_text())
    read_metrics(out)  # a torn last line is tolerated, nothing else


def test_sigkill_anywhere_then_resume_is_bit_identical(tmp_path):
    reference = train(_cfg(tmp_path, tmp_path / "reference"), progress=False)
    out = tmp_path / "killed"
    config_file = tmp_path / "run.json"
    config_file.write_text(_cfg(tmp_path, out).to_json())
    rng = random.Random(0)
    kills = []
    for kind in ("step", "checkpoint", "export"):
        for _ in range(3):  # the export takes milliseconds: retry (re-exporting) until a kill lands in it
            if _run_until(kind, config_file, out, rng):
                kills.append(kind)
                break
            if kind != "export":
                break
            shutil.rmtree(out / "model")
        _check_whole_or_absent(out)
    print("kills landed:", kills)
    assert kills[:2] == ["step", "checkpoint"], kills
    while _run_until("never", config_file, out, rng):  # the last start runs to the end
        pass
    _check_whole_or_absent(out)
    assert not [n for n in _names(out) if n.startswith(".eqxllm-save-")]
    want, got = load_file(reference / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

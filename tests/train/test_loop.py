"""The training loop end to end on a tiny model: export, logs, exact resume, signals, bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import CheckpointError, ConfigError, DataError
from eqxllm.train.config import train_preset
from eqxllm.train.loop import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]


def _corpus(path: Path, n: int = 240, seed: int = 0) -> Path:
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


def _cfg(tmp_path: Path, **loop):
    cfg = train_preset("gpt2-tinystories-test")
    data = dataclasses.replace(cfg.data, source=str(_corpus(tmp_path / "stories.txt")), cache_dir=str(tmp_path / "c"))
    train_cfg = dataclasses.replace(cfg.train, num_samples=0, **loop)
    optim = dataclasses.replace(cfg.optim, total_steps=train_cfg.max_steps)
    return cfg.replace(data=data, train=train_cfg, optim=optim, out=str(tmp_path / "run"))


def _arrays(model):
    return [np.asarray(x) for x in jax.tree.leaves(eqx_filter(model))]


def eqx_filter(model):
    import equinox as eqx

    return eqx.filter(model, eqx.is_array)


def test_train_exports_a_model_transformers_loads(tmp_path):
    cfg = _cfg(tmp_path)
    export = train(cfg, progress=False)
    assert sorted(p.name for p in export.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    rows = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert evals and all(np.isfinite(r["val_bits_per_byte"]) for r in evals)
    assert (Path(cfg.out) / "loss.png").stat().st_size > 1000
    model = eqxllm.from_pretrained(export)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    hf = transformers.GPT2LMHeadModel.from_pretrained(export).eval()
    ids = np.arange(12)[None] % model.config.vocab_size
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    assert np.abs(np.asarray(jax.vmap(model)(ids)) - ref).max() < 1e-4


def test_resume_is_bit_identical(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _cfg(tmp_path / "a"), _cfg(tmp_path / "b")
    model_a = eqxllm.from_pretrained(train(a, progress=False))
    train(b, progress=False, stop_after_step=3)
    assert not (Path(b.out) / "model").exists()
    model_b = eqxllm.from_pretrained(train(b.replace(resume=True), progress=False))
    for x, y in zip(_arrays(model_a), _arrays(model_b)):
        np.testing.assert_array_equal(x, y)


def test_existing_run_is_not_overwritten(tmp_path):
    cfg = _cfg(tmp_path)
    train(cfg, progress=False, stop_after_step=2)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)


def test_corrupted_checkpoint_on_resume(tmp_path):
    cfg = _cfg(tmp_path)
    train(cfg, progress=False, stop_after_step=2)
    ckpt = Path(cfg.out) / "checkpoints"
    victims = [p for p in ckpt.rglob("*") if p.is_file() and p.stat().st_size > 0 and "state" in p.parts]
    assert victims
    for p in victims:
        p.write_bytes(b"\x00garbage" * 3)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in Path(cfg.out).rglob("*") if p.is_file())
    with pytest.raises(CheckpointError, match=r"cannot be restored"):
        train(cfg.replace(resume=True), progress=False)
    after = sorted((str(p), p.stat().st_mtime_ns) for p in Path(cfg.out).rglob("*") if p.is_file())
    assert after == before


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(_cfg(tmp_path).replace(resume=True), progress=False)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "neither an existing file"),
        (b"", "empty"),
        (b"<|endoftext|>\n<|endoftext|>\n", "no complete story"),
        (b"Once upon a time \xff\xfe there was", "UTF-8"),
    ],
)
def test_bad_data(tmp_path, content, match):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    cfg = _cfg(tmp_path)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, source=str(path)))
    with pytest.raises(DataError, match=match):
        train(cfg, progress=False)
    assert not Path(cfg.out).exists()


def test_mesh_and_batch_errors(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ConfigError, match="device"):
        train(cfg.replace(mesh="data=3"), progress=False)
    with pytest.raises(ConfigError, match="accum_steps"):
        cfg.replace(train=dataclasses.replace(cfg.train, batch_size=6, accum_steps=4))


def test_nan_loss_names_the_step(tmp_path, monkeypatch):
    import eqxllm.train.tasks.lm as lm

    def nan_loss(model, batch, key):
        loss, aux = eqxllm.train.next_token_loss(model, batch, key)
        return loss * jax.numpy.nan, aux

    monkeypatch.setattr(lm, "next_token_loss", nan_loss)
    with pytest.raises(TrainingDiverged, match="at step 1"):
        train(_cfg(tmp_path), progress=False)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    cfg = _cfg(tmp_path, max_steps=100000, max_minutes=3.0, eval_every=100000, checkpoint_every=100000, log_every=1)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eqxllm.cli", "train", "--config-file", str(tmp_path / "cfg.json")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    metrics = Path(cfg.out) / "metrics.jsonl"
    deadline = time.time() + 150
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count('"train"') >= 2):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-2000:]
    steps = [int(p.name) for p in (Path(cfg.out) / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps and max(steps) >= 2

"""The training loop end to end on a tiny model: export, logs, exact resume, signals, bad input."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import eqxllm
from eqxllm.data.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE
from eqxllm.errors import CheckpointError, ConfigError, DataError
from eqxllm.train.config import train_preset
from eqxllm.train.loop import TrainingDiverged, train
from eqxllm.train.metrics import read_metrics

from ._common import story_corpus as _corpus

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, **loop):
    cfg = train_preset("gpt2-tinystories-test")
    data = dataclasses.replace(cfg.data, source=str(_corpus(tmp_path / "stories.txt")), cache_dir=str(tmp_path / "c"))
    train_cfg = dataclasses.replace(cfg.train, **({"num_samples": 0} | loop))
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
    names = sorted(p.name for p in export.iterdir())
    assert names == sorted(
        ["config.json", "generation_config.json", "model.safetensors", TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]
    )
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
    # resumed again, the finished run evaluates (and samples) its last step again: the log keeps one of each
    logged = lambda: [
        {k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in read_metrics(Path(b.out))
    ]
    finished = logged()
    assert len({(r["kind"], r["step"]) for r in finished if r["kind"] != "sample"}) == len(
        [r for r in finished if r["kind"] != "sample"]
    )
    train(b.replace(resume=True), progress=False)
    assert logged() == finished
    # killed after logging steps 5 to 8 but before step 8's checkpoint: replayed exactly from step 4, once
    shutil.rmtree(Path(b.out) / "checkpoints" / "8")
    train(b.replace(resume=True), progress=False)
    assert logged() == finished


def test_train_keeps_freed_host_memory_before_its_first_step(tmp_path, monkeypatch):
    """On the CPU backend, train() turns off glibc's returning of freed memory (eqxllm.train.host_memory)
    before it builds the first step (the run is stopped there: nothing after it is under test)."""
    import eqxllm.train.loop as loop

    class Built(Exception):
        pass

    def build(*args, **kwargs):
        order.append("step")
        raise Built

    order = []
    original_keep = loop.keep_freed_host_memory
    monkeypatch.setattr(loop, "keep_freed_host_memory", lambda: order.append("keep") or original_keep())
    monkeypatch.setattr(loop, "make_train_step", build)
    with pytest.raises(Built):
        train(_cfg(tmp_path), progress=False)
    assert order == ["keep", "step"]


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


def _scripted_val_losses(monkeypatch, losses):
    """LMTask.evaluate returns ``losses`` in turn (one per evaluation), so the best step is known."""
    from eqxllm.train.tasks import lm

    queue = list(losses)
    monkeypatch.setattr(lm.LMTask, "evaluate", lambda self, model, **kw: {"val_loss": queue.pop(0)})
    return queue


def test_export_best_exports_the_weights_of_the_lowest_val_loss(tmp_path, monkeypatch):
    loop = {"max_steps": 8, "eval_every": 2, "checkpoint_every": 2, "export_best": True}
    for name in ("best", "paused", "last"):
        (tmp_path / name).mkdir()
    # evaluations at steps 2, 4, 6 and 8 (the final one): the best is step 4's
    left = _scripted_val_losses(monkeypatch, [3.0, 1.0, 2.0, 2.5])
    best_cfg = _cfg(tmp_path / "best", **loop)
    best = eqxllm.from_pretrained(train(best_cfg, progress=False))
    assert left == []
    rows = [json.loads(line) for line in (Path(best_cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_loss"]) for r in rows if r["kind"] == "best"] == [(2, 3.0), (4, 1.0)]
    # a run paused at step 5 has already exported step 4's weights: the same as the best above
    _scripted_val_losses(monkeypatch, [3.0, 1.0])
    paused_cfg = _cfg(tmp_path / "paused", **loop)
    train(paused_cfg, progress=False, stop_after_step=5)
    at_4 = eqxllm.from_pretrained(Path(paused_cfg.out) / "model")
    for x, y in zip(_arrays(best), _arrays(at_4)):
        np.testing.assert_array_equal(x, y)
    # resumed, it remembers its best (1.0, from metrics.jsonl) and does not export the worse steps
    _scripted_val_losses(monkeypatch, [2.0, 2.5])
    resumed = eqxllm.from_pretrained(train(paused_cfg.replace(resume=True), progress=False))
    for x, y in zip(_arrays(best), _arrays(resumed)):
        np.testing.assert_array_equal(x, y)
    # without export_best the last step's weights are exported, and they differ from step 4's
    _scripted_val_losses(monkeypatch, [3.0, 1.0, 2.0, 2.5])
    last = eqxllm.from_pretrained(train(_cfg(tmp_path / "last", **(loop | {"export_best": False})), progress=False))
    assert any((x != y).any() for x, y in zip(_arrays(best), _arrays(last)))


def test_export_best_falls_back_to_the_last_weights_without_a_finite_val_loss(tmp_path, monkeypatch):
    _scripted_val_losses(monkeypatch, [float("nan")] * 4)
    cfg = _cfg(tmp_path, max_steps=8, eval_every=2, checkpoint_every=2, export_best=True)
    export = train(cfg, progress=False)
    assert (export / "model.safetensors").is_file()

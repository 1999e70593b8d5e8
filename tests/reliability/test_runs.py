"""Hostile run directories and data for ``eqxllm train``: a folder that is not a run, a file, an
abandoned start's tokenizer, a torn metrics.jsonl, bad data files; each refused (or survived) with
nothing of the user's changed."""

import dataclasses
import json
from pathlib import Path

import pytest

from eqxllm.errors import CheckpointError, ConfigError, DataError
from eqxllm.train.config import train_preset
from eqxllm.train.loop import train
from eqxllm.train.metrics import read_metrics
from eqxllm.train.plot import plot_run

from ._helpers import assert_user_error, snapshot, story_file


def _cfg(tmp_path: Path, out: Path, *, data: Path | None = None, max_steps: int = 4, **data_changes):
    cfg = train_preset("gpt2-tinystories-test")
    source = str(data or story_file(tmp_path / "stories.txt"))
    d = dataclasses.replace(cfg.data, source=source, cache_dir=str(tmp_path / "cache"), **data_changes)
    t = dataclasses.replace(cfg.train, num_samples=0, max_steps=max_steps, eval_every=100, checkpoint_every=2)
    return cfg.replace(data=d, train=t, out=str(out))


def test_out_that_is_not_a_run_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"my": "own"}\n')
    (out / "notes.txt").write_text("keep")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"is not empty and is not an eqxllm run.*metrics.jsonl, notes.txt"):
        train(_cfg(tmp_path, out), progress=False)
    assert snapshot(out) == before


def test_out_that_is_a_file(tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        train(_cfg(tmp_path, out), progress=False)
    assert out.read_text() == "x"


def test_resume_without_a_run(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint to resume from"):
        train(_cfg(tmp_path, tmp_path / "none").replace(resume=True), progress=False)
    assert not (tmp_path / "none").exists()


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_cleared(tmp_path):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)  # what a finished run keeps once its checkpoints are removed
    (out / "model" / "config.json").write_text("{}")
    (out / "run_config.json").write_text(_cfg(tmp_path, out).to_json())
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 4, "loss": 3.0}\n')
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds a finished run \(its exported model/\) and no checkpoint"):
        train(_cfg(tmp_path, out), progress=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint to resume from"):
        train(_cfg(tmp_path, out).replace(resume=True), progress=False)
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("content", "facts"),
    [
        (b"", "empty"),
        (b"caf\xe9 au lait\n", "UTF-8"),
    ],
)
def test_bad_data_files(tmp_path, content, facts):
    data = tmp_path / "bad.txt"
    data.write_bytes(content)
    with pytest.raises(DataError, match=facts):
        train(_cfg(tmp_path, tmp_path / "run", data=data), progress=False)
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing behind


def test_an_abandoned_starts_tokenizer_is_not_reused(tmp_path):
    out = tmp_path / "run"
    # a first start that died after writing its tokenizer, with another vocabulary size
    with pytest.raises(DataError):
        train(_cfg(tmp_path, out, data=tmp_path / "missing.txt", vocab_size=280), progress=False)
    out.mkdir(exist_ok=True)
    (out / "run_config.json").write_text(_cfg(tmp_path, out, vocab_size=280).to_json())
    (out / "tokenizer.json").write_text("{not the tokenizer of this run")
    export = train(_cfg(tmp_path, out), progress=False)
    assert json.loads((export / "config.json").read_text())["vocab_size"] > 256
    assert json.loads((out / "run_config.json").read_text())["data"]["vocab_size"] == 300


def test_a_torn_metrics_line_survives_resume_and_plot(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, out)
    train(cfg, progress=False, stop_after_step=2)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 3, "lo')  # a kill in the middle of a write
    assert [r["step"] for r in read_metrics(out)] == [2]
    # resumed under a lower learning rate: run_config.json then says what the run did, so that
    # --config-file OUT/run_config.json --resume replays it
    slower = cfg.replace(resume=True, optim=dataclasses.replace(cfg.optim, learning_rate=cfg.optim.learning_rate / 2))
    train(slower, progress=False)
    assert json.loads((out / "run_config.json").read_text())["optim"]["learning_rate"] == cfg.optim.learning_rate / 2
    rows = read_metrics(out)
    assert rows and all(isinstance(r, dict) for r in rows) and rows[-1]["step"] == 4
    assert all(line.startswith("{") for line in (out / "metrics.jsonl").read_text().splitlines())
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"kind": "tra')
    assert plot_run(out).is_file()


def test_a_corrupted_metrics_line_in_the_middle_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 2}\nGARBAGE\n{"kind": "x"}\n')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        read_metrics(tmp_path)


def test_train_cli_refuses_a_non_run_out_in_one_line(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "a.txt").write_text("x")
    argv = ["train", "--config", "gpt2-tinystories-test", "--data", story_file(tmp_path / "s.txt"), "--out", out]
    assert_user_error(capsys, argv, "is not an eqxllm run")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]


def test_a_failed_start_removes_the_folders_it_made(tmp_path):
    with pytest.raises(DataError):
        train(_cfg(tmp_path, tmp_path / "runs" / "deep" / "run", data=tmp_path / "missing.txt"), progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("change", "error", "facts"),
    [
        (dict(mesh="data=8"), ConfigError, "has 8 devices but 1 are available"),
        (
            dict(lora=dataclasses.replace(train_preset("gpt2-tinystories-test").lora, rank=2, targets="nomatch")),
            ConfigError,
            "matches no linear layer",
        ),  # fmt: skip
        ("tiny data", DataError, "fewer than one window"),
    ],
)
def test_a_start_refused_while_building_leaves_nothing(tmp_path, change, error, facts):
    """Found after run_config.json and the tokenizer were written: they and the folders made go again."""
    out = tmp_path / "runs" / "run"
    if change == "tiny data":
        tiny = tmp_path / "tiny.txt"
        tiny.write_text("Hi.<|endoftext|>Yo.<|endoftext|>Ok.<|endoftext|>Bye.<|endoftext|>")
        cfg = _cfg(tmp_path, out, data=tiny)
    else:
        cfg = _cfg(tmp_path, out).replace(**change)
    with pytest.raises(error, match=facts):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_run_without_tensorboardx_says_how_to_get_its_log(tmp_path, monkeypatch, capsys):
    import sys

    from eqxllm.train.metrics import RunLogger

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed: the import raises
    log = RunLogger(tmp_path, progress=True, total_steps=1)
    log.log("train", 1, loss=1.0)
    log.close()
    printed = capsys.readouterr()
    assert "pip install 'eqxllm[tensorboard]'" in printed.out + printed.err
    assert not (tmp_path / "tensorboard").exists() and read_metrics(tmp_path)[0]["loss"] == 1.0

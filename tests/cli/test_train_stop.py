"""What `eqxllm train` prints at its end: the exported model, or, when a signal stopped the run
between steps (a checkpoint, nothing exported), how to continue."""

from pathlib import Path

import pytest

import eqxllm.train.loop
from eqxllm.cli import main


@pytest.mark.parametrize(("returned", "line"), [("model", "model exported to"), ("checkpoints", "stopped early")])
def test_the_last_line_says_what_the_run_left(tmp_path, capsys, monkeypatch, returned, line):
    monkeypatch.setattr(eqxllm.train.loop, "train", lambda cfg: Path(cfg.out) / returned)
    assert main(["train", "--config", "gpt2-tinystories-test", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(line) and str(tmp_path / "run" / returned) in out
    if returned == "checkpoints":
        assert "no model exported" in out and "--resume" in out

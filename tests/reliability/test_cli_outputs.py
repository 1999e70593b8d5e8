"""Where the command line writes (``train --out``, ``plot --out``, ``vae ... --output``): a path it
cannot write is one line and exit 2 before any work, missing parent folders are created, and the path
printed is the file written."""

import json
import sys
from pathlib import Path

import pytest

from ._helpers import assert_user_error, cli, snapshot

TRAIN = ["train", "--config", "gpt2-tinystories-test", "--max-steps", "1"]


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("keep")
    return path


def test_train_out_below_a_file_or_where_the_system_refuses(capsys, tmp_path, afile):
    before = snapshot(tmp_path)
    assert_user_error(capsys, [*TRAIN, "--out", afile / "sub"], "--out", "its parent", "afile is a file")
    assert snapshot(tmp_path) == before
    if sys.platform == "linux" and Path("/proc/self").is_dir():  # a folder no one can create things in
        assert_user_error(capsys, [*TRAIN, "--out", "/proc/eqxllm-run"], "cannot create the folder /proc/eqxllm-run")
        assert not Path("/proc/eqxllm-run").exists()


@pytest.fixture
def run(tmp_path) -> Path:
    rows = [{"kind": "train", "step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 5)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "run"


def test_plot_creates_missing_folders_and_prints_the_file_it_wrote(capsys, run, tmp_path):
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "new" / "sub" / "x.png")
    assert code == 0, err
    assert (tmp_path / "new" / "sub" / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert out.strip() == str(tmp_path / "new" / "sub" / "x.png")
    (tmp_path / "hf").mkdir()  # no suffix: .png is added, and said
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "hf")
    assert code == 0 and out.strip() == str(tmp_path / "hf.png") and (tmp_path / "hf.png").is_file(), err
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "curve.svg")
    assert code == 0 and (tmp_path / "curve.svg").read_text().lstrip().startswith("<?xml"), err


def test_plot_refuses_paths_it_cannot_write(capsys, run, tmp_path, afile):
    (tmp_path / "d.png").mkdir()
    before = snapshot(tmp_path)
    assert_user_error(capsys, ["plot", run, "--out", afile / "x.png"], "its parent", "afile is a file")
    assert_user_error(capsys, ["plot", run, "--out", tmp_path / "plot.txt"], "'.txt' is not an image format", ".png")
    assert_user_error(capsys, ["plot", run, "--out", tmp_path / "d.png"], "d.png is a folder")
    assert snapshot(tmp_path) == before

"""The TensorBoard log: tensorboardX is imported without PyTorch (``summary_writer_class``), and the
events a run writes read back with their tags, steps and values."""

import importlib.util
import struct
import subprocess
import sys

import pytest

from ._common import REPO_ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorboardX") is None, reason="tensorboardX is not installed"
)

_CHECK = """
import sys
from pathlib import Path
from eqxllm.train.metrics import RunLogger

folder = Path(sys.argv[1])
log = RunLogger(folder, progress=False, total_steps=2)
log.log("train", 1, loss=2.5, note="not a number")
log.log("val", 2, loss=1.25)
log.text("samples", 2, "Once upon a time")
log.close()
print("torch imported:", "torch" in sys.modules)
import torch  # still importable afterwards
print("torch then:", torch.__name__)
"""


def _events(folder) -> list:
    """Every event record of the TensorBoard files in ``folder`` (TFRecord framing: an 8-byte length,
    its checksum, the record, its checksum)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            record = data[at + 12 : at + 12 + length]
            at += 12 + length + 4
            events.append(Event.FromString(record))
    return events


def test_a_run_logs_to_tensorboard_without_importing_torch(tmp_path):
    pytest.importorskip("torch")
    run = subprocess.run(
        [sys.executable, "-c", _CHECK, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "torch imported: False" in run.stdout and "torch then: torch" in run.stdout
    scalars = {
        (value.tag, event.step): value.simple_value
        for event in _events(tmp_path / "tensorboard")
        for value in event.summary.value
        if value.HasField("simple_value")
    }
    assert scalars == {("train/loss", 1): 2.5, ("val/loss", 2): 1.25}  # the string is in metrics.jsonl only
    tags = {value.tag for event in _events(tmp_path / "tensorboard") for value in event.summary.value}
    assert any(tag.startswith("samples") for tag in tags)


_TORCH_FIRST = """
import sys
import torch
from eqxllm.train.metrics import summary_writer_class
import tensorboardX.writer

assert summary_writer_class() is tensorboardX.SummaryWriter
print("tensorboardX took torch tensors:", tensorboardX.writer.numpy_compatible is torch.Tensor)
"""


def test_with_torch_imported_first_tensorboardx_sees_it():
    pytest.importorskip("torch")
    run = subprocess.run(
        [sys.executable, "-c", _TORCH_FIRST], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "tensorboardX took torch tensors: True" in run.stdout

"""safetensors reading/writing: bit-exact round trips, interop with the reference library, one test per
malformed input, sharding as transformers lays it out, and saves that never leave anything half-written."""

import json
import os
import pickle
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

from eqxllm.checkpoints import safetensors_io as sio
from eqxllm.checkpoints.checkpoint_dir import checkpoint_files, parse_size, read_checkpoint, write_checkpoint
from eqxllm.checkpoints.safetensors_io import read_metadata, read_safetensors
from eqxllm.errors import CheckpointError, MissingKeyError, SafetensorsFormatError, ShardIndexError

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64, "BOOL": np.bool_}
SHAPES = [(), (0,), (3, 0, 2), (7,), (4, 5)]


def _random(dtype, shape, rng: np.random.Generator) -> np.ndarray:
    """Random values of every bit pattern (for floats: NaNs, infinities, subnormals too)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    raw = rng.integers(0, 256, (*shape, dtype.itemsize), dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert _bits(got[k]) == _bits(want[k]), k


@pytest.fixture
def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"{name}.{i}": _random(dt, s, rng) for name, dt in DTYPES.items() for i, s in enumerate(SHAPES)}


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("shard", [None, 64])
def test_round_trip_is_bit_identical(tmp_path, tensors, mmap, shard):
    write_checkpoint(tensors, tmp_path, max_shard_size=shard)
    _assert_identical(read_checkpoint(tmp_path, mmap=mmap), tensors)


@pytest.mark.parametrize("mmap", [False, True])
def test_float8_tensors_are_read(tmp_path, mmap):
    """FP8 Hub checkpoints hold float8 tensors, which the reference library's NumPy reader cannot give."""
    rng = np.random.default_rng(1)
    f8 = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "f32": np.float32}
    tensors = {name: _random(dt, (3, 5), rng) for name, dt in f8.items()}
    write_checkpoint(tensors, tmp_path, max_shard_size=None, metadata={})
    _assert_identical(read_checkpoint(tmp_path, mmap=mmap), tensors)


def test_written_files_load_in_reference_library(tmp_path, tensors):
    (path,) = write_checkpoint(tensors, tmp_path, max_shard_size=None)
    theirs = safetensors.torch.load_file(path)  # what transformers uses
    for k, want in tensors.items():
        assert tuple(theirs[k].shape) == want.shape
        assert theirs[k].reshape(-1).view(torch.uint8).numpy().tobytes() == _bits(want), k
    with safetensors.safe_open(path, framework="np") as f:
        assert f.metadata() == {"format": "pt"}


def test_reads_files_written_by_reference_library(tmp_path, tensors):
    np_file, torch_file = tmp_path / "np.safetensors", tmp_path / "torch.safetensors"
    safetensors.numpy.save_file(tensors, np_file)
    _assert_identical(read_safetensors(np_file), tensors)
    assert read_metadata(np_file) == {}
    bf16 = torch.randn(3, 5).to(torch.bfloat16)
    safetensors.torch.save_file({"w": bf16, "i": torch.arange(4)}, torch_file, metadata={"format": "pt"})
    ours = read_safetensors(torch_file)
    assert ours["w"].dtype == ml_dtypes.bfloat16
    assert ours["w"].view(np.int16).tolist() == bf16.view(torch.int16).tolist()
    assert ours["i"].tolist() == [0, 1, 2, 3] and ours["i"].dtype == np.int64
    assert read_metadata(torch_file) == {"format": "pt"}


def test_writes_strided_and_big_endian_arrays_by_value(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = {"t": base.T, "be": np.arange(5, dtype=">i4"), "step": base[:, ::2]}
    write_checkpoint(tensors, tmp_path)
    got = read_checkpoint(tmp_path)
    for k, want in tensors.items():
        np.testing.assert_array_equal(got[k], want)
    assert got["be"].dtype == np.dtype("<i4")


def _file(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


F32x2 = {"dtype": "F32", "shape": [2]}


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        (b"\xff\xfe{]", b"", "not valid JSON"),
        (b"[1, 2]", b"", "JSON list, expected an object"),
        (b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": 1}', b"", "'a' appears twice"),
        ({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0", "'w' has dtype 'F4'"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "'w' has shape [-2]"),
        ({"w": {"dtype": "F32", "shape": [2]}}, bytes(8), "header entry 'w'"),
        ({"w": {**F32x2, "data_offsets": [8, 0]}}, bytes(8), "out of order"),
        (
            {"w": {**F32x2, "data_offsets": [0, 12]}},
            bytes(12),
            "needs 8 bytes but its data_offsets [0, 12] span 12",
        ),
        (
            {"a": {**F32x2, "data_offsets": [0, 8]}, "b": {**F32x2, "data_offsets": [4, 12]}},
            bytes(12),
            "overlaps",
        ),
        ({"a": {**F32x2, "data_offsets": [4, 12]}}, bytes(12), "leaves bytes [0, 4) unused"),
        ({"a": {**F32x2, "data_offsets": [0, 8]}}, bytes(4), "truncated: expected 8 bytes of data"),
        ({"a": {**F32x2, "data_offsets": [0, 8]}}, bytes(11), "3 bytes follow the last tensor"),
        ({"__metadata__": {"format": 1}}, b"", "__metadata__"),
    ],
)
def test_bad_headers_raise_naming_file(tmp_path, header, data, message):
    path = _file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(SafetensorsFormatError) as info:
        read_safetensors(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_truncated_files_raise_at_every_cut(tmp_path, tensors):
    (good,) = write_checkpoint(tensors, tmp_path / "ckpt", max_shard_size=None)
    raw = good.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    expected = {
        3: "file is 3 bytes, shorter than the 8-byte header length",
        8: "header length field says",
        header_end - 10: "truncated or not a safetensors file",
        header_end: f"truncated: expected {len(raw) - header_end} bytes of data after the header, found 0",
        len(raw) - 1: f"expected {len(raw) - header_end} bytes of data after the header, found",
    }
    for cut, message in expected.items():
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(raw[:cut])
        with pytest.raises(SafetensorsFormatError, match=re.escape(message)) as info:
            read_safetensors(path)
        assert str(path) in str(info.value)


def test_foreign_files_raise(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "random.safetensors").write_bytes(rng.bytes(4096))
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps({"w": [1.0, 2.0, 3.0]}))
    torch.save({"w": torch.ones(3)}, tmp_path / "zip.safetensors")
    for name, hint in [("random", "not a safetensors file"), ("pickle", "pickle"), ("zip", "zip archive")]:
        with pytest.raises(SafetensorsFormatError, match=hint) as info:
            read_safetensors(tmp_path / f"{name}.safetensors")
        assert f"{name}.safetensors" in str(info.value)
    assert "never unpickles" in str(info.value)


def test_sharded_layout_matches_transformers(tmp_path, tensors):
    limit = 100
    files = write_checkpoint(tensors, tmp_path, max_shard_size=limit)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    n = len(shards)
    assert n >= 3 and files == [tmp_path / s for s in shards] + [tmp_path / "model.safetensors.index.json"]
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert not (tmp_path / "model.safetensors").exists()
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())
    for shard in shards:  # each shard holds exactly what the index says, readable by the reference library
        with safetensors.safe_open(tmp_path / shard, framework="np") as f:
            assert f.metadata() == {"format": "pt"}
            keys = sorted(f.keys())
        assert keys == sorted(k for k, v in index["weight_map"].items() if v == shard)
        assert sum(tensors[k].nbytes for k in keys) <= limit or len(keys) == 1
    assert checkpoint_files(tmp_path) == [tmp_path / s for s in shards]
    _assert_identical(read_checkpoint(tmp_path), tensors)


def test_shard_sizes(tmp_path):
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GB") == parse_size(" 2gb ") == 2 * 10**9
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1.5KB") == 1500 and parse_size(7) == 7
    for bad in ["5 parsecs", "", "GB", 0, -3, True]:
        with pytest.raises(CheckpointError, match="max_shard_size"):
            parse_size(bad)
    big = {"a": np.zeros(4, np.uint8), "big": np.zeros(50, np.uint8), "c": np.zeros(4, np.uint8)}
    write_checkpoint(big, tmp_path / "s", max_shard_size=10)
    weight_map = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())["weight_map"]
    assert len({weight_map["a"], weight_map["big"]}) == 2 and weight_map["a"] == weight_map["c"]
    write_checkpoint(big, tmp_path / "n", max_shard_size=None)
    assert sorted(os.listdir(tmp_path / "n")) == ["model.safetensors"]


def test_metadata(tmp_path):
    (path,) = write_checkpoint({"x": np.ones(2, np.float32)}, tmp_path, metadata={"step": "12"})
    assert read_metadata(path) == {"format": "pt", "step": "12"}
    # The run-time type checker of the test suite refuses it first; without it, our own check does.
    unchecked = getattr(write_checkpoint, "__wrapped__", write_checkpoint)
    with pytest.raises(CheckpointError, match="metadata must map strings to strings"):
        unchecked({"x": np.ones(2, np.float32)}, tmp_path, metadata={"step": 12})


def test_bad_tensors_are_refused_before_writing(tmp_path):
    for tensors, message in [
        ({"s": np.array(["a", "b"])}, "'s' has dtype <U1"),
        ({"o": np.array([None], dtype=object)}, "'o' has dtype object"),
        ({"__metadata__": np.ones(2)}, "'__metadata__' cannot be stored"),
    ]:
        with pytest.raises(CheckpointError, match=re.escape(message)):
            write_checkpoint(tensors, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        write_checkpoint({"x": np.ones(2)}, tmp_path / "file")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_new_save_replaces_old_weights_only(tmp_path, tensors):
    (tmp_path / "config.json").write_text("{}")
    write_checkpoint(tensors, tmp_path, max_shard_size=60)
    write_checkpoint(tensors, tmp_path, max_shard_size=200)  # fewer shards: the extra old ones must go
    names = sorted(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert sorted(os.listdir(tmp_path)) == sorted([*names, "model.safetensors.index.json", "config.json"])
    write_checkpoint(tensors, tmp_path, max_shard_size=None)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    write_checkpoint(tensors, tmp_path, max_shard_size=100)
    assert "model.safetensors" not in os.listdir(tmp_path)
    _assert_identical(read_checkpoint(tmp_path), tensors)


def test_failed_save_leaves_directory_untouched(tmp_path, tensors, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    write_checkpoint(tensors, tmp_path, max_shard_size=None)
    before = _snapshot(tmp_path)
    real, calls = sio.write_file, []

    def write_then_fail(path, shard, metadata):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, shard, metadata)

    monkeypatch.setattr(sio, "write_file", write_then_fail)
    updated = {k: np.zeros_like(v) for k, v in tensors.items()}
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(updated, tmp_path, max_shard_size=100)
    assert len(calls) == 2 and calls[0].parent != tmp_path  # the first shard was written, elsewhere
    assert _snapshot(tmp_path) == before  # same files, same bytes, no temp folder left
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(updated, tmp_path / "new" / "dir", max_shard_size=100)
    assert not (tmp_path / "new").exists()


def _index(directory: Path, weight_map: dict | str) -> None:
    text = weight_map if isinstance(weight_map, str) else json.dumps({"weight_map": weight_map})
    (directory / "model.safetensors.index.json").write_text(text)


def test_bad_indexes_raise(tmp_path):
    outside = tmp_path / "evil.safetensors"
    safetensors.numpy.save_file({"x": np.ones(1)}, outside)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "link.safetensors").symlink_to(outside)
    for weight_map, message in [
        ("{not json", "not valid JSON"),
        ('{"metadata": {}}', "'weight_map'"),
        ({"x": "../evil.safetensors"}, "'../evil.safetensors'; a shard must be a file name inside"),
        ({"x": str(outside)}, "a shard must be a file name inside"),
        ({"x": "link.safetensors"}, "outside"),
        ({"x": "model-00001-of-00002.safetensors"}, "does not exist"),
    ]:
        _index(ckpt, weight_map)
        with pytest.raises(ShardIndexError, match=re.escape(message)) as info:
            checkpoint_files(ckpt)
        assert "model.safetensors.index.json" in str(info.value)


def test_index_and_shards_must_agree(tmp_path):
    safetensors.numpy.save_file({"a": np.ones(2), "b": np.ones(3)}, tmp_path / "s1.safetensors")
    safetensors.numpy.save_file({"b": np.ones(3), "c": np.ones(1)}, tmp_path / "s2.safetensors")
    cases = [
        (
            {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"},
            CheckpointError,
            "appears in both",
        ),
        ({"a": "s2.safetensors", "b": "s1.safetensors"}, CheckpointError, "'a' is in"),
        ({"b": "s1.safetensors", "c": "s2.safetensors"}, CheckpointError, "does not list it"),
    ]
    for weight_map, error, message in cases:
        _index(tmp_path, weight_map)
        with pytest.raises(error, match=message):
            read_checkpoint(tmp_path)
    safetensors.numpy.save_file({"c": np.ones(1)}, tmp_path / "s2.safetensors")
    _index(tmp_path, {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "d": "s2.safetensors"})
    with pytest.raises(MissingKeyError, match="'d' in s2.safetensors"):
        read_checkpoint(tmp_path)


def test_directory_without_safetensors(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        checkpoint_files(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="holds neither model.safetensors nor") as info:
        checkpoint_files(tmp_path)
    assert "config.json" in str(info.value) and "unpickle" not in str(info.value)
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="never unpickles") as info:
        read_checkpoint(tmp_path)
    assert "save_pretrained" in str(info.value) and "safe_serialization=True" in str(info.value)

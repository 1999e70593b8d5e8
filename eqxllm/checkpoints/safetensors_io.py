"""Read and write safetensors checkpoints, single-file or sharded, as dicts of numpy arrays.

A safetensors file is an 8-byte little-endian header length ``N``, then ``N`` bytes of JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (plus an optional ``"__metadata__"``
object of strings), then the raw little-endian bytes of every tensor, offsets counted from the end of the
header (https://github.com/huggingface/safetensors#format). We parse it ourselves, so that every way a file
can be wrong gets a message naming the file, and so that no byte is ever unpickled.

A checkpoint directory holds ``model.safetensors``, or shards ``model-00001-of-0000N.safetensors`` named
by ``model.safetensors.index.json`` (``{"metadata": {"total_size": ...}, "weight_map": {key: file}}``),
the layout ``transformers`` reads and writes. BF16 is ``ml_dtypes.bfloat16``. Tensors of any shape,
including 0-d and empty, go in and out bit for bit.
"""

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import ml_dtypes
import numpy as np
from jaxtyping import Shaped

from eqxllm.errors import CheckpointError, MissingKeyError, SafetensorsFormatError, ShardIndexError

Tensor = Shaped[np.ndarray, "..."]
PathLike = str | os.PathLike

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

SAFE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16, "C64": "<c8",
        "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
        "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
        "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
        "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    }.items()
}  # fmt: skip
_DTYPE_NAMES = {dtype: name for name, dtype in SAFE_DTYPES.items()}
# The reference implementation refuses larger headers; a foreign file's first 8 bytes often read as one.
_MAX_HEADER = 100_000_000


class _Entry(NamedTuple):
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class _Layout(NamedTuple):
    entries: list[_Entry]
    metadata: dict[str, str]
    data_start: int


def _error(path: Path, what: str) -> SafetensorsFormatError:
    return SafetensorsFormatError(f"{path}: {what}")


def _sniff(prefix: bytes) -> str:
    """A hint for the files people most often mistake for safetensors."""
    if prefix[:1] == b"\x80" or prefix[:4] == b"PK\x03\x04":
        kind = "a Python pickle" if prefix[:1] == b"\x80" else "a zip archive (the torch.save format)"
        return (
            f"; it looks like {kind}, e.g. a PyTorch .bin renamed: eqxllm never unpickles files, convert it "
            "with transformers (load it, then save_pretrained writes model.safetensors)"
        )
    return ""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {dup!r} appears twice")
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _entry(path: Path, name: str, info: object) -> _Entry:
    """Check one header entry: known dtype, non-negative shape, offsets spanning exactly its bytes."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise _error(
            path, f"header entry {name!r} is {info!r}; expected {{'dtype', 'shape', 'data_offsets'}}"
        )
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFE_DTYPES:
        raise _error(path, f"tensor {name!r} has dtype {dtype!r}; eqxllm reads {', '.join(SAFE_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise _error(path, f"tensor {name!r} has shape {shape!r}; expected a list of non-negative ints")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _error(path, f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end] as ints")
    begin, end = offsets
    if begin > end:
        raise _error(path, f"tensor {name!r} has data_offsets [{begin}, {end}] out of order (begin > end)")
    nbytes = math.prod(shape) * SAFE_DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise _error(
            path,
            f"tensor {name!r} of dtype {dtype} and shape {shape} needs {nbytes} bytes but its data_offsets "
            f"[{begin}, {end}] span {end - begin}",
        )
    return _Entry(name, SAFE_DTYPES[dtype], tuple(shape), begin, end)


def _layout(path: PathLike) -> _Layout:
    """Parse and validate the header of ``path`` without reading tensor data."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _error(
                path, f"file is {size} bytes, shorter than the 8-byte header length; not a safetensors file"
            )
        n = int.from_bytes(prefix, "little")
        if n > size - 8 or n > _MAX_HEADER:
            raise _error(
                path,
                f"header length field says {n} bytes but {size - 8} bytes follow it (limit {_MAX_HEADER}); "
                f"truncated or not a safetensors file{_sniff(prefix)}",
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _error(path, f"header is not valid JSON ({e}); not a safetensors file{_sniff(prefix)}") from e
    if not isinstance(header, dict):
        raise _error(
            path, f"header is a JSON {type(header).__name__}, expected an object; not a safetensors file"
        )
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _error(path, f"__metadata__ is {metadata!r}; expected an object of strings")
    entries = [_entry(path, name, info) for name, info in header.items()]
    # The data must be tiled exactly by the tensors: no overlap, no gap, nothing missing or left over.
    pos, prev = 0, None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            kind = f"overlaps tensor {prev!r}" if e.begin < pos else f"leaves bytes [{pos}, {e.begin}) unused"
            raise _error(
                path, f"tensor {e.name!r} at data_offsets [{e.begin}, {e.end}] {kind}; corrupted header"
            )
        pos, prev = e.end, e.name
    found = size - 8 - n
    if pos > found:
        raise _error(path, f"truncated: expected {pos} bytes of data after the header, found {found}")
    if pos < found:
        raise _error(
            path, f"{found - pos} bytes follow the last tensor's data; the header does not cover them"
        )
    return _Layout(entries, metadata, 8 + n)


def read_metadata(path: PathLike) -> dict[str, str]:
    """The ``"__metadata__"`` strings of a safetensors file (``{}`` when absent); the header is validated."""
    return _layout(path).metadata


def read_safetensors(path: PathLike, *, mmap: bool = False) -> dict[str, Tensor]:
    """All tensors of one safetensors file, in file order, as numpy arrays of their stored dtype and shape.

    With ``mmap=True`` the arrays are read-only views of a memory map (no copy, pages read on use); the
    file must then not be overwritten in place while they live. Raises :class:`SafetensorsFormatError`.
    """
    path = Path(path)
    layout = _layout(path)
    if mmap:
        data = np.memmap(path, dtype=np.uint8, mode="r")
        return {
            e.name: np.asarray(
                data[layout.data_start + e.begin : layout.data_start + e.end].view(e.dtype)
            ).reshape(e.shape)
            for e in layout.entries
        }
    out = {}
    with open(path, "rb") as f:
        for e in layout.entries:
            array = np.empty(e.shape, e.dtype)
            f.seek(layout.data_start + e.begin)
            got = f.readinto(array.reshape(-1).view(np.uint8).data)
            if got != e.end - e.begin:  # the file shrank after the header was checked
                raise _error(
                    path, f"truncated while reading tensor {e.name!r}: got {got} of {e.end - e.begin} bytes"
                )
            out[e.name] = array
    return out


def _no_weights(directory: Path) -> CheckpointError:
    names = sorted(p.name for p in directory.iterdir())
    msg = f"{directory} holds neither {SINGLE_FILE} nor {INDEX_FILE} (found: {', '.join(names) or 'nothing'})"
    if any(n.startswith("pytorch_model") and n.endswith((".bin", ".bin.index.json")) for n in names):
        msg += (
            ". Its pytorch_model*.bin files are pickles, which eqxllm never unpickles (that runs code). "
            "Convert once, with transformers, from a source you trust: "
            "AutoModel.from_pretrained(src).save_pretrained(dst) writes model.safetensors "
            "(transformers 4 needs save_pretrained(dst, safe_serialization=True))"
        )
    return CheckpointError(msg)


def _allowed_roots(directory: Path) -> list[Path]:
    """Where an index's shard names may resolve to: the directory, and for a Hugging Face cache snapshot
    (``models--org--name/snapshots/<commit>``) the repo's ``blobs`` folder its symlinks point into."""
    root = directory.resolve()
    return [root, root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [root]


def _weight_map(index: Path) -> dict[str, Path]:
    """Tensor name -> shard path from ``model.safetensors.index.json``, every path checked to stay inside."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ShardIndexError(
            f"{index}: not valid JSON ({e}); expected {{'weight_map': {{name: file}}}}"
        ) from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShardIndexError(
            f"{index}: expected a non-empty 'weight_map' object of tensor name -> shard file"
        )
    roots, shards = _allowed_roots(index.parent), {}
    for key, name in weight_map.items():
        if name in shards:
            continue
        where = f"{index}: tensor {key!r} is mapped to {name!r}"
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ShardIndexError(f"{where}; a shard must be a file name inside {index.parent}")
        shard = index.parent / name
        if not any(shard.resolve().is_relative_to(r) for r in roots):
            raise ShardIndexError(f"{where}, which resolves to {shard.resolve()}, outside {index.parent}")
        if not shard.is_file():
            raise ShardIndexError(f"{where}, which does not exist in {index.parent}")
        shards[name] = shard
    return {key: shards[name] for key, name in weight_map.items()}


def checkpoint_files(directory: PathLike) -> list[Path]:
    """The safetensors files of a checkpoint directory: ``[model.safetensors]`` if present (as in
    ``transformers``), else the shards its index names, sorted. Raises :class:`ShardIndexError` for a bad
    index and :class:`CheckpointError` when there are no safetensors weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such directory")
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    if (directory / INDEX_FILE).is_file():
        return sorted(set(_weight_map(directory / INDEX_FILE).values()))
    raise _no_weights(directory)


def read_checkpoint(directory: PathLike, *, mmap: bool = False) -> dict[str, Tensor]:
    """Every tensor of a checkpoint directory. For a sharded one, each tensor must sit in exactly the shard
    the index names, and every indexed tensor must be found."""
    directory = Path(directory)
    files = checkpoint_files(directory)
    if files == [directory / SINGLE_FILE]:
        return read_safetensors(files[0], mmap=mmap)
    index = directory / INDEX_FILE
    weight_map, out, source = _weight_map(index), {}, {}
    for shard in files:
        for key, array in read_safetensors(shard, mmap=mmap).items():
            if key in source:
                raise CheckpointError(f"tensor {key!r} appears in both {source[key].name} and {shard.name}")
            if weight_map.get(key) != shard:
                said = f"says {weight_map[key].name}" if key in weight_map else "does not list it"
                raise CheckpointError(f"tensor {key!r} is in {shard} but the index {index} {said}")
            out[key], source[key] = array, shard
    missing = [key for key in weight_map if key not in out]
    if missing:
        key = missing[0]
        raise MissingKeyError(
            f"{index} lists {len(missing)} tensors absent from their shards, e.g. {key!r} "
            f"in {weight_map[key].name}"
        )
    return out


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string like ``"500MB"``, ``"5GB"`` (decimal, as ``transformers``)
    or ``"2GiB"`` (binary)."""
    if isinstance(size, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]I?B|B)?\s*", size, re.IGNORECASE)
        value = int(float(match[1]) * _UNITS[(match[2] or "").upper()]) if match else 0
    else:
        value = -1 if isinstance(size, bool) else size
    if value <= 0:
        raise CheckpointError(
            f"max_shard_size={size!r}: expected a positive number of bytes or a size like '5GB'"
        )
    return value


def _prepare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Check names and dtypes; return little-endian C-contiguous arrays, sorted by name."""
    out = {}
    for key in sorted(tensors):
        array = tensors[key]
        if not isinstance(key, str) or not key or key == "__metadata__":
            raise CheckpointError(f"tensor name {key!r} cannot be stored; use a non-empty string")
        if not isinstance(array, np.ndarray):
            raise CheckpointError(f"tensor {key!r} is a {type(array).__name__}; expected a numpy array")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if array.dtype not in _DTYPE_NAMES:
            raise CheckpointError(
                f"tensor {key!r} has dtype {array.dtype}; safetensors stores {', '.join(SAFE_DTYPES)}"
            )
        out[key] = array if array.flags.c_contiguous else array.copy(order="C")
    return out


def _split(sizes: dict[str, int], limit: int | None) -> list[list[str]]:
    """Group names into shards of at most ``limit`` bytes, greedily in order; a tensor larger than the
    limit gets a shard of its own (``huggingface_hub.split_state_dict_into_shards_factory``)."""
    shards, current, used = [], [], 0
    for key, size in sizes.items():
        if limit is not None and size > limit:
            shards.append([key])
            continue
        if limit is not None and current and used + size > limit:
            shards.append(current)
            current, used = [], 0
        current.append(key)
        used += size
    return [*shards, current] if current or not shards else shards


def _write_file(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write one safetensors file and fsync it. Data is laid out by decreasing itemsize (as the reference
    writer does) so that, with the header padded to 8 bytes, every tensor is aligned to its itemsize."""
    order = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    pos = 0
    for key in order:
        array = tensors[key]
        header[key] = {
            "dtype": _DTYPE_NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [pos, pos + array.nbytes],
        }
        pos += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "xb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for key in order:
            f.write(tensors[key].reshape(-1).view(np.uint8).data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    if os.name == "posix":  # a directory's entries are durable only once the directory itself is synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_index(path: Path, index: dict[str, object]) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")  # as transformers writes it
        f.flush()
        os.fsync(f.fileno())


# Weight files of an earlier save; anything else in the directory (config.json, tokenizer) is not ours.
_OURS = re.compile(r"model\.safetensors(\.index\.json)?|model-\d{5,}-of-\d{5,}\.safetensors")


def _replace_files(directory: Path, write: Callable[[Path], list[str]]) -> list[Path]:
    """Run ``write(tmp)`` in a hidden folder inside ``directory``, then move the files it names into
    ``directory`` in that order, and remove weight files of an earlier save that were not replaced."""
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} is a file; expected a directory to save the checkpoint in")
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".eqxllm-save-", dir=directory))
    try:
        names = write(tmp)
        _fsync_dir(tmp)
        for name in names:
            os.replace(tmp / name, directory / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:  # deepest first; leave no empty folders we made
            if any(d.iterdir()):
                break
            d.rmdir()
        raise
    tmp.rmdir()
    for path in directory.iterdir():
        if _OURS.fullmatch(path.name) and path.name not in names and path.is_file():
            path.unlink()
    _fsync_dir(directory)
    return [directory / name for name in names]


def write_checkpoint(
    tensors: dict[str, Tensor],
    directory: PathLike,
    *,
    max_shard_size: int | str | None = "5GB",
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """Save ``tensors`` into ``directory`` as ``transformers`` does: ``model.safetensors``, or when they
    exceed ``max_shard_size`` (``None``: never shard) shards ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json``. ``metadata`` is added to ``{"format": "pt"}``, which
    ``transformers`` requires. Returns the files written, the index last.

    Nothing is written half: every file is written and fsynced in a hidden folder inside ``directory``,
    then moved into place with ``os.replace`` (shards first, the index last); weight files of an earlier
    save that this one does not produce are then removed. If writing fails, ``directory`` is left as it
    was. Each file is replaced atomically; the set of files is not (a crash between two moves can mix
    shards of two saves that have the same shard count).
    """
    directory = Path(directory)
    arrays = _prepare(tensors)
    meta = {"format": "pt", **(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"metadata must map strings to strings; got {metadata!r}")
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    shards = _split({k: a.nbytes for k, a in arrays.items()}, limit)
    n = len(shards)
    names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

    def write(tmp: Path) -> list[str]:
        for name, keys in zip(names, shards, strict=True):
            _write_file(tmp / name, {k: arrays[k] for k in keys}, meta)
        if n == 1:
            return names
        weight_map = {k: name for name, keys in zip(names, shards, strict=True) for k in keys}
        total = sum(a.nbytes for a in arrays.values())
        _write_index(tmp / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        return [*names, INDEX_FILE]

    return _replace_files(directory, write)

"""Read and write safetensors checkpoints, single-file or sharded, as dicts of numpy arrays.

A safetensors file is an 8-byte little-endian header length ``N``, then ``N`` bytes of JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (plus an optional ``"__metadata__"``
object of strings), then the raw little-endian bytes of every tensor, offsets counted from the end of the
header (https://github.com/huggingface/safetensors#format). The ``safetensors`` package writes the
tensors; eqxllm checks every header first, so that every way a file can be wrong gets a message
naming the file (what is wrong, and what the file looks like instead), then reads each tensor's bytes
at the offsets the header gives (every dtype of the format, float8 included, which the package's NumPy
reader lacks); no byte is ever unpickled.

BF16 is ``ml_dtypes.bfloat16``. Tensors of any shape, including 0-d and empty, go in and out bit for
bit. Whole checkpoint directories (single file or sharded) are :mod:`eqxllm.checkpoints.checkpoint_dir`.
"""

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import ml_dtypes
import numpy as np
from jaxtyping import Shaped
from safetensors import SafetensorError
from safetensors.numpy import save_file

from eqxllm.checkpoints.atomic import new_file_mode
from eqxllm.errors import SafetensorsFormatError

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
        raise _error(path, f"header entry {name!r} is {info!r}; expected {{'dtype', 'shape', 'data_offsets'}}")
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
            raise _error(path, f"file is {size} bytes, shorter than the 8-byte header length; not a safetensors file")
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
        raise _error(path, f"header is a JSON {type(header).__name__}, expected an object; not a safetensors file")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _error(path, f"__metadata__ is {metadata!r}; expected an object of strings")
    entries = [_entry(path, name, info) for name, info in header.items()]
    # The data must be tiled exactly by the tensors: no overlap, no gap, nothing missing or left over.
    pos, prev = 0, None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            kind = f"overlaps tensor {prev!r}" if e.begin < pos else f"leaves bytes [{pos}, {e.begin}) unused"
            raise _error(path, f"tensor {e.name!r} at data_offsets [{e.begin}, {e.end}] {kind}; corrupted header")
        pos, prev = e.end, e.name
    found = size - 8 - n
    if pos > found:
        raise _error(path, f"truncated: expected {pos} bytes of data after the header, found {found}")
    if pos < found:
        raise _error(path, f"{found - pos} bytes follow the last tensor's data; the header does not cover them")
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
            e.name: np.asarray(data[layout.data_start + e.begin : layout.data_start + e.end].view(e.dtype)).reshape(
                e.shape
            )
            for e in layout.entries
        }
    out = {}
    try:
        with open(path, "rb") as f:
            for e in layout.entries:
                buf = bytearray(e.end - e.begin)  # writable, so the array is too
                f.seek(layout.data_start + e.begin)
                if f.readinto(buf) != len(buf):
                    raise _error(path, f"ended inside tensor {e.name!r}: the file shrank after its header was read")
                out[e.name] = np.frombuffer(buf, dtype=e.dtype).reshape(e.shape)
    except OSError as e:
        raise _error(path, f"cannot be read ({type(e).__name__}: {e})") from e
    return out


def write_file(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write one safetensors file with the ``safetensors`` package (which aligns each tensor's data) and
    fsync it. ``path`` must not exist yet."""
    if path.exists():
        raise FileExistsError(path)
    try:
        save_file(dict(tensors), str(path), metadata=metadata or None)
    except (SafetensorError, ValueError, TypeError) as e:
        path.unlink(missing_ok=True)
        raise _error(path, f"cannot be written ({type(e).__name__}: {e})") from e
    with open(path, "rb+") as f:
        if hasattr(os, "fchmod"):  # safetensors creates it 0600, whatever the umask
            os.fchmod(f.fileno(), new_file_mode())
        os.fsync(f.fileno())

"""Checkpoint directories: ``model.safetensors``, or shards named by ``model.safetensors.index.json``.

The layout ``transformers`` reads and writes: shards ``model-00001-of-0000N.safetensors`` and an index
``{"metadata": {"total_size": ...}, "weight_map": {key: file}}``. Reading checks that the index stays
inside the directory and agrees with the shards; writing is atomic (a hidden temporary directory,
then ``os.replace``) and never leaves a half-written checkpoint.
"""

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eqxllm.checkpoints import safetensors_io
from eqxllm.checkpoints.atomic import (
    fsync_dir,
    prepare_destination,
    remove_created,
    temporary_folder,
    withdraw_description,
)
from eqxllm.checkpoints.safetensors_io import (
    _DTYPE_NAMES,
    INDEX_FILE,
    SAFE_DTYPES,
    SINGLE_FILE,
    PathLike,
    Tensor,
    read_safetensors,
)
from eqxllm.errors import CheckpointError, MissingKeyError, ShardIndexError

# the files a save writes; stale ones from an earlier save are removed
_OURS = re.compile(r"model\.safetensors(\.index\.json)?|model-\d{5,}-of-\d{5,}\.safetensors")


def _broken_link(path: Path) -> str:
    """Why ``path``, a link whose target is gone, is not a file (a download into the cache was cut short)."""
    return (
        f"{path} is a broken link (to {os.readlink(path)}); the download into the Hugging Face cache is "
        "incomplete: download the repo again"
    )


def _no_weights(directory: Path) -> CheckpointError:
    for name in (SINGLE_FILE, INDEX_FILE):
        if (directory / name).is_symlink() and not (directory / name).exists():
            return CheckpointError(_broken_link(directory / name))
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
        raise ShardIndexError(f"{index}: not valid JSON ({e}); expected {{'weight_map': {{name: file}}}}") from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShardIndexError(f"{index}: expected a non-empty 'weight_map' object of tensor name -> shard file")
    roots, shards = _allowed_roots(index.parent), {}
    for key, name in weight_map.items():
        where = f"{index}: tensor {key!r} is mapped to {name!r}"
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ShardIndexError(f"{where}; a shard must be a file name inside {index.parent}")
        if name in shards:
            continue
        shard = index.parent / name
        if not any(shard.resolve().is_relative_to(r) for r in roots):
            raise ShardIndexError(f"{where}, which resolves to {shard.resolve()}, outside {index.parent}")
        if shard.is_symlink() and not shard.exists():
            raise ShardIndexError(f"{where}, but {_broken_link(shard)}")
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
            f"{index} lists {len(missing)} tensors absent from their shards, e.g. {key!r} in {weight_map[key].name}"
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
    else:  # an integer (NumPy's too); a float, a bool or anything else is refused
        value = int(size) if isinstance(size, int | np.integer) and not isinstance(size, bool) else -1
    if value <= 0:
        raise CheckpointError(f"max_shard_size={size!r}: expected a positive number of bytes or a size like '5GB'")
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


def _write_index(path: Path, index: dict[str, object]) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")  # as transformers writes it
        f.flush()
        os.fsync(f.fileno())


def _replace_files(directory: Path, write: Callable[[Path], list[str]], describing: str | None = None) -> list[Path]:
    """Run ``write(tmp)`` in a hidden folder inside ``directory``, then move the files it names into
    ``directory`` in that order, and remove weight files of an earlier save that were not replaced.
    A failed write leaves ``directory`` as it was (and removes it if this save created it). The file
    ``describing`` is withdrawn (:func:`withdraw_description`) once the write succeeded and before the
    first move; the caller writes it again last."""
    created = prepare_destination(directory)
    try:
        with temporary_folder(directory) as tmp:
            names = write(tmp)
            fsync_dir(tmp)
            withdraw_description(directory, describing)
            for name in names:
                os.replace(tmp / name, directory / name)
    except BaseException:
        remove_created(created)
        raise
    for path in directory.iterdir():
        if _OURS.fullmatch(path.name) and path.name not in names and path.is_file():
            path.unlink()
    fsync_dir(directory)
    return [directory / name for name in names]


def write_checkpoint(
    tensors: dict[str, Tensor],
    directory: PathLike,
    *,
    max_shard_size: int | str | None = "5GB",
    metadata: dict[str, str] | None = None,
    describing: str | None = None,
) -> list[Path]:
    """Save ``tensors`` into ``directory`` as ``transformers`` does: ``model.safetensors``, or when they
    exceed ``max_shard_size`` (``None``: never shard) shards ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json``. ``metadata`` is added to ``{"format": "pt"}``, which
    ``transformers`` requires. Returns the files written, the index last.

    Nothing is written half: every file is written and fsynced in a hidden folder inside ``directory``,
    then moved into place with ``os.replace`` (shards first, the index last); weight files of an earlier
    save that this one does not produce are then removed. If writing fails, ``directory`` is left as it
    was. Each file is replaced atomically; the set of files is not (a crash between two moves can mix
    shards of two saves that have the same shard count). So a caller that writes a config describing
    the weights names it as ``describing``: it is removed before the first move, and the caller writes
    it again after this returns, so that a save cut off midway leaves a folder that does not load.
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
            safetensors_io.write_file(tmp / name, {k: arrays[k] for k in keys}, meta)
        if n == 1:
            return names
        weight_map = {k: name for name, keys in zip(names, shards, strict=True) for k in keys}
        total = sum(a.nbytes for a in arrays.values())
        _write_index(tmp / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        return [*names, INDEX_FILE]

    return _replace_files(directory, write, describing)

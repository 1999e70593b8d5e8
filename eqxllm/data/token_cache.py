"""Tokenize once, memory-map ever after: the stories of a source as one flat array of token ids on disk.

Each story is followed by the end-of-text id, so packed windows see where stories end (as GPT-2 was
trained). The file is named by a hash of the source's fingerprint (file paths, sizes, modification times,
hold-out), the tokenizer's full JSON and the end-of-text id, so a change to any of them makes a new file
and a run that changes none reuses the old one. Ids are stored as ``uint16`` when the vocabulary fits
(GPT-2's 50257 does), else ``uint32``: half the disk and page cache of ``int32``.

A file starts with a 16-byte header, a magic string and the number of ids, written last: a file that
was cut short (a full disk, a copy interrupted) or that is not a cache file is refused on reuse with a
:class:`DataError` naming it, rather than read as a shorter stream.
"""

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from jaxtyping import UInt
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from eqxllm.checkpoints.atomic import temporary_beside
from eqxllm.data.sources import TextSource
from eqxllm.data.tokenizer import eot_id
from eqxllm.errors import DataError

_FORMAT = 2  # bump when the file layout or the tokenization rules change (2: the header)
_HEADER = struct.Struct("<8sQ")  # magic, number of items
_MAGIC = b"eqxllm\x00\x02"


def default_cache_dir() -> Path:
    """``$EQXLLM_TOKEN_CACHE``, else ``$XDG_CACHE_HOME/eqxllm/tokens``, else ``~/.cache/eqxllm/tokens``."""
    if os.environ.get("EQXLLM_TOKEN_CACHE"):
        return Path(os.environ["EQXLLM_TOKEN_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "eqxllm" / "tokens"


def token_dtype(tok: Tokenizer) -> np.dtype:
    """``uint16`` when every id fits (vocabulary of at most 65536), else ``uint32``."""
    return np.dtype(np.uint16 if tok.get_vocab_size(with_added_tokens=True) <= 1 << 16 else np.uint32)


def token_cache_path(
    source: TextSource, tok: Tokenizer, cache_dir: str | Path | None = None, *, eot: int | None = None
) -> Path:
    """Where :func:`cached_tokens` keeps the tokens of ``source`` under ``tok`` (separator ``eot``)."""
    tokenizer_hash = hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
    key = {
        "format": _FORMAT,
        "source": source.fingerprint(),
        "tokenizer": tokenizer_hash,
        "eot": eot_id(tok) if eot is None else eot,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:32]
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return directory / f"{source.split}-{digest}.{token_dtype(tok).name}.bin"


def cached_tokens(
    source: TextSource,
    tok: Tokenizer,
    *,
    cache_dir: str | Path | None = None,
    chunk_size: int = 2048,
    progress: bool = True,
    eot: int | None = None,
) -> UInt[np.ndarray, " tokens"]:
    """The token ids of every story of ``source``, each followed by the end-of-text id, memory-mapped.

    Tokenizes (``tok.encode_batch`` on ``chunk_size`` stories at a time, with a progress bar) only when
    the cache has no file for this source and tokenizer; the file is written to a temporary name and
    renamed, so a crash never leaves a partial cache and concurrent writers (several hosts sharing a
    disk) each leave a whole one. ``eot`` is the separator (default: the tokenizer's ``<|endoftext|>``;
    a pretrained model's end-of-sequence id otherwise). Returns a read-only ``np.memmap`` of ``uint16`` or ``uint32``.
    """
    path = token_cache_path(source, tok, cache_dir, eot=eot)
    dtype = token_dtype(tok)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_beside(path, f".{path.name}.", ".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                begin_cache_file(out)
                count = write_tokens(
                    source.iter_stories(),
                    tok,
                    out,
                    chunk_size=chunk_size,
                    progress=progress,
                    desc=source.split,
                    eot=eot,
                )
                end_cache_file(out, dtype)
            if count == 0:
                raise DataError(
                    f"the {source.split} split of {[str(p) for p in getattr(source, 'files', ())]} holds no stories"
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return open_cache_file(path, dtype)


def begin_cache_file(out: BinaryIO) -> None:
    """Start a cache file: room for its header, which :func:`end_cache_file` fills in."""
    out.write(_HEADER.pack(_MAGIC, 0))


def end_cache_file(out: BinaryIO, dtype: np.dtype) -> int:
    """Write the header of the cache file ``out`` (its number of ``dtype`` items, all written), flush
    and fsync it; returns that number."""
    count = (out.tell() - _HEADER.size) // dtype.itemsize
    out.seek(0)
    out.write(_HEADER.pack(_MAGIC, count))
    out.flush()
    os.fsync(out.fileno())
    return count


def open_cache_file(path: Path, dtype: np.dtype) -> np.memmap:
    """The items of the cache file ``path``, memory-mapped read-only; a file whose header is not ours,
    or whose size is not what the header says, raises :class:`DataError` naming it."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    magic, count = _HEADER.unpack(head) if len(head) == _HEADER.size else (b"", 0)
    size = path.stat().st_size
    if magic != _MAGIC or count == 0 or size != _HEADER.size + count * dtype.itemsize:
        why = "is not an eqxllm cache file" if magic != _MAGIC else f"holds {size} bytes where its header says "
        if magic == _MAGIC:
            why += f"{_HEADER.size + count * dtype.itemsize} ({count} items)"
        raise DataError(f"token cache file {path} {why}: it is damaged; delete it, and the run tokenizes again")
    return np.memmap(path, dtype=dtype, mode="r", offset=_HEADER.size, shape=(count,))


def write_tokens(
    stories: Iterable[str],
    tok: Tokenizer,
    out: BinaryIO,
    *,
    chunk_size: int = 2048,
    progress: bool = True,
    desc: str = "tokenizing",
    eot: int | None = None,
) -> int:
    """Tokenize ``stories`` in chunks and append their ids (each story then end-of-text) to ``out``.

    Returns the number of stories written.
    """
    eot, dtype = (eot_id(tok) if eot is None else eot), token_dtype(tok)
    count = 0
    with tqdm(desc=f"tokenizing {desc}", unit=" stories", disable=not progress) as bar:
        chunk: list[str] = []
        for story in stories:
            chunk.append(story)
            if len(chunk) == chunk_size:
                out.write(_encode_chunk(tok, chunk, eot, dtype).tobytes())
                count, chunk = count + len(chunk), []
                bar.update(chunk_size)
        if chunk:
            out.write(_encode_chunk(tok, chunk, eot, dtype).tobytes())
            count += len(chunk)
            bar.update(len(chunk))
    return count


def _encode_chunk(tok: Tokenizer, stories: list[str], eot: int, dtype: np.dtype) -> np.ndarray:
    # encode_batch runs on all cores in Rust (the _fast variant, tokenizers >= 0.20, skips offsets we never
    # read). The post-processor is skipped (add_special_tokens=False): the separator is ours to place, and a
    # BOS some tokenizers add would land in the middle of packed windows.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    encodings = encode(stories, add_special_tokens=False)
    flat: list[int] = []
    for encoding in encodings:
        flat.extend(encoding.ids)
        flat.append(eot)
    return np.asarray(flat, dtype=dtype)

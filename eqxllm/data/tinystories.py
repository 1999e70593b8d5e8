"""Separated text: where it lives (a local file, a folder, the Hub) and how it splits into records.

This is the ``text`` format of the data sources (:mod:`eqxllm.data.sources`; the other formats go
through Hugging Face ``datasets``, :mod:`eqxllm.data.hf_datasets`): plain UTF-8 text, each record
followed by ``<|endoftext|>``. It needs no optional package, and streams a 2 GB file without copying it.

TinyStories (Eldan & Li, 2023, "TinyStories: How Small Can Language Models Be and Still Speak Coherent
English?", arXiv:2305.07759; Hub dataset ``roneneldan/TinyStories``) is a preset of this format
(:data:`TEXT_PRESETS`): a Hub repository and the file of each version and split. V1 was written by
GPT-3.5 and GPT-4; V2 (``TinyStoriesV2-GPT4-*``) by GPT-4 only.
"""

import codecs
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from eqxllm.checkpoints.hub import download, looks_like_repo_id
from eqxllm.data.layouts import split_files
from eqxllm.errors import ConfigError, DataError

EOT = "<|endoftext|>"
HUB_DATASET = "roneneldan/TinyStories"

Split = Literal["train", "validation"]
Version = Literal["v1", "v2"]

HUB_FILES: dict[tuple[str, str], str] = {
    ("v1", "train"): "TinyStories-train.txt",
    ("v1", "validation"): "TinyStories-valid.txt",
    ("v2", "train"): "TinyStoriesV2-GPT4-train.txt",
    ("v2", "validation"): "TinyStoriesV2-GPT4-valid.txt",
}


@dataclass(frozen=True)
class TextPreset:
    """A Hub dataset repository of separated text files: the file of each ``(version, split)``."""

    repo_id: str
    files: Mapping[tuple[str, str], str]


TINYSTORIES = TextPreset(HUB_DATASET, HUB_FILES)
# ``--data NAME``: named sources; any other Hub dataset id is read as laid out like TinyStories
TEXT_PRESETS: dict[str, TextPreset] = {"hub": TINYSTORIES, "tinystories": TINYSTORIES}

_BLOCK = 1 << 24  # bytes read at a time: stories stream, so a 2 GB file never sits in memory twice


def resolve_text_files(
    data: str | Path | None = None,
    *,
    split: Split = "train",
    version: Version = "v1",
    revision: str | None = None,
) -> list[Path]:
    """The local text files holding one split of the stories.

    ``data`` is a ``.txt`` file, a folder of ``.txt`` files, ``None`` or a name of :data:`TEXT_PRESETS`
    (``"hub"``, ``"tinystories"``: the Hub dataset ``roneneldan/TinyStories``) or another Hub dataset
    id laid out the same way. Hub files are fetched
    with ``hf_hub_download`` into the Hub cache (``HF_HOME`` / ``HF_HUB_CACHE``; offline with
    ``HF_HUB_OFFLINE=1``). In a folder, files named ``valid``, ``validation``, ``val`` or ``dev`` as a word
    (else ``test``) are the validation split and the rest are the training split
    (:func:`eqxllm.data.layouts.split_files`, the rule of every data folder).

    Returns an empty list when a local source has no separate validation text: carve one from the
    training stories with :func:`train_val_split`.
    """
    if data is None:
        data = "hub"
    preset = TEXT_PRESETS.get(str(data).lower())
    if preset is not None:
        return [_hub_file(preset, split, version, revision)]
    path = Path(data).expanduser()
    if path.is_file():
        return [path] if split == "train" else []
    if path.is_dir():
        return _folder_files(path, split)
    if looks_like_repo_id(data):
        return [_hub_file(TextPreset(str(data), HUB_FILES), split, version, revision)]
    raise DataError(
        f"data {str(data)!r} is neither an existing file or folder nor a Hub dataset id; "
        f"pass a .txt file, a folder of .txt files, or one of {sorted(TEXT_PRESETS)}"
    )


def _hub_file(preset: TextPreset, split: Split, version: Version, revision: str | None) -> Path:
    return download(preset.repo_id, preset.files[(version, split)], repo_type="dataset", revision=revision)


def _folder_files(folder: Path, split: Split) -> list[Path]:
    texts = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    if not texts:
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise DataError(f"folder {folder} holds no .txt files (found: {found or 'nothing'})")
    train, validation = split_files(folder, texts)
    return validation if split == "validation" else train


def iter_stories(path: str | Path) -> Iterator[str]:
    """Stream the stories of one file: split on ``<|endoftext|>``, strip whitespace, drop empty pieces.

    When the file has separators but does not end with one, the text after the last separator is a story
    cut off mid-way (as in a prefix of the full dataset) and is dropped. A file without any separator is
    one story. The path is checked now; decoding errors surface while iterating.

    Raises :class:`DataError` (naming the path) for a missing path, an empty file, a file with no
    complete story, or bytes that are not UTF-8 (with their byte offset).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"data path {path} is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes); expected stories separated by {EOT!r}")
    return _stories(path)


def _stories(path: Path) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending, fed, separators, count, any_text = "", 0, False, 0, False
    with path.open("rb") as f:
        while True:
            block = f.read(_BLOCK)
            buffered = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                offset = fed - buffered + e.start  # e.start counts from the decoder's carried-over bytes
                bad = e.object[e.start : e.start + 4]
                raise DataError(
                    f"data file {path} is not valid UTF-8: byte {offset} ({bad!r}) "
                    f"{e.reason}; re-encode the file as UTF-8"
                ) from None
            if fed == 0:  # a byte-order mark some editors write is not text (as datasets drops it)
                text = text.removeprefix("\ufeff")
            fed += len(block)
            pieces = (pending + text).split(EOT)
            separators = separators or len(pieces) > 1
            for piece in pieces[:-1]:
                story = piece.strip()
                if story:
                    count += 1
                    yield story
            pending = pieces[-1]
            any_text = any_text or bool(text.strip())
            if not block:
                break
    tail = pending.strip()
    if tail and not separators:
        yield tail
        return
    if count == 0:
        if not any_text:
            raise DataError(f"data file {path} is empty (only whitespace); expected stories separated by {EOT!r}")
        why = "only a truncated story after its last separator" if tail else f"only {EOT!r} separators"
        raise DataError(f"data file {path} holds no complete story ({why})")


def read_stories(path: str | Path) -> list[str]:
    """All complete stories of one file, in order (see :func:`iter_stories` for the rules and errors)."""
    return list(iter_stories(path))


def read_all_stories(paths: Sequence[Path]) -> list[str]:
    """The stories of several files, file by file in the given order."""
    return [story for path in paths for story in iter_stories(path)]


def train_val_split(stories: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out ``round(val_fraction * len(stories))`` stories (at least one) for validation.

    Which stories are held out depends only on ``(len(stories), val_fraction, seed)``; both parts keep the
    original order. Returns ``(train, validation)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(stories)
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DataError(
            f"cannot hold out {n_val} of {n} stories for validation and keep any for training; "
            "give more stories or a separate validation file"
        )
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    train = [s for s, h in zip(stories, held, strict=True) if not h]
    val = [s for s, h in zip(stories, held, strict=True) if h]
    return train, val

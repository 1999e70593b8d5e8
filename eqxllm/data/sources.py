"""One split of the stories as a value: which files, and which part of them when validation is carved out.

Every format of training text (separated ``.txt`` here, JSON/Parquet/CSV/Hub datasets in
:mod:`eqxllm.data.hf_datasets`) is read through the one :class:`TextSource` interface, and local files
are identified the same way (:func:`file_identity`). A :class:`StorySource` is what the token cache keys on: its :meth:`~StorySource.fingerprint` names the
files by path, size and modification time (cheap for a 2 GB file, and a Hub cache file's resolved path
already holds its content hash) and the hold-out that picked the stories.
"""

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from eqxllm.data.tinystories import (
    Split,
    Version,
    iter_stories,
    read_all_stories,
    resolve_text_files,
    train_val_split,
)
from eqxllm.errors import DataError


@runtime_checkable
class TextSource(Protocol):
    """What the token cache needs of a split: its name, its texts in order, and a JSON-able identity
    (:class:`StorySource` for text files, :class:`eqxllm.data.hf_datasets.DatasetSource` for ``datasets``)."""

    @property
    def split(self) -> Split: ...

    def iter_stories(self) -> Iterator[str]: ...

    def stories(self) -> list[str]: ...

    def fingerprint(self) -> dict[str, object]: ...


def file_identity(paths: Iterable[Path]) -> list[dict[str, object]]:
    """Each file's resolved path, size and modification time: what the token cache keys a local source on
    (every format alike), so that replacing, editing or touching a file retokenizes it."""
    out = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as e:
            raise DataError(f"data file {path} cannot be read: {e.strerror}") from e
        out.append({"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


@dataclass(frozen=True)
class Holdout:
    """A validation split carved from the training files by :func:`train_val_split`."""

    val_fraction: float
    seed: int


@dataclass(frozen=True)
class StorySource:
    """The stories of ``split``: all of ``files``, or, with a ``holdout``, its ``split`` part of them."""

    files: tuple[Path, ...]
    split: Split
    holdout: Holdout | None = None

    def iter_stories(self) -> Iterator[str]:
        """The stories in order; streamed file by file unless a hold-out needs them all at once."""
        if self.holdout is None:
            return (story for path in self.files for story in iter_stories(path))
        train, val = train_val_split(read_all_stories(self.files), self.holdout.val_fraction, self.holdout.seed)
        return iter(val if self.split == "validation" else train)

    def stories(self) -> list[str]:
        """The stories as a list."""
        return list(self.iter_stories())

    def fingerprint(self) -> dict[str, object]:
        """A JSON-able identity: changes when a file is replaced, edited or touched, or the split changes."""
        files = file_identity(self.files)
        holdout = None if self.holdout is None else [self.holdout.val_fraction, self.holdout.seed]
        return {"files": files, "split": self.split, "holdout": holdout}


def story_sources(
    data: str | Path | None = None,
    *,
    version: Version = "v1",
    val_fraction: float = 0.01,
    seed: int = 0,
    revision: str | None = None,
) -> dict[Split, StorySource]:
    """The training and validation sources of ``data`` (see :func:`resolve_text_files`).

    When ``data`` has no validation text of its own (a single file, a folder without one), a
    ``val_fraction`` of the training stories is held out with ``seed``, the same stories on every run.
    """
    train_files = tuple(resolve_text_files(data, split="train", version=version, revision=revision))
    val_files = tuple(resolve_text_files(data, split="validation", version=version, revision=revision))
    if val_files:
        return {
            "train": StorySource(train_files, "train"),
            "validation": StorySource(val_files, "validation"),
        }
    holdout = Holdout(val_fraction, seed)
    return {
        "train": StorySource(train_files, "train", holdout),
        "validation": StorySource(train_files, "validation", holdout),
    }

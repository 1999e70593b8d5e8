"""Local data folders: which files hold which split, and where a ``datasets`` folder keeps its files.

One rule names the splits of every local folder, separated text (:mod:`eqxllm.data.tinystories`) and
``datasets`` files (:mod:`eqxllm.data.hf_datasets`) alike, and it is the Hub's (``datasets.data_files``'
split keywords): a file is validation when its path inside the folder has ``validation``, ``valid``,
``val`` or ``dev`` as a word, and test when it has ``test``, ``testing``, ``eval`` or ``evaluation``; a
word is bounded by the start or end, ``-``, ``_``, ``.``, a space, a digit or ``/``. So
``contest_valid.jsonl``, ``dev-0.parquet`` and ``data/validation-00000-of-00001.parquet`` are validation,
and ``interval.jsonl``, ``latest.jsonl``, ``invalid_removed.jsonl`` and ``contest_2023.jsonl`` are training.
A folder's validation files are its validation-named files, or its test-named ones when it has none; test
files beside validation files belong to no split (they are never trained on). The rest are training files,
and a folder without any is refused: validation text is never read as training text.

A ``datasets`` folder is laid out in one of the ways ``datasets`` writes or the Hub serves them: data files
at the top; a Hub snapshot (``README.md`` and ``data/train-00000-of-00001.parquet``, or folders named for a
split); or a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` folder (Arrow files beside
``state.json`` and ``dataset_info.json``, or ``dataset_dict.json``), which only ``datasets.load_from_disk``
reads.
"""

import json
import re
from collections.abc import Sequence
from pathlib import Path

from eqxllm.errors import DataError

_WORD_EDGE = r"[-_. 0-9/]"


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|{_WORD_EDGE})(?:{'|'.join(words)})(?:{_WORD_EDGE}|$)", re.IGNORECASE)


_VALIDATION = _words("validation", "valid", "val", "dev")
_TEST = _words("test", "testing", "eval", "evaluation")
_TRAIN = _words("train", "training")
# what save_to_disk and older Hub snapshots write beside the data: metadata, never records
_METADATA = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"}


def split_files(folder: Path, files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``(train, validation)``: ``files`` (inside ``folder``, in order) split by their names (see the module
    docstring). Raises :class:`DataError` when no file is left for training."""
    names = [p.relative_to(folder).as_posix() for p in files]
    val = [p for p, n in zip(files, names, strict=True) if _VALIDATION.search(n)]
    test = [p for p, n in zip(files, names, strict=True) if p not in val and _TEST.search(n)]
    train = [p for p in files if p not in val and p not in test]
    if not train:
        raise DataError(
            f"data folder {folder} holds only validation files {names} (names with 'validation', 'valid', 'val', "
            "'dev', 'test' or 'eval' as a word); add a training file, or rename the one to train on"
        )
    return train, val or test


def saved_dataset_splits(folder: Path) -> list[str] | None:
    """The splits of a ``save_to_disk`` folder (a single ``Dataset`` is read as a ``train`` split), or
    ``None`` when ``folder`` is not one."""
    if not folder.is_dir():
        return None
    if (folder / "dataset_dict.json").is_file():
        try:
            return list(json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{folder / 'dataset_dict.json'} is not a DatasetDict.save_to_disk index ({e})") from e
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return ["train"]
    return None


def data_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes``: those at its top, or, when there are none, those of
    its Hub layout (in ``data/``, in folders named for a split, and in ``data/``'s split folders)."""
    found = _files_in(folder, suffixes)
    if found:
        return found
    below = [d for d in _subfolders(folder) if d.name.lower() == "data" or _split_folder(d.name)]
    below += [d for d in _subfolders(folder / "data") if _split_folder(d.name)]
    return sorted(p for d in below for p in _files_in(d, suffixes))


def _files_in(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and p.name not in _METADATA
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []


def _split_folder(name: str) -> bool:
    return any(rule.search(name) for rule in (_TRAIN, _VALIDATION, _TEST))

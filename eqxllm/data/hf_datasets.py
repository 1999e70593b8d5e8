"""Training text through Hugging Face ``datasets`` (Lhoest et al., 2021): local JSON Lines, JSON, Parquet,
CSV or text files (a file, a folder, a Hub snapshot's folder), a ``save_to_disk`` folder, or a Hub dataset
id (through the ``datasets`` cache; offline with ``HF_HUB_OFFLINE=1``).

A :class:`DatasetSource` is one split, read as records in a fixed order, and plays the part of a
:class:`eqxllm.data.sources.StorySource` for the token cache: its :meth:`~DatasetSource.iter_stories`
yields each record's ``text_field`` (or prompt + completion), and its fingerprint names the files
(path, size, modification time) or the Hub id with its cache fingerprint, the fields and the hold-out.
With ``prompt_field`` and ``completion_field`` each record is a pair, and :meth:`iter_examples`
yields them for a loss on the completion only. A field must hold strings or chat messages; a number
is refused, not trained on as its Python ``repr``.

Chat messages (lists of ``{"role": ..., "content": ...}``, the conversational formats of TRL's
``SFTTrainer``) are laid out by the chat template of the run's tokenizer (:mod:`eqxllm.data.chat`, given
as :attr:`DatasetSource.chat`): a ``text_field`` of messages is one whole conversation (loss on every
token); a ``prompt_field`` and ``completion_field`` of messages are the conversation so far and its
reply, and the completion is the text the template adds for the reply after the prompt's generation
header (loss on the reply and the end of its turn only). A template that lays the prompt out otherwise
when a reply follows (one that drops earlier turns' reasoning, say) is refused: the completion would not
be the reply.

The validation split is the dataset's own (a folder's files named for it, by the rule of
:mod:`eqxllm.data.layouts`; a saved or Hub dataset's ``validation``, ``valid``, ``dev`` or ``test``
split), or a deterministic ``val_fraction`` of the training records: record ``i`` is held out when a hash
of ``(seed, i)`` falls below the fraction, decided in one pass, so streaming needs no count up front.
``streaming=True`` reads records lazily (``load_dataset(..., streaming=True)``): a set larger than memory
is tokenized once into the cache without ever being held whole.
"""

import hashlib
import json
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqxllm.checkpoints.hub import looks_like_repo_id
from eqxllm.checkpoints.hub import offline_requested as offline
from eqxllm.data.chat import ChatTemplates, render_chat
from eqxllm.data.layouts import data_files, saved_dataset_splits, split_files
from eqxllm.data.sources import file_identity
from eqxllm.data.tinystories import Split
from eqxllm.errors import DataError, InputError

# file suffix -> the ``datasets`` builder that reads it
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
VALIDATION_SPLITS = ("validation", "valid", "dev", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """What to read: ``source`` (file, folder or Hub id) and which fields of each record."""

    source: str
    text_field: str = "text"
    prompt_field: str | None = None
    completion_field: str | None = None
    streaming: bool = False
    val_fraction: float = 0.01
    seed: int = 0

    @property
    def paired(self) -> bool:
        return self.prompt_field is not None

    def __post_init__(self):
        if (self.prompt_field is None) != (self.completion_field is None):
            raise DataError("--data.prompt-field and --data.completion-field go together; give both or neither")


_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")  # which datasets decompresses by itself


def dataset_suffix(path: Path) -> str:
    """The suffix that names ``path``'s format: ``.jsonl`` for ``notes.jsonl`` and ``notes.jsonl.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[-2] if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED else path.suffix.lower()


def is_dataset_file(path: Path) -> bool:
    return dataset_suffix(path) in BUILDERS and dataset_suffix(path) != ".txt"


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of ``datasets`` files (in one of the layouts of :mod:`eqxllm.data.layouts`)."""
    if saved_dataset_splits(path) is not None:
        return True
    return path.is_dir() and any(is_dataset_file(p) for p in data_files(path, tuple(BUILDERS)))


def _local_files(path: Path) -> tuple[list[Path], list[Path]]:
    """``(train, validation)`` files of a local file or folder (split by :func:`~eqxllm.data.layouts.split_files`)."""
    if path.is_file():
        return [path], []
    files = data_files(path, tuple(BUILDERS))
    kinds = {p.suffix.lower() for p in files}
    if not files:
        found = sorted(p.name for p in path.iterdir())[:10]
        raise DataError(
            f"data folder {path} holds no {sorted(BUILDERS)} files, at its top or in a Hub layout's data/ or "
            f"split folders (found: {found or 'nothing'}); pass the folder that holds them"
        )
    if len({BUILDERS[k] for k in kinds}) > 1:
        raise DataError(f"data folder {path} mixes file kinds {sorted(kinds)}; keep one kind per folder")
    return split_files(path, files)


@contextmanager
def _offline_if_asked():
    """``datasets`` reads ``HF_HUB_OFFLINE`` once at import; honour the value as it is now."""
    if not offline():
        yield
        return
    import datasets.config as datasets_config
    import huggingface_hub.constants as hub_constants

    saved = datasets_config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets_config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets_config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _load(spec: DatasetSpec, split: str, files: list[Path] | None, saved: Path | None = None) -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - an optional dependency
        raise DataError("reading JSON/Parquet/CSV or Hub datasets needs `pip install eqxllm[data]`") from e
    datasets.disable_progress_bars()
    if files is not None and all(p.stat().st_size == 0 for p in files):
        raise DataError(f"dataset {spec.source!r} is empty ({[str(p) for p in files]} hold no bytes); give records")
    try:
        with _offline_if_asked():
            if saved is not None:
                data = datasets.load_from_disk(str(saved))
                data = data[split] if isinstance(data, datasets.DatasetDict) else data
                return data.to_iterable_dataset() if spec.streaming else data
            if files is not None:
                builder = BUILDERS[dataset_suffix(files[0])]
                return datasets.load_dataset(
                    builder, data_files={split: [str(p) for p in files]}, split=split, streaming=spec.streaming
                )
            return datasets.load_dataset(spec.source, split=split, streaming=spec.streaming)
    except (ConnectionError, FileNotFoundError) as e:
        if offline():
            raise DataError(
                f"dataset {spec.source!r} is not in the datasets cache and offline mode is on (HF_HUB_OFFLINE=1); "
                f"load it once online or unset HF_HUB_OFFLINE ({e})"
            ) from e
        raise DataError(f"dataset {spec.source!r} cannot be loaded: {e}") from e
    except UnicodeDecodeError as e:  # (a ValueError)
        raise DataError(not_utf8(spec, e)) from e
    except ValueError as e:  # an unknown split, or a file with a header and no rows
        if "corresponds to no data" in str(e):
            raise DataError(f"dataset {spec.source!r} is empty: its {split} split has no records") from e
        raise DataError(f"dataset {spec.source!r} has no split {split!r}: {e}") from e
    except Exception as e:  # the builders raise their own types for malformed files
        if type(e).__module__.startswith(("datasets", "pyarrow", "pandas", "json")):
            cause = e.__cause__ or e.__context__  # datasets wraps the reason ("An error occurred ...")
            why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            raise DataError(f"dataset {spec.source!r} cannot be read: {type(e).__name__}: {e}{why}") from e
        raise


def not_utf8(spec: DatasetSpec, e: UnicodeDecodeError) -> str:
    return f"dataset {spec.source!r} is not valid UTF-8 ({e}); re-encode its files as UTF-8"


def records(spec: DatasetSpec, data: Any) -> Iterator[dict[str, Any]]:
    """The records of ``data`` in order; bytes that are not UTF-8 (which pyarrow lets through until a
    record is read) are a :class:`DataError` naming the dataset, not a ``UnicodeDecodeError``."""
    try:
        yield from data
    except UnicodeDecodeError as e:
        raise DataError(not_utf8(spec, e)) from e


def _hub_splits(spec: DatasetSpec) -> list[str]:
    import datasets

    with _offline_if_asked():
        try:
            return list(datasets.get_dataset_split_names(spec.source))
        except Exception as e:
            if offline():
                raise DataError(
                    f"dataset {spec.source!r} is not in the datasets cache and offline mode is on "
                    f"(HF_HUB_OFFLINE=1); load it once online or unset HF_HUB_OFFLINE ({type(e).__name__})"
                ) from e
            raise DataError(f"dataset {spec.source!r} cannot be found: {e}") from e


def is_chat(value: Any) -> bool:
    """Whether ``value`` is a list of chat messages (dicts with a ``"role"``), not text."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def _held_out(seed: int, index: int, fraction: float) -> bool:
    return zlib.crc32(f"{seed}:{index}".encode()) < fraction * 2**32


@dataclass(frozen=True)
class DatasetSource:
    """One split of a ``datasets`` source: records in a fixed order, read again on each pass."""

    spec: DatasetSpec
    split: Split
    files: tuple[Path, ...] = ()
    dataset_split: str = "train"
    holdout: bool = False
    """True: this split is carved from ``dataset_split`` by the hash hold-out."""
    saved: Path | None = None
    """A ``save_to_disk`` folder, read with ``datasets.load_from_disk``."""
    chat: ChatTemplates | None = None
    """The chat templates of the run's tokenizer, for records whose fields hold chat messages."""

    def _open(self) -> Any:
        return _load(self.spec, self.dataset_split, list(self.files) if self.files else None, self.saved)

    def _records(self) -> Iterator[dict[str, Any]]:
        data = self._open()
        self._check_fields(data)
        for i, record in enumerate(records(self.spec, data)):
            if self.holdout and _held_out(self.spec.seed, i, self.spec.val_fraction) != (self.split == "validation"):
                continue
            yield record

    def _fields(self) -> tuple[str, ...]:
        s = self.spec
        return (s.prompt_field, s.completion_field) if s.paired else (s.text_field,)  # type: ignore[return-value]

    def _check_fields(self, data: Any) -> None:
        names = getattr(data, "column_names", None)
        if names is None:  # a streamed JSON file may not know its columns before the first record
            first = next(records(self.spec, data), None)
            names = [] if first is None else list(first)
        missing = [f for f in self._fields() if f not in names]
        if missing and names:
            flag = "--data.text-field" if not self.spec.paired else "--data.prompt-field/--data.completion-field"
            raise DataError(
                f"dataset {self.spec.source!r} has no field {missing[0]!r}; its records have {sorted(names)}; "
                f"name the right one with {flag}"
            )

    def holds_chat(self) -> bool:
        """Whether the first record's fields hold chat messages rather than text."""
        first = next(records(self.spec, self._open()), None)
        return first is not None and any(is_chat(first.get(f)) for f in self._fields())

    def iter_examples(self) -> Iterator[tuple[str, str]]:
        """``(prompt, completion)`` of every record (paired sources only); a record whose prompt or
        completion is null is skipped, and the skipped are counted in a warning."""
        count = skipped = 0
        for record in self._records():
            fields = self._fields()
            values = [record[f] for f in fields]
            if any(is_chat(v) for v in values) and None not in values:
                prompt, completion = self._chat_pair(*values)
            else:
                if self.chat is not None and None not in values:  # the run is laid out for chat records
                    raise DataError(
                        f"dataset {self.spec.source!r} mixes chat records and plain text ({repr(values)[:80]}): "
                        "its first record holds chat messages, and chat replies are packed without an end token; "
                        "write every record one way"
                    )
                prompt, completion = (self._text(record, f) for f in fields)
            if prompt is None or completion is None:
                skipped += 1
                continue
            count += 1
            yield prompt, completion
        self._check_count(count)
        self._say_skipped(skipped, count)

    def iter_stories(self) -> Iterator[str]:
        """The text of every record (prompt followed by completion for paired sources)."""
        if self.spec.paired:
            yield from (p + c for p, c in self.iter_examples())
            return
        count = skipped = 0
        for record in self._records():
            text = self._text(record, self.spec.text_field)
            if text is None or text == "":
                skipped += text is None
                continue
            count += 1
            yield text
        self._check_count(count)
        self._say_skipped(skipped, count)

    def _say_skipped(self, skipped: int, count: int) -> None:
        if skipped:
            warnings.warn(
                f"dataset {self.spec.source!r}: {skipped} of the {skipped + count} records of its {self.split} "
                f"split have a null {' or '.join(repr(f) for f in self._fields())} and were skipped",
                stacklevel=3,
            )

    def _text(self, record: dict[str, Any], field: str) -> str | None:
        """``record[field]``: a string, None, or chat messages laid out as one whole conversation; anything
        else (a number) is refused rather than trained on as its Python ``repr``."""
        value = record[field]
        if value is None or isinstance(value, str):
            return value
        if is_chat(value):
            return self._render(value, add_generation_prompt=False)
        raise DataError(
            f"dataset {self.spec.source!r}: field {field!r} holds {type(value).__name__} values, not text "
            f"(such as {repr(value)[:80]}); name a field of strings or of chat messages"
        )

    def _render(self, messages: list, *, add_generation_prompt: bool) -> str:
        if self.chat is None:
            raise DataError(
                f"dataset {self.spec.source!r} holds chat messages (such as {repr(messages)[:80]}), which are laid "
                "out by the chat template of the run's tokenizer; this run has none: start from an instruct "
                "checkpoint (--init-from) or name a tokenizer with a chat template (--data.tokenizer). (A run "
                "reads the first record to know: records that mix chat messages and plain text are refused.)"
            )
        try:
            return render_chat(self.chat, messages, add_generation_prompt=add_generation_prompt)
        except InputError as e:
            raise DataError(f"dataset {self.spec.source!r}: {e} (messages {repr(messages)[:80]})") from e

    def _chat_pair(self, prompt: Any, completion: Any) -> tuple[str, str]:
        """The prompt's conversation with the assistant's generation header, and the text the template
        adds after it for the completion's messages (the reply and the end of its turn)."""
        if not (is_chat(prompt) and is_chat(completion)):
            raise DataError(
                f"dataset {self.spec.source!r}: a record's prompt and completion must both be chat messages or "
                f"both text, got {type(prompt).__name__} and {type(completion).__name__} "
                f"(such as {repr(completion)[:80]})"
            )
        head = self._render(prompt, add_generation_prompt=True)
        whole = self._render([*prompt, *completion], add_generation_prompt=False)
        if not whole.startswith(head):
            there = slice(max(0, len(head) - 60), len(head))
            raise DataError(
                f"dataset {self.spec.source!r}: the chat template lays the prompt out differently once a reply "
                f"follows it, so the completion is not a continuation of the prompt (the prompt ends "
                f"{head[there]!r}, the conversation has {whole[there]!r} there); write such records as one "
                "conversation in --data.text-field instead"
            )
        return head, whole[len(head) :]

    def _check_count(self, count: int) -> None:
        if count == 0 and self.holdout and self.split == "validation":
            raise DataError(
                f"the hold-out of {self.spec.val_fraction:g} of dataset {self.spec.source!r} took none of its "
                "records for validation; raise --data.val-fraction, or pass a folder that also holds a validation "
                "file (named 'valid', 'dev' or 'test' as a word)"
            )
        if count == 0:
            raise DataError(
                f"the {self.split} split of dataset {self.spec.source!r} is empty"
                + (" (every record was held out for validation)" if self.holdout else "")
                + "; give a dataset with records"
                + (" or a smaller --data.val-fraction" if self.holdout else "")
            )

    def stories(self) -> list[str]:
        return list(self.iter_stories())

    def fingerprint(self) -> dict[str, object]:
        s = self.spec
        out: dict[str, object] = {
            "datasets": True,
            "split": self.split,
            "dataset_split": self.dataset_split,
            "fields": list(self._fields()),
            "paired": s.paired,
            "holdout": [s.val_fraction, s.seed] if self.holdout else None,
        }
        if self.chat is not None:  # another template lays the same messages out as other text
            laid_out = json.dumps([self.chat.templates, self.chat.special_tokens], sort_keys=True)
            out["chat"] = hashlib.sha256(laid_out.encode("utf-8")).hexdigest()
        if self.saved is not None:  # a DatasetDict keeps each split in a folder of its own
            root = self.saved / self.dataset_split
            root = root if root.is_dir() else self.saved
            out["files"] = file_identity(sorted(p for p in root.rglob("*") if p.is_file()))
        elif self.files:
            out["files"] = file_identity(self.files)
        else:  # a Hub dataset: its id, and the cache's content fingerprint when it is materialised
            out["hub"] = s.source
            if not s.streaming:
                out["cache"] = getattr(_load(s, self.dataset_split, None), "_fingerprint", None)
        return out


def dataset_sources(spec: DatasetSpec) -> dict[Split, DatasetSource]:
    """The training and validation sources of ``spec`` (see the module docstring)."""
    path = Path(spec.source).expanduser()
    saved = saved_dataset_splits(path)
    if saved is not None:
        return _named_splits(spec, saved, path)
    if path.exists():
        train, validation = _local_files(path)
        if validation:
            return {
                "train": DatasetSource(spec, "train", tuple(train)),
                "validation": DatasetSource(spec, "validation", tuple(validation), "validation"),
            }
        train = tuple(train)
        return {
            "train": DatasetSource(spec, "train", train, holdout=True),
            "validation": DatasetSource(spec, "validation", train, holdout=True),
        }
    if not looks_like_repo_id(spec.source):
        raise DataError(f"data {spec.source!r} is neither an existing file or folder nor a Hub dataset id")
    return _named_splits(spec, _hub_splits(spec))


def _named_splits(spec: DatasetSpec, splits: list[str], saved: Path | None = None) -> dict[Split, DatasetSource]:
    """A Hub or ``save_to_disk`` dataset's ``train`` split, and its validation split, else a hold-out."""
    if "train" not in splits:
        raise DataError(f"dataset {spec.source!r} has no 'train' split (it has {splits})")
    val = next((s for s in VALIDATION_SPLITS if s in splits), None)
    if val is None:
        return {s: DatasetSource(spec, s, holdout=True, saved=saved) for s in ("train", "validation")}
    return {
        "train": DatasetSource(spec, "train", saved=saved),
        "validation": DatasetSource(spec, "validation", dataset_split=val, saved=saved),
    }

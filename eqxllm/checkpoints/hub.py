"""The Hugging Face Hub: what a user passes (a local directory or a repo id) made a local folder or file,
with one offline decision and one error policy for checkpoints and data.

:func:`resolve_pretrained` turns what ``from_pretrained`` gets into a local checkpoint directory holding
``config.json`` (``snapshot_download`` of the files a checkpoint needs: safetensors weights, never
``pytorch_model.bin``); :func:`download` fetches one file of a dataset (or a tokenizer's model repo).
Both go through the Hub cache, so ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` behave as they
do for ``transformers``: a repo already in the cache resolves offline. The environment is read at call
time, not at import time as ``huggingface_hub.constants`` does, so a process (or a test) that sets it
after importing eqxllm still gets what it asked for.

One attempt: when ``HF_HUB_OFFLINE`` is set or the Hub's host cannot be reached (probed once per
process), only the cache is read, never a retried download. A failure is reported once, naming the
repo (and file) and saying what to do: :class:`CheckpointError` for a checkpoint, :class:`DataError`
for data (:class:`HubFileMissing` when the repo, or offline the cache, lacks the file).
"""

import contextlib
import functools
import importlib
import logging
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from eqxllm.errors import CheckpointError, DataError

DEFAULT_PATTERNS: tuple[str, ...] = (
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_templates/*.jinja",
)

# `owner/name` or a bare `name`, as the Hub spells repository ids (no path separators beyond one slash).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class HubFileMissing(DataError):
    """The repository exists (or is cached) but does not hold the requested file."""


def _network_errors() -> tuple[type[Exception], ...]:
    """Transport errors of the HTTP client this huggingface_hub uses; they are not OSErrors."""
    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


# Every error a Hub download raises for an unreachable, unknown or uncached repo or file.
_HUB_ERRORS = (HFValidationError, EntryNotFoundError, OSError, *_network_errors())


# the offline decision -------------------------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, or as it was when the Hub was imported."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE


def hub_offline() -> bool:
    """Whether Hub lookups must stay in the cache: offline is requested (:func:`offline_requested`), or
    the Hub's host cannot be reached at all."""
    return offline_requested() or not _reachable(constants.ENDPOINT)


@functools.cache
def _reachable(endpoint: str) -> bool:
    """One TCP connection to the Hub (3 s at most), once per process: without a network,
    huggingface_hub would otherwise retry each file for about 25 s, warning at every try."""
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=3):
            return True
    except OSError:
        return False


def hub_cache_dir() -> Path:
    """The Hub cache folder: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    home = os.environ.get("HF_HOME", os.path.join(xdg, "huggingface"))
    return Path(os.path.expandvars(home)).expanduser() / "hub"


@contextlib.contextmanager
def quiet_hub():
    """Silence huggingface_hub's per-retry warnings; a failure is reported once, by eqxllm."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# the error policy -----------------------------------------------------------------------------------
def _hint(err: Exception, cache: Path, instead: str) -> str:
    """What went wrong, and what to do about it; ``instead`` is the local alternative."""
    if isinstance(err, GatedRepoError):  # before RepositoryNotFoundError, its base class
        return "it is gated: accept its license on huggingface.co and log in (`hf auth login`)"
    if isinstance(err, RepositoryNotFoundError):
        return f"check the id (and log in with `hf auth login` if it is private), or {instead}"
    if isinstance(err, RevisionNotFoundError):
        return "the repo has no such branch, tag or commit; check the revision"
    if isinstance(err, HFValidationError):
        return "it is neither an existing directory nor a valid repo id ('name' or 'org/name')"
    if isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError):
        return f"the repo holds no such file; check the name, or {instead}"
    if offline_requested():
        return (
            f"it is not in the cache {cache} and HF_HUB_OFFLINE=1 forbids downloading it: set HF_HUB_OFFLINE=0, "
            f"download it where the Hub is reachable (HF_HOME / HF_HUB_CACHE select the cache), or {instead}"
        )
    return (
        f"it is not (completely) in the cache {cache} and the Hub could not be reached: check the network "
        f"and the id, or {instead}"
    )


def _repo(repo_id: str, repo_type: str | None, revision: str | None) -> str:
    return f"the Hub {repo_type or 'model'} repository {repo_id!r}" + (f" at revision {revision!r}" if revision else "")


# local paths or repo ids ----------------------------------------------------------------------------
def _path_reason(text: str) -> str | None:
    """Why ``text`` reads as a local path rather than a repo id (``name`` or ``org/name``), or None."""
    if text.startswith((".", "/", "~")):
        return f"it starts with {text[0]!r}"
    if text.count("/") > 1 or "\\" in text or (os.sep != "/" and os.sep in text):
        return "it has more separators than a repo id 'org/name'"
    head = text.split("/")[0]
    if "/" in text and Path(head).is_dir():
        return f"{head!r} is a local directory"
    return None


def looks_like_repo_id(src: str | Path) -> bool:
    """Whether ``src`` reads as a Hub repository id rather than a local path (check local paths first);
    a ``.txt`` or ``.json`` name is a file that is missing, not a repo."""
    if isinstance(src, Path) or src.endswith((".txt", ".json")):
        return False
    return _path_reason(src) is None and bool(_REPO_ID.match(src))


def _local_dir(path: Path, why: str) -> Path:
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such directory (read as a local path because {why}); pass an existing checkpoint "
            "directory, or a Hub repo id such as 'gpt2' or 'google/gemma-2b'"
        )
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; pass the directory that holds config.json and the weights")
    if not (path / "config.json").is_file() and (path / "run_config.json").is_file():
        # a training run (eqxllm train --out DIR): its exported model is DIR/model
        if (path / "model" / "config.json").is_file():
            return path / "model"
        raise CheckpointError(
            f"{path} is a training run that has not exported a model yet (no {path / 'model' / 'config.json'}); "
            "let the run finish (eqxllm train --config-file RUN_DIR/run_config.json --resume)"
        )
    if not (path / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise CheckpointError(
            f"{path} has no config.json (found: {found}); a checkpoint directory holds config.json and "
            "model.safetensors, as transformers' save_pretrained writes them"
        )
    return path


# the two ways in ------------------------------------------------------------------------------------
def resolve_pretrained(
    src: str | os.PathLike,
    *,
    allow_patterns: Sequence[str] = DEFAULT_PATTERNS,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The local checkpoint directory for ``src``.

    An existing directory (``str`` or path) must hold ``config.json`` and is returned as is; a training
    run directory (``run_config.json``) resolves to the model it exported, ``RUN_DIR/model``. A string that
    reads as a path (starts with ``.``, ``/`` or ``~``, has more than one separator, or its first component
    is a local directory) but does not exist raises :class:`CheckpointError` ("no such directory"). Any
    other string is a Hub repo id, downloaded (files matching ``allow_patterns``, at ``revision``) into the
    Hugging Face cache (``cache_dir``, else ``HF_HUB_CACHE`` / ``HF_HOME``) or found there when offline.
    Hub failures are re-raised as :class:`CheckpointError` naming the repo, chained from the original.
    """
    text = os.fspath(src)
    path = Path(text).expanduser()
    if path.exists() or not isinstance(src, str):
        return _local_dir(path, "it is a path object" if not isinstance(src, str) else "it exists")
    why = _path_reason(text)
    if why is not None:
        return _local_dir(path, why)
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    local_only = hub_offline()
    try:
        with quiet_hub():
            folder = snapshot_download(
                text,
                revision=revision,
                allow_patterns=list(allow_patterns),
                cache_dir=cache,
                local_files_only=local_only,
            )
    except _HUB_ERRORS as err:
        hint = _hint(err, cache, "pass a local directory")
        raise CheckpointError(
            f"cannot get {_repo(text, None, revision)}: {hint} ({type(err).__name__}: {err})"
        ) from err
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"Hub repo {text!r} (snapshot {folder}) has no config.json; eqxllm loads transformers checkpoints"
        )
    return folder


def download(repo_id: str, filename: str, *, repo_type: str | None = None, revision: str | None = None) -> Path:
    """``hf_hub_download`` one file into the Hub cache and return its local path.

    Raises :class:`HubFileMissing` when the repository lacks the file (or, offline, the cache lacks it),
    and :class:`DataError` for an unknown repository or revision, or a failed download.
    """
    cache = hub_cache_dir()
    local_only = hub_offline()
    try:
        with quiet_hub():
            path = hf_hub_download(
                repo_id, filename, repo_type=repo_type, revision=revision, cache_dir=cache, local_files_only=local_only
            )
    except _HUB_ERRORS as err:
        instead = "pass local text with --data FILE_OR_FOLDER" if repo_type == "dataset" else "pass a local directory"
        message = f"cannot get {filename!r} from {_repo(repo_id, repo_type, revision)}: {_hint(err, cache, instead)}"
        # the file (not the repo) is missing, on the Hub or offline in the cache: callers that can do without
        # it (a tokenizer's vocab.json after tokenizer.json) catch HubFileMissing
        error = HubFileMissing if isinstance(err, EntryNotFoundError) else DataError
        raise error(f"{message} ({type(err).__name__}: {err})") from err
    return Path(str(path))

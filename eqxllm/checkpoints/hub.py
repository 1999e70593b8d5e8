"""Turn what a user passes to ``from_pretrained`` (a local directory or a Hugging Face Hub repo id) into a
local checkpoint directory holding ``config.json``.

Repo ids go through ``huggingface_hub.snapshot_download``, so the Hub cache, ``HF_HOME`` /
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` behave exactly as they do for ``transformers``: a repo already
in the cache resolves offline. Only the files a checkpoint needs are fetched (safetensors weights, never
``pytorch_model.bin``).
"""

import contextlib
import functools
import importlib
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from eqxllm.errors import CheckpointError

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
)


def _network_errors() -> tuple[type[Exception], ...]:
    """Transport errors of the HTTP client this huggingface_hub uses; they are not OSErrors."""
    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


# Every error snapshot_download raises for an unreachable, unknown or uncached repo.
_HUB_ERRORS = (HFValidationError, OSError, *_network_errors())


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether Hub lookups must stay in the cache: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is
    set now or was when the Hub was imported, or the Hub's host cannot be reached at all."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE:
        return True
    return not _reachable(constants.ENDPOINT)


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


def _hub_error(repo_id: str, revision: str | None, cache: str, err: Exception) -> CheckpointError:
    """A message for each way ``snapshot_download`` fails, with what to do about it."""
    at = f"Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if isinstance(err, GatedRepoError):
        hint = "it is gated: accept its license on huggingface.co and log in (`hf auth login`)"
    elif isinstance(err, RepositoryNotFoundError):
        hint = "check the id (and log in with `hf auth login` if it is private), or pass a local directory"
    elif isinstance(err, RevisionNotFoundError):
        hint = "the repo has no such branch, tag or commit; check the revision"
    elif isinstance(err, HFValidationError):
        hint = "it is neither an existing directory nor a valid repo id ('name' or 'org/name')"
    elif constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE"):
        hint = (
            f"it is not in the cache {cache} and HF_HUB_OFFLINE=1 forbids downloading it: set "
            "HF_HUB_OFFLINE=0, download it where the Hub is reachable (HF_HOME / HF_HUB_CACHE select the "
            "cache), or pass a local directory"
        )
    else:
        hint = (
            f"it is not (completely) in the cache {cache} and the Hub could not be reached: check the "
            "network and the id, or pass a local directory"
        )
    return CheckpointError(f"cannot get {at}: {hint} ({type(err).__name__}: {err})")


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
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    offline = hub_offline()
    try:
        with quiet_hub():
            folder = snapshot_download(
                text, revision=revision, allow_patterns=list(allow_patterns), cache_dir=cache, local_files_only=offline
            )
    except _HUB_ERRORS as err:
        raise _hub_error(text, revision, cache or constants.HF_HUB_CACHE, err) from err
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"Hub repo {text!r} (snapshot {folder}) has no config.json; eqxllm loads transformers checkpoints"
        )
    return folder

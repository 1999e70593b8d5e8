"""Downloads from the Hugging Face Hub into its cache, with errors that say what to do.

The Hub's environment variables (``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``, ``HF_HOME``) are read at call time,
not at import time as ``huggingface_hub.constants`` does, so a process (or a test) that sets them after
importing eqxllm still gets what it asked for.
"""

import os
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from eqxllm.errors import DataError

# `owner/name` or a bare `name`, as the Hub spells repository ids (no path separators beyond one slash).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class HubFileMissing(DataError):
    """The repository exists (or is cached) but does not hold the requested file."""


def looks_like_repo_id(src: str | Path) -> bool:
    """Whether ``src`` reads as a Hub repository id rather than a local path (check local paths first)."""
    if isinstance(src, Path):
        return False
    if src.startswith((".", "/", "~")) or src.endswith((".txt", ".json")):
        return False
    return bool(_REPO_ID.match(src))


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, or as it was when the Hub was imported."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE


def _unreachable() -> bool:
    from eqxllm.checkpoints.hub import hub_offline

    return not offline() and hub_offline()


def hub_cache_dir() -> Path:
    """The Hub cache folder: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    home = os.environ.get("HF_HOME", os.path.join(xdg, "huggingface"))
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def download(repo_id: str, filename: str, *, repo_type: str | None = None, revision: str | None = None) -> Path:
    """``hf_hub_download`` one file into the Hub cache and return its local path.

    Raises :class:`HubFileMissing` when the repository lacks the file (or, offline, the cache lacks it),
    and :class:`DataError` for an unknown repository, revision, or a failed download.
    """
    where = f"{repo_type + ' ' if repo_type else ''}repository {repo_id!r}" + (
        f" at revision {revision!r}" if revision else ""
    )
    from eqxllm.checkpoints.hub import quiet_hub

    is_offline, unreachable = offline(), _unreachable()
    try:
        with quiet_hub():
            path = huggingface_hub.hf_hub_download(
                repo_id,
                filename,
                repo_type=repo_type,
                revision=revision,
                cache_dir=hub_cache_dir(),
                local_files_only=is_offline or unreachable,
            )
    except GatedRepoError as e:
        raise DataError(f"the {where} is gated; accept its terms on the Hub and log in (`hf auth login`)") from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise DataError(f"the Hub has no {where} ({type(e).__name__}); check the id and revision") from e
    except EntryNotFoundError as e:
        # LocalEntryNotFoundError is an EntryNotFoundError too: offline or unreachable, and not cached.
        if isinstance(e, LocalEntryNotFoundError):
            hint = (
                "HF_HUB_OFFLINE is set; unset it to download, or pass local text with --data FILE_OR_FOLDER"
                if is_offline
                else "the Hub is unreachable; check the network, or pass local text with --data FILE_OR_FOLDER"
            )
            raise HubFileMissing(
                f"{filename!r} from the {where} is not in the Hub cache {hub_cache_dir()} ({hint})"
            ) from e
        raise HubFileMissing(f"the {where} holds no file {filename!r}") from e
    except (HfHubHTTPError, OSError) as e:
        raise DataError(f"downloading {filename!r} from the {where} failed: {e}") from e
    return Path(str(path))

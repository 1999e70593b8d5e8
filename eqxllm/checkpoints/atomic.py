"""Atomic saves: write in a hidden temporary folder (or file) beside the destination, fsync, then
``os.replace`` into place, so a destination is either complete or absent.

Temporaries carry the writer's process id (``.eqxllm-save-<pid>-<random>``). A save that is killed
(SIGKILL, power loss) cannot remove its own; every later save into the same folder removes those
whose process is gone, so they never pile up. Temporaries of a live process (a concurrent save) are
left alone.
"""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eqxllm.errors import CheckpointError

SAVE_PREFIX = ".eqxllm-save-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _owner(name: str) -> int | None:
    """The writer's pid in a temporary's name (``.eqxllm-save-<pid>-...`` or ``.NAME.<pid>.….tmp``)."""
    for part in name.replace(".", "-").split("-"):
        if part.startswith("p") and part[1:].isdigit():
            return int(part[1:])
    return None


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the save temporaries in ``directory`` left by processes that no longer run; returns them."""
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        name = path.name
        ours = name.startswith(SAVE_PREFIX) or (name.startswith(".") and name.endswith(".eqxllm.tmp"))
        if not ours:
            continue
        pid = _owner(name)
        if pid is not None and (pid == os.getpid() or _alive(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _obstacle(path: Path) -> str | None:
    """Why nothing can be created at ``path``: a file at it or among its parents, or a nearest
    existing folder that is not writable; None when nothing stands in the way."""
    for d in (path, *path.parents):
        if d.exists() and not d.is_dir():
            return f"{d} is a file" if d == path else f"its parent {d} is a file"
        if d.exists():
            return None if os.access(d, os.W_OK | os.X_OK) else f"{d} is not writable"
    return None


def check_destination(directory: Path) -> None:
    """Raise :class:`CheckpointError` unless ``directory`` is a folder or absent, below no file, and
    the nearest existing folder on its path is writable."""
    reason = _obstacle(directory)
    if reason:
        raise CheckpointError(f"cannot save into {directory}: {reason}; pass a directory path you can write")


def missing_folders(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist yet, deepest first: what creating it
    makes, and what :func:`remove_created` takes away again."""
    return [d for d in (directory, *directory.parents) if not d.exists()]


def create_folders(directory: Path) -> list[Path]:
    """Check ``directory`` (:func:`check_destination`) and create it with its missing parents; returns
    the folders created, deepest first. A refusal by the system (a read-only or virtual file system
    such as ``/proc``) is a :class:`CheckpointError` and leaves nothing created."""
    check_destination(directory)
    created = missing_folders(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_created(created)
        raise CheckpointError(
            f"cannot create the folder {directory} (the system says: {e.strerror or e}); "
            "pass a folder in a place you can write"
        ) from None
    return created


def prepare_destination(directory: Path) -> list[Path]:
    """Check that ``directory`` can be saved into (a folder, or absent) and create it; returns the folders
    created (deepest first) so that a failed save can remove them again."""
    created = create_folders(directory)
    remove_stale_temporaries(directory)
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders :func:`prepare_destination` created, deepest first, while they are empty."""
    for d in created:
        if not d.is_dir():  # already gone
            continue
        if any(d.iterdir()):
            break
        d.rmdir()


@contextmanager
def temporary_folder(directory: Path) -> Iterator[Path]:
    """A hidden folder inside ``directory``, removed when the block ends (whatever it left there)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{SAVE_PREFIX}p{os.getpid()}-", dir=directory))
    except OSError as e:  # writable by its mode bits yet refused (a virtual file system such as /proc)
        raise CheckpointError(
            f"cannot write in {directory} (the system says: {e.strerror or e}); pass a folder you can write"
        ) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_dir(directory: Path) -> None:
    if os.name == "posix":  # a directory's entries are durable only once the directory itself is synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def withdraw_description(directory: Path, describing: str | None) -> None:
    """Remove ``directory / describing`` (the config that says what the weights beside it are) and make
    the removal durable, before new weights move in: a save cut off between its moves then leaves a
    folder that does not load, never the new weights read under the old config."""
    if describing is not None and (directory / describing).exists():
        (directory / describing).unlink()
        fsync_dir(directory)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary beside it, fsynced, then ``os.replace``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the process's umask."""
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, and set it back at once
    os.umask(mask)
    return 0o666 & ~mask


def temporary_beside(path: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file in ``path``'s folder that will be renamed to ``path``,
    with the mode a plain ``open`` would give it (``mkstemp`` makes it ``0600``, which the rename keeps:
    a saved model others on the machine could not read)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, new_file_mode())
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary beside it, fsynced, then ``os.replace``)."""
    fd, tmp = temporary_beside(path, f".{path.name}.p{os.getpid()}.", ".eqxllm.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_file_destination(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` can become a file: not a folder, below no file,
    in a place that can be written."""
    if path.is_dir():
        reason = f"{path} is a folder"
    else:  # an existing file is replaced: only its folder must be writable
        reason = _obstacle(path.parent if path.exists() else path)
    if reason:
        raise CheckpointError(f"cannot write {path}: {reason}; pass a file path you can write")


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to the file ``path`` atomically, creating its missing parent folders (removed
    again if the write fails); returns ``path``."""
    check_file_destination(path)
    created = create_folders(path.parent)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        remove_created(created)
        raise CheckpointError(
            f"cannot write {path} (the system says: {e.strerror or e}); pass a path you can write"
        ) from None
    except BaseException:
        remove_created(created)
        raise
    return path


def write_directory(directory: Path, write_into: Callable[[Path], None]) -> Path:
    """Fill ``directory`` with ``write_into(folder)``. An existing directory is written in place (each
    file by ``write_into``, atomically, its describing file last); a new one is built beside its
    destination and renamed into place, so it appears whole or not at all. Returns ``directory``."""
    if directory.exists():
        write_into(directory)
        return directory
    created = prepare_destination(directory.parent)
    try:
        with temporary_folder(directory.parent) as tmp:
            (tmp / directory.name).mkdir()
            write_into(tmp / directory.name)
            os.replace(tmp / directory.name, directory)
            fsync_dir(directory.parent)
    except BaseException:
        remove_created(created)
        raise
    return directory

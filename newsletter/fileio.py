"""Files that are never half-written: atomic replacement, and an advisory lock between processes.

`atomic_write` writes a temp file in the target's folder, fsyncs it, renames it over the target
and fsyncs the folder: a reader, or a process killed at any moment, sees the old file or the new
one, never a mix. `locked` serialises read-modify-write cycles between processes with flock(2)
on a sidecar file (the target itself is replaced by each rename, so it cannot carry the lock);
the kernel releases the lock when its holder dies, so a crash never leaves a stale lock.

Modes: lists, ledgers, suppressions, locks and the outbox hold personal data, so what the tool
creates for them is PRIVATE_FILE / PRIVATE_FOLDER, set explicitly (whatever the umask says);
a file or folder that already exists keeps its mode, also through a rewrite.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from newsletter.errors import DiskFull, LockBusy, NotWritable, StorageError

DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a writer waits for another before giving up
PRIVATE_FILE = 0o600  # personal data: readable by its owner only
PRIVATE_FOLDER = 0o700
PUBLIC_FILE = 0o644  # rendered pages and the web archive: made to be published


def make_folder(folder: Path, mode: int = PRIVATE_FOLDER) -> None:
    """Create `folder` and its missing parents with `mode`, whatever the umask.

    Folders that already exist keep their mode. StorageError names the one that could not be
    made (e.g. a file is where a folder should be).
    """
    with reporting(folder, "cannot create the folder"):
        _make_folders(folder, mode)


def _make_folders(folder: Path, mode: int) -> None:
    missing: list[Path] = []
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if path.is_dir():  # another process made it first: it chose the mode
                continue
            raise NotADirectoryError(errno.ENOTDIR, "a file is there", str(path)) from None
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise
            # the folder it is made in is the read-only one: name that one
            raise storage_error(path.parent, exc, f"cannot create {path.name}/ in it") from None
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask


def open_private(path: Path, flags: int = os.O_RDWR, *, exclusive: bool = False) -> int:
    """Open `path`, creating it as PRIVATE_FILE whatever the umask; an existing file keeps its
    mode (FileExistsError instead with `exclusive`). Returns the descriptor."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        if exclusive:
            raise
        return os.open(path, flags)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_path(path: Path) -> Path:
    """The sidecar lock file of `path`: `.NAME.lock` beside it."""
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `path`'s sidecar lock file; LockBusy after `timeout` seconds."""
    target = lock_path(path)
    make_folder(target.parent)
    with reporting(target, "cannot open the lock file"):
        fd = open_private(target)
    try:
        _acquire(fd, path, timeout)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockBusy(f"{path}: another process is changing it; try again") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


BeforeRename = Callable[[os.stat_result], object]


def atomic_write(
    path: Path,
    write: Callable[[IO[bytes]], object],
    *,
    mode: int = PRIVATE_FILE,
    before_rename: BeforeRename | None = None,
) -> None:
    """Replace `path` with what `write` writes to a binary handle, atomically.

    The file keeps the mode of the file it replaces; a new file gets `mode`, and missing
    folders get it with search (x) bits where it has read bits (0o600 -> 0o700).
    If `write` raises, the target is untouched and the temp file is removed.
    `before_rename` gets the new file's stat once it is fsynced, before it replaces `path`
    (raising there keeps the old file too).
    """
    folder = path.parent
    make_folder(folder, mode | (mode & 0o444) >> 2)
    with reporting(path, "cannot write", exact=True):
        _replace(path, write, mode, before_rename)


def _replace(
    path: Path,
    write: Callable[[IO[bytes]], object],
    mode: int,
    before_rename: BeforeRename | None = None,
) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            if before_rename is not None:
                before_rename(os.fstat(handle.fileno()))
        os.chmod(temp, _mode_for(path, mode))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_folder(path.parent)


def atomic_write_text(
    path: Path,
    write: Callable[[IO[str]], object],
    *,
    mode: int = PRIVATE_FILE,
    encoding: str = "utf-8",
    newline: str = "",
    before_rename: BeforeRename | None = None,
) -> None:
    """`atomic_write` through a text handle (UTF-8; newline="" suits the csv module)."""

    def write_bytes(raw: IO[bytes]) -> None:
        text = io.TextIOWrapper(raw, encoding=encoding, newline=newline)
        write(text)
        text.flush()
        text.detach()  # leave `raw` open: atomic_write fsyncs and closes it

    atomic_write(path, write_bytes, mode=mode, before_rename=before_rename)


def _mode_for(path: Path, mode: int) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return mode


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (the folder entry itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# OSError -> StorageError: one clear line naming the file, why, and what to do

_FULL = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file-size limit is reached",
}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
FREE_SPACE_HINT = "free some space on that disk, then run the command again"
READ_ONLY_HINT = (
    "make it writable (its permissions, `chattr -i` for an immutable file, a read-write "
    "mount) or work elsewhere, then run the command again"
)


@contextlib.contextmanager
def reporting(path: Path, action: str, *, exact: bool = False) -> Iterator[None]:
    """Turn an OSError inside into a StorageError naming the file: the one the error names,
    or always `path` when `exact` (e.g. not the temp file of an atomic write)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        where = Path(os.fsdecode(exc.filename)) if exc.filename and not exact else path
        raise storage_error(where, exc, action) from None


def storage_error(where: Path, exc: OSError, action: str) -> StorageError:
    """The StorageError for `exc`, raised while doing `action` to `where`."""
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        full = f"{_FULL[exc.errno]} ({reason})"
        return DiskFull(where, action, full, FREE_SPACE_HINT, exc.errno)
    if exc.errno in _READ_ONLY:
        return NotWritable(where, action, f"read-only ({reason})", READ_ONLY_HINT, exc.errno)
    move = "move it away or choose another place, then run the command again"
    if exc.errno == errno.ENOTDIR:
        return StorageError(where, action, "a file is where a folder is needed", move, exc.errno)
    if exc.errno == errno.EISDIR:
        return StorageError(where, action, "a folder is where a file is needed", move, exc.errno)
    hint = "check that path, then run the command again"
    return StorageError(where, action, reason, hint, exc.errno)

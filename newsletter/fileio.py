"""Files that are never half-written: atomic replacement, and an advisory lock between processes.

`atomic_write` writes a temp file in the target's folder, fsyncs it, renames it over the target
and fsyncs the folder: a reader, or a process killed at any moment, sees the old file or the new
one, never a mix. `locked` serialises read-modify-write cycles between processes with flock(2)
on a sidecar file (the target itself is replaced by each rename, so it cannot carry the lock);
the kernel releases the lock when its holder dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from newsletter.errors import LockBusy

DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a writer waits for another before giving up


def lock_path(path: Path) -> Path:
    """The sidecar lock file of `path`: `.NAME.lock` beside it."""
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `path`'s sidecar lock file; LockBusy after `timeout` seconds."""
    target = lock_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
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


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], object], *, mode: int | None = None
) -> None:
    """Replace `path` with what `write` writes to a binary handle, atomically.

    The file keeps the mode of the file it replaces; a new file gets `mode` (default 0o644).
    If `write` raises, the target is untouched and the temp file is removed.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, _mode_for(path, mode))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(folder)


def atomic_write_text(
    path: Path,
    write: Callable[[IO[str]], object],
    *,
    mode: int | None = None,
    encoding: str = "utf-8",
    newline: str = "",
) -> None:
    """`atomic_write` through a text handle (UTF-8; newline="" suits the csv module)."""

    def write_bytes(raw: IO[bytes]) -> None:
        text = io.TextIOWrapper(raw, encoding=encoding, newline=newline)
        write(text)
        text.flush()
        text.detach()  # leave `raw` open: atomic_write fsyncs and closes it

    atomic_write(path, write_bytes, mode=mode)


def _mode_for(path: Path, mode: int | None) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o644 if mode is None else mode


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

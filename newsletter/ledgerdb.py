"""The ledger's SQLite file: opened owner-only in WAL mode, and a connection on which every
sqlite3 error becomes a NewsletterError naming the file (full disk, read-only, busy, unreadable).
ledger.py says why the pragmas are what they are.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from newsletter.errors import DiskFull, LedgerError, NewsletterError, NotWritable, StorageError
from newsletter.fileio import FREE_SPACE_HINT, READ_ONLY_HINT, make_folder, open_private, reporting

LOW_SPACE = 1 << 20  # bytes: an I/O error with less free space than this is a full disk


class Connection:
    """sqlite3's connection, where every sqlite3 error becomes a NewsletterError naming the
    file, and a failed statement leaves the ledger as of its last commit: an open transaction
    is rolled back (SQLite may or may not have done so itself after a full disk)."""

    def __init__(self, path: Path, *, private: bool = False) -> None:
        """`private`: SQLite's temporary database ("": mode 0600, unlinked when made), errors
        still named after `path` (the ledger it is a draft of)."""
        self.path = path
        with self._errors():
            where = "" if private else path
            self._db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            # freed space is zeroed, not left holding erased or replaced rows (`purge`): some
            # builds of SQLite do this by default, others not
            self._db.execute("PRAGMA secure_delete=ON")

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:  # not _errors(): a few statements per message, a context manager costs more
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        try:
            return self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    def executescript(self, script: str) -> sqlite3.Cursor:
        with self._errors():
            return self._db.executescript(script)

    def backup(self, target: Connection) -> None:
        """Copy the whole database into `target` in one step."""
        with self._errors(), target._errors():
            self._db.backup(target._db)

    def close(self) -> None:
        with self._errors():
            self._db.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: sqlite3.Error) -> NewsletterError:
        """The error to raise for `exc`, after rolling back an open transaction."""
        db = getattr(self, "_db", None)
        if db is not None and db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        return ledger_error(self.path, exc)


def ledger_error(path: Path, exc: sqlite3.Error) -> NewsletterError:
    """What a sqlite3 error means for the user: full, read-only, cannot open, or unreadable."""
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_FULL:
        return DiskFull(path, "cannot write", f"the disk is full ({exc})", FREE_SPACE_HINT)
    if code == sqlite3.SQLITE_READONLY:
        return NotWritable(path, "cannot write", f"read-only ({exc})", READ_ONLY_HINT)
    if code == sqlite3.SQLITE_CANTOPEN:
        why = f"SQLite must be able to create the ledger's -wal and -shm files here ({exc})"
        return NotWritable(path.parent, "cannot open the ledger", why, READ_ONLY_HINT)
    if code == sqlite3.SQLITE_IOERR:
        return _io_error(path, exc)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LedgerError(path, f"in use by another process ({exc}); try again when it is done")
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return LedgerError(path, f"not a readable ledger ({exc})")
    return LedgerError(path, str(exc))


def _io_error(path: Path, exc: sqlite3.Error) -> StorageError:
    """SQLite reports ENOSPC and EFBIG as a plain "disk I/O error": say how much space is left."""
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return StorageError(path, "cannot read or write", str(exc), "check the disk")
    free = disk.f_bavail * disk.f_frsize
    size_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if size_limit != resource.RLIM_INFINITY:  # its EFBIG also comes back as an I/O error
        why = f"a file-size limit is reached ({exc}; `ulimit -f` allows {size_limit:,} bytes)"
        return DiskFull(path, "cannot write", why, "raise that limit, then run the command again")
    if free < LOW_SPACE:
        why = f"the disk is full ({exc}; {free:,} bytes free)"
        return DiskFull(path, "cannot write", why, FREE_SPACE_HINT)
    why = f"{exc} ({free:,} bytes free there)"
    return StorageError(path, "cannot read or write", why, "check the disk and its file system")


def connect(path: Path) -> Connection:
    """The ledger file, created owner-only (SQLite gives its -wal and -shm files its mode)."""
    make_folder(path.parent)
    with reporting(path, "cannot open the ledger"):
        os.close(open_private(path, os.O_RDONLY))
    db = Connection(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # only sync() checkpoints: see above
    db.execute("PRAGMA busy_timeout=5000")
    return db

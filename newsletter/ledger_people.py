"""One person's records in the ledger files of the sends, read and erased without opening a
`Ledger`: what `subscribers show` reads (`outcome_in`: the state of the address's row and the
bounces and complaints that came back for it) and what `subscribers purge` does to every send
(`erase`, then `compact`), through sends.LedgerFolder. ledger.py's docstring says what an erased
row keeps.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from newsletter.ledger import _ERASE, key_hash
from newsletter.ledgerdb import Connection, connect, ledger_error
from newsletter.people_types import Returned
from newsletter.store import ERASED, State

# none in a ledger killed before its tables existed
_HAS_RECIPIENTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recipients'"

_OUTCOME = "SELECT state, at, id FROM recipients WHERE khash = ?"
_RETURNS = "SELECT kind, status, at FROM returns WHERE id = ? ORDER BY at, kind"
_HAS_RETURNS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'returns'"


def outcome_in(path: Path, key: str) -> tuple[State, float | None, list[Returned]] | None:
    """The state and last change of the address's row in the ledger at `path`, and the
    bounces and complaints recorded for it, read without changing it: a probe of the index on
    the address hash. None when it has no row."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            if not db.execute(_HAS_RECIPIENTS).fetchone():
                return None
            row = db.execute(_OUTCOME, (key_hash(key),)).fetchone()
            old = row is None or not db.execute(_HAS_RETURNS).fetchone()  # made before returns
            returns = [] if old else db.execute(_RETURNS, (row[2],)).fetchall()
    except sqlite3.Error as exc:
        raise ledger_error(path, exc) from None
    if row is None:
        return None
    return State(row[0]), row[1], [Returned(kind, status, at) for kind, status, at in returns]


def erase(path: Path, key: str) -> tuple[int, bool]:
    """Erase an address from the ledger at `path`: its row keeps its hash (the first 8 bytes of
    the suppression digest, so no resumed send adds or mails it again) and its state (a row not
    yet sent becomes skipped), and loses the address, name, merge fields and server reply.

    In the ledger's own transaction (a running send waits for it, or it for the send), with
    secure_delete so the pages it changes keep no old bytes; then a TRUNCATE checkpoint empties
    the -wal file. Returns (rows erased, whether the -wal file could be emptied).
    """
    db = connect(path)  # its connections zero what they free (ledgerdb: secure_delete)
    try:
        if not db.execute(_HAS_RECIPIENTS).fetchone():
            return 0, True
        db.execute("BEGIN IMMEDIATE")
        values = (State.SKIPPED, State.PENDING, State.DEFERRED, ERASED, key_hash(key))
        rows = db.execute(_ERASE, values).rowcount
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('erased', '1')")
        db.execute("COMMIT")
        return rows, _checkpoint(db) if rows else True
    finally:
        db.close()


def compact(path: Path) -> bool:
    """Rebuild the ledger file (VACUUM): no free page or space left by an earlier change keeps
    old bytes. Only while no send of it runs (its lock held). False when a reader kept the
    -wal file from being emptied."""
    db = connect(path)
    try:
        db.execute("VACUUM")
        return _checkpoint(db)
    finally:
        db.close()


def _checkpoint(db: Connection) -> bool:
    """Copy the WAL into the database and truncate it; False when a reader kept it."""
    busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    return not busy

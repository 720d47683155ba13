"""The per-recipient record of one send: SQLite (stdlib), one file per issue and destination.

One row per recipient of the plan, in plan order, with its state:
  pending   not attempted yet (or handed back by `--resend-unknown`)
  sending   an attempt was recorded and its data may be on the wire (internal; see below)
  sent      the server accepted it (its reply and the time)
  deferred  a temporary failure (reason, next attempt, attempts); retried
  failed    a permanent 5xx refusal (code, reply); never retried
  unknown   the connection broke after the data went out: maybe delivered; never resent by itself
  skipped   left out after the snapshot (unsubscribed mid-send)
Apart from the state, `returns` records what came back later from the bounce mailbox
(`newsletter bounces`): a hard or soft bounce, or a complaint. A ledger made before that table
existed gets it when opened; until then it reads as nothing returned.

A person erased on request (`ledger_people.erase`, from `subscribers purge`) keeps their row,
its hash and state, without their address, name, merge fields or the server's reply: no resumed
send adds or mails them again, and no report names them.

Each attempt is committed as `sending` BEFORE its data goes out. A killed process therefore
leaves at most one `sending` row per connection; `recover()` turns them into `unknown`.
WAL with synchronous=NORMAL survives a killed process (the OS keeps the writes). Against power
loss, `sync()` makes everything before it durable (a TRUNCATE checkpoint: WAL fsynced, copied
into the database, database fsynced); auto-checkpoints are off, so between two syncs the only
writes that can be lost are those in the WAL since the last one. docs/sending.md gives the bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from newsletter import addresses
from newsletter.errors import LedgerError
from newsletter.ledgerdb import Connection, connect, ledger_error
from newsletter.store import (
    ERASED,
    PURGED,
    Entry,
    Failure,
    Lease,
    Row,
    SendSummary,
    State,
    WorkerShare,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lists (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS recipients (
    id INTEGER PRIMARY KEY,            -- plan order
    khash INTEGER NOT NULL,            -- 64-bit hash of the address key (dedupe, unsubscribes)
    email TEXT NOT NULL,
    name TEXT,                         -- NULL when empty
    list INTEGER,                      -- lists.id
    fields TEXT,                       -- JSON of the merge fields the issue uses; NULL: none
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    at REAL,                           -- unix time of the last change
    next_at REAL,                      -- deferred: unix time of the next attempt
    code INTEGER,                      -- SMTP reply code
    reply TEXT                         -- server reply, or why
);
CREATE TABLE IF NOT EXISTS returns (  -- what came back after a message was accepted
    id INTEGER NOT NULL,               -- recipients.id
    kind TEXT NOT NULL,                -- "hard", "soft" (bounces) or "complaint"
    status TEXT NOT NULL,              -- the DSN's status, e.g. 5.1.1; "" for a complaint
    at REAL NOT NULL,                  -- unix time of the report
    PRIMARY KEY (id, kind)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS recipients_khash ON recipients(khash);
CREATE INDEX IF NOT EXISTS recipients_notable ON recipients(state) WHERE state NOT IN (0, 2);
"""  # the numbers in it are State values: pending 0, sent 2


_SENDING = int(State.SENDING)  # a plain int for the per-message statement (see Ledger._set)


def key_hash(key: str) -> int:
    """The subscribers module's compact key of an address key, as SQLite's signed 64 bits."""
    return signed(addresses.key_hash(key))


def signed(compact: int) -> int:
    return compact - (1 << 64) if compact >= 1 << 63 else compact


def ledger_path(state_dir: Path, slug: str, destination: str) -> Path:
    """`.newsletter/sends/<slug>@<destination>-<hash>.sqlite`: readable and unique."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", destination).strip("-")[:40]
    tag = hashlib.sha256(destination.encode()).hexdigest()[:8]
    return state_dir / "sends" / f"{slug}@{readable}-{tag}.sqlite"


def peek(path: Path, *, counts: bool = True) -> SendSummary:
    """Read a ledger's identity and (with `counts`; else 0) its sent/unknown counts, without
    changing it; LedgerError when it cannot be read. Counting reads every row: skip it for
    ledgers that turn out to be of another issue."""
    slug = path.name.rpartition("@")[0]
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if not {"meta", "recipients"} <= tables:  # killed while it was being created
                return SendSummary(path, slug, "", "", 0, 0, ())
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            count = "SELECT state, count(*), max(at) FROM recipients GROUP BY state"
            rows = db.execute(count).fetchall() if counts else []
            states = {state: n for state, n, _ in rows}
            changed = [at for _, _, at in rows if at is not None]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(path, f"not a readable ledger ({exc})") from None
    outbox = path.name == ledger_path(path.parent.parent, slug, "outbox").name
    return SendSummary(
        path,
        meta.get("slug", slug),
        meta.get("destination", "outbox" if outbox else ""),
        meta.get("content", ""),
        int(states.get(State.SENT, 0)),
        int(states.get(State.UNKNOWN, 0)) + int(states.get(State.SENDING, 0)),
        tuple(json.loads(meta.get("continued_from", "[]"))),
        counts={state.label: int(states.get(state, 0)) for state in State} if counts else {},
        last_change=max(changed, default=None) if counts else None,
    )


def failures_in(path: Path) -> list[Failure]:
    """The failed rows of the ledger at `path`, read without changing it (none for a ledger
    killed before its tables existed); `ledger_error` when it cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "recipients" not in tables:
                return []
            sql = "SELECT email, code, reply, at FROM recipients WHERE state = ? AND email != ''"
            rows = db.execute(sql, (State.FAILED,)).fetchall()
    except sqlite3.Error as exc:
        raise ledger_error(path, exc) from None
    return [Failure(r[0], r[1], r[2] or "", float(r[3] or 0.0)) for r in rows]


def ledger_files(folder: Path) -> list[Path]:
    """Every ledger in `folder` (.newsletter/sends/): those of the sends, and those kept aside
    when a changed issue was sent again (`<ledger>.replaced-<time>`)."""
    return sorted(p for p in folder.glob("*.sqlite*") if _LEDGER_NAME.search(p.name))


_LEDGER_NAME = re.compile(r"\.sqlite(\.replaced-[0-9T]+)?$")


# what erasing a person does to their row: ledger_people.erase, and Ledger.skip for someone
# purged since the snapshot
_ERASE = (
    "UPDATE recipients SET email = '', name = NULL, fields = NULL, next_at = NULL,"
    " state = CASE WHEN state IN (?2, ?3) THEN ?1 ELSE state END, reply = ?4 WHERE khash = ?5"
)


def _keep_aside(path: Path, kept: Path) -> None:
    """Move a ledger (checkpointed first, so it is one file) and its WAL files to `kept`."""
    if not path.exists():
        return
    Ledger(path).close()
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            old.rename(f"{kept}{suffix}")


class Ledger:
    """One send's record. Not thread-safe; one writer process at a time (the send lock)."""

    def __init__(
        self, path: Path, *, create: bool = True, draft: bool = False, replacing: Path | None = None
    ) -> None:
        """Open the ledger at `path`. A `draft` is a private copy (empty when `replacing`):
        nothing reaches `path` until `save()`, so a plan that is not sent writes nothing."""
        self.path = path
        if not create and not path.is_file():
            raise LedgerError(path, "no ledger: nothing has been sent to this destination yet")
        self.draft = draft
        self._replacing = replacing
        self._from_file = draft and replacing is None and path.is_file()
        self._db = self._draft_db() if draft else connect(path)
        self._db.executescript(_SCHEMA)
        self._lists: dict[str, int] = {}
        self._list_paths: dict[int, str] = {}

    def _draft_db(self) -> Connection:
        # SQLite's private temporary database: a million-row plan stays in the page cache's few
        # MB, the rest spills to that file
        db = Connection(self.path, private=True)
        if self._from_file:
            source = connect(self.path)
            try:
                source.backup(db)
            finally:
                source.close()
        return db

    def save(self) -> None:
        """Write a draft to its file (the send was confirmed) and go on with the file.

        A draft made while no ledger existed never overwrites one that appeared since (another
        send of the issue started meanwhile); with `replacing`, the old file is kept aside there.
        """
        if not self.draft:
            return
        self.commit()
        if self._replacing is not None:
            _keep_aside(self.path, self._replacing)
        elif not self._from_file and self.path.exists():
            raise LedgerError(
                self.path, "another send of this issue started while the plan was shown: run "
                "the command again to see where it stands",
            )  # fmt: skip
        target = connect(self.path)
        self._db.backup(target)  # one step: the file gets the whole draft or nothing
        self._db.close()
        self._db = target
        self.draft = False

    # -- transactions ------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        self._begin()
        return self._db.execute(sql, tuple(params))

    def commit(self) -> None:
        """Make every write so far survive a killed process (not yet a power loss: see sync)."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def sync(self) -> None:
        """Make every write so far survive a power loss: commit, then a TRUNCATE checkpoint."""
        self.commit()
        if self.draft:
            return
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:  # a reader (e.g. `status`) holds an old snapshot: fsync the WAL instead
            self._db.execute("PRAGMA synchronous=FULL")
            self._write("UPDATE meta SET value = value WHERE name = 'digest'")
            self.commit()
            self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.sync()
        self._db.close()

    # -- the plan ----------------------------------------------------------------------------

    def get(self, name: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default

    def put(self, name: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def get_json(self, name: str, default: Any) -> Any:
        raw = self.get(name)
        return json.loads(raw) if raw else default

    def put_json(self, name: str, value: Any) -> None:
        self.put(name, json.dumps(value, sort_keys=True))

    @property
    def digest(self) -> str:
        return self.get("digest")

    def is_empty(self) -> bool:
        return self._db.execute("SELECT 1 FROM recipients LIMIT 1").fetchone() is None

    def add(self, entries: Iterable[Entry]) -> int:
        """Add recipients in plan order; someone already in the ledger is not added again."""
        before = self._count_all()
        sql = (
            "INSERT OR IGNORE INTO recipients (khash, email, name, list, fields)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        chunk: list[tuple[int, str, str | None, int | None, str | None]] = []
        for entry in entries:
            chunk.append(self._row_values(entry))
            if len(chunk) >= 10_000:
                self._begin()
                self._db.executemany(sql, chunk)
                chunk.clear()
        self._begin()
        self._db.executemany(sql, chunk)
        return self._count_all() - before

    def _row_values(self, entry: Entry) -> tuple[int, str, str | None, int | None, str | None]:
        fields = json.dumps(dict(entry.fields), ensure_ascii=False) if entry.fields else None
        list_id = self._list_id(entry.list_path) if entry.list_path else None
        return (key_hash(entry.key), entry.email, entry.name or None, list_id, fields)

    def _list_id(self, path: str) -> int:
        if path not in self._lists:
            self._write("INSERT OR IGNORE INTO lists (path) VALUES (?)", (path,))
            row = self._db.execute("SELECT id FROM lists WHERE path = ?", (path,)).fetchone()
            self._lists[path] = int(row[0])
        return self._lists[path]

    def _count_all(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM recipients").fetchone()[0])

    def attempted(self) -> int:
        """Rows that are no longer pending: once > 0, the snapshot is fixed."""
        sql = "SELECT count(*) FROM recipients WHERE state != ?"
        return int(self._db.execute(sql, (State.PENDING,)).fetchone()[0])

    def fixed(self) -> bool:
        """Once something was attempted (a plan before that takes the snapshot anew)."""
        return self.attempted() > 0

    def lease(self) -> Lease | None:
        """None: one sender at a time (the send lock)."""
        return None

    def reset(self) -> None:
        """Drop the snapshot (only while nothing was attempted: a fresh plan replaces it)."""
        self._write("DELETE FROM recipients")
        self._write("DELETE FROM lists")
        self._lists.clear()
        self._list_paths.clear()

    def contains(self, key: str) -> bool:
        sql = "SELECT 1 FROM recipients WHERE khash = ?"
        return self._db.execute(sql, (key_hash(key),)).fetchone() is not None

    # -- reading work ------------------------------------------------------------------------

    def pending(self, after_id: int, limit: int) -> list[Row]:
        """The next pending recipients in plan order, after `after_id`."""
        sql = (
            "SELECT id, email, name, list, fields, attempts FROM recipients"
            " WHERE id > ? AND state = ? ORDER BY id LIMIT ?"
        )
        return [self._row(r) for r in self._db.execute(sql, (after_id, State.PENDING, limit))]

    def deferred(self) -> list[tuple[Row, float]]:
        """Deferred recipients with their next attempt time (unix), in plan order."""
        sql = (
            "SELECT id, email, name, list, fields, attempts, next_at FROM recipients"
            " WHERE state = ? ORDER BY id"
        )
        rows = self._db.execute(sql, (State.DEFERRED,))
        return [(self._row(r[:6]), float(r[6] or 0.0)) for r in rows]

    def _row(self, r: tuple[Any, ...]) -> Row:
        list_path = self._list_path(r[3]) if r[3] is not None else ""
        fields = json.loads(r[4]) if r[4] else {}
        return Row(int(r[0]), r[1], r[2] or "", list_path, fields, int(r[5]))

    def _list_path(self, list_id: int) -> str:
        if list_id not in self._list_paths:
            row = self._db.execute("SELECT path FROM lists WHERE id = ?", (list_id,)).fetchone()
            self._list_paths[list_id] = str(row[0]) if row else ""
        return self._list_paths[list_id]

    def attempt_times(self, since: float) -> list[float]:
        """Unix times of attempts since `since`, oldest first: hourly/daily limits span runs."""
        sql = "SELECT at FROM recipients WHERE state != ? AND at >= ? ORDER BY at"
        return [float(r[0]) for r in self._db.execute(sql, (State.PENDING, since))]

    # -- recording outcomes ------------------------------------------------------------------

    def start(self, row_id: int, now: float | None = None) -> bool:
        """Record an attempt as begun; `commit()` before its data goes out. Always True: the
        only sender's rows stay its own."""
        sql = "UPDATE recipients SET state = ?, attempts = attempts + 1, at = ? WHERE id = ?"
        self._write(sql, (_SENDING, time.time() if now is None else now, row_id))
        return True

    def sent(self, row_id: int, code: int, reply: str, now: float | None = None) -> None:
        self._set(row_id, State.SENT, code, reply, now)

    def failed(self, row_id: int, code: int | None, reply: str, now: float | None = None) -> None:
        self._set(row_id, State.FAILED, code, reply, now)

    def unknown(self, row_id: int, reason: str, now: float | None = None) -> None:
        self._set(row_id, State.UNKNOWN, None, reason, now)

    def defer(
        self, row_id: int, code: int | None, reason: str, next_at: float, now: float | None = None
    ) -> None:
        self._set(row_id, State.DEFERRED, code, reason, now, next_at)

    def release(self, row_id: int) -> None:
        """An attempt that never reached the transport: back to pending, not counted."""
        sql = "UPDATE recipients SET state = ?, attempts = attempts - 1 WHERE id = ? AND state = ?"
        self._write(sql, (State.PENDING, row_id, State.SENDING))

    def _set(
        self,
        row_id: int,
        state: State,
        code: int | None,
        reply: str,
        now: float | None,
        next_at: float | None = None,
    ) -> None:
        sql = (
            "UPDATE recipients SET state = ?, code = ?, reply = ?, at = ?, next_at = ? WHERE id = ?"
        )
        at = time.time() if now is None else now
        # int(): sqlite3 adapts an int subclass at ~0.3 us a statement, and this runs per message
        self._write(sql, (int(state), code, reply, at, next_at, row_id))

    def skip(self, blocked: Iterable[tuple[int, str]], reason: str) -> list[int]:
        """Leave out not-yet-sent recipients who unsubscribed: (compact key, list path) pairs,
        the path "" for everywhere (addresses.key_hash gives the compact key); the path
        store.PURGED erases the row too, as `erase` does (purged since the snapshot)."""
        blocked = list(blocked)
        find = (
            "SELECT recipients.id, lists.path FROM recipients LEFT JOIN lists"
            " ON lists.id = recipients.list WHERE khash = ? AND state IN (?, ?)"
        )
        waiting = (State.PENDING, State.DEFERRED)
        ids = [
            int(row_id)
            for compact, path in blocked
            for row_id, row_path in self._db.execute(find, (signed(compact), *waiting))
            if not path or path == row_path
        ]
        sql = "UPDATE recipients SET state = ?, reply = ?, at = ? WHERE id = ?"
        now = time.time()
        for row_id in ids:
            self._write(sql, (State.SKIPPED, reason, now, row_id))
        purged = [signed(compact) for compact, path in blocked if path == PURGED]
        for khash in purged:
            self._write(_ERASE, (State.SKIPPED, State.PENDING, State.DEFERRED, ERASED, khash))
        if purged:
            self._write("INSERT OR REPLACE INTO meta (name, value) VALUES ('erased', '1')")
        return ids

    def carry_over(self, source: Path, reply: str) -> int:
        """Who is sent or in doubt in `source` (the same issue through another server) takes
        that state here, so this send never mails them again; returns how many changed."""
        done_sql = "SELECT khash, state FROM recipients WHERE state IN (?, ?, ?)"
        with contextlib.closing(sqlite3.connect(source)) as db:
            done = db.execute(done_sql, (State.SENDING, State.SENT, State.UNKNOWN))
            rows = [(State.SENT if st == State.SENT else State.UNKNOWN, kh) for kh, st in done]
        sql = (
            "UPDATE recipients SET state = ?, reply = ?, at = ?, next_at = NULL"
            " WHERE khash = ? AND state IN (?, ?, ?)"
        )
        now = time.time()
        not_done = (State.PENDING, State.DEFERRED, State.FAILED)
        self._begin()
        params = ((st, reply, now, kh, *not_done) for st, kh in rows)
        changed = self._db.executemany(sql, params).rowcount
        self.commit()
        return changed

    # -- run boundaries ----------------------------------------------------------------------

    def recover(self) -> int:
        """After a crash or kill: attempts left `sending` may have gone out: mark them unknown."""
        sql = (
            "UPDATE recipients SET state = ?,"
            " reply = 'interrupted while in flight: may have been delivered' WHERE state = ?"
        )
        count = self._write(sql, (State.UNKNOWN, State.SENDING)).rowcount
        if self.get("erased"):  # a scan, only of a ledger someone was erased from
            # erased while their message was in flight, then deferred or handed back: there
            # is nobody left to send to
            erased = "UPDATE recipients SET state = ?, next_at = NULL"
            erased += " WHERE email = '' AND state IN (?, ?)"
            self._write(erased, (State.SKIPPED, State.PENDING, State.DEFERRED))
        self.commit()
        return count

    def retry_now(self) -> int:
        """A new run retries what is deferred at once."""
        sql = "UPDATE recipients SET next_at = NULL WHERE state = ?"
        count = self._write(sql, (State.DEFERRED,)).rowcount
        self.commit()
        return count

    def resend_unknown(self) -> int:
        """`send --resend-unknown`: the user chose to send the in-doubt ones again."""
        sql = "UPDATE recipients SET state = ?, code = NULL, reply = NULL WHERE state = ?"
        sql += " AND email != ''"  # an erased person (erase()) is never sent to again
        count = self._write(sql, (State.PENDING, State.UNKNOWN)).rowcount
        self.commit()
        return count

    # -- reporting ---------------------------------------------------------------------------

    def counts(self, *, live: bool = False) -> dict[str, int]:
        """Rows per state name. `sending` rows count as pending while a send runs (`live`),
        as unknown when none does (they are what a killed process left in doubt)."""
        counts = dict.fromkeys((state.label for state in State), 0)
        for state, n in self._db.execute("SELECT state, count(*) FROM recipients GROUP BY state"):
            counts[State(state).label] = int(n)
        in_flight = counts.pop("sending")
        counts["pending" if live else "unknown"] += in_flight
        return counts

    def workers(self) -> list[WorkerShare]:
        """One sender at a time, not recorded by name: one share, "local", of every outcome."""
        counts = self.counts()
        counts.pop("pending")
        counts.pop("skipped")
        return [WorkerShare("local", counts)] if any(counts.values()) else []

    def emails(self, *states: State) -> Iterator[str]:
        marks = ",".join("?" * len(states))
        sql = f"SELECT email FROM recipients WHERE state IN ({marks}) AND email != '' ORDER BY id"  # noqa: S608  # only "?" marks are interpolated
        return (str(r[0]) for r in self._db.execute(sql, states))

    def row(self, row_id: int) -> Row | None:
        """The recipient in row `row_id` (a return path names it), or None."""
        sql = "SELECT id, email, name, list, fields, attempts FROM recipients WHERE id = ?"
        found = self._db.execute(sql, (row_id,)).fetchone()
        return self._row(found) if found else None

    def row_of(self, key: str) -> Row | None:
        """The recipient with the address key `key` (addresses.address_key), or None."""
        sql = "SELECT id, email, name, list, fields, attempts FROM recipients WHERE khash = ?"
        found = self._db.execute(sql, (key_hash(key),)).fetchone()
        return self._row(found) if found else None

    def record_return(self, row_id: int, kind: str, status: str, at: float) -> bool:
        """Record a bounce ("hard", "soft") or a complaint of row `row_id`; False when that
        row already had one of this kind (the same report read twice changes nothing)."""
        sql = "INSERT OR IGNORE INTO returns (id, kind, status, at) VALUES (?, ?, ?, ?)"
        added = self._write(sql, (row_id, kind, status, at)).rowcount > 0
        self.commit()
        return added

    def returned(self) -> dict[str, int]:
        """How many recipients bounced later (hard or soft) and how many complained."""
        sql = (
            "SELECT count(DISTINCT id) FILTER (WHERE kind != 'complaint'),"
            " count(*) FILTER (WHERE kind = 'complaint') FROM returns"
        )
        bounced, complained = self._db.execute(sql).fetchone()
        return {"bounced": int(bounced or 0), "complained": int(complained or 0)}

    def failures(self) -> Iterator[Failure]:
        sql = "SELECT email, code, reply, at FROM recipients WHERE state = ? AND email != ''"
        sql += " ORDER BY id"  # an erased row (email '') has no address to report
        rows = self._db.execute(sql, (State.FAILED,))
        return (Failure(r[0], r[1], r[2] or "", float(r[3] or 0.0)) for r in rows)

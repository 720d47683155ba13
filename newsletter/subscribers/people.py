"""What the folder holds on a person besides their rows: status history, consent records,
soft-bounce counts and sign-ups waiting for confirmation, in `.newsletter/people.sqlite`
(owner-only).

The lists say where a person stands now; this file says how they got there, which is what a
data subject access request asks for (`subscribers show`) and what consent law asks a list owner
to prove. `purge` calls `forget`: with `secure_delete` and no write-ahead log, the deleted rows
are overwritten in the file itself, so the address leaves no trace here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newsletter.addresses import address_key
from newsletter.errors import StorageError
from newsletter.fileio import make_folder, open_private
from newsletter.people_types import ConsentRecord, SignupRecord, SoftBounce, StatusEvent
from newsletter.subscribers.csvfile import now, stamp

PEOPLE_FILE = "people.sqlite"

# A change a fold puts in a list (a journal entry) is recorded once, however often the fold is
# retried: `ref` names the entry (journal nonce and offset). Other changes have no ref (NULL,
# never equal), so the same change made twice in one second is two events, as it happened.
HISTORY_REF = """
DROP INDEX IF EXISTS history_event;
CREATE UNIQUE INDEX IF NOT EXISTS history_ref ON history (ref);
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, email TEXT NOT NULL, list TEXT NOT NULL,
    status TEXT NOT NULL, at TEXT NOT NULL, source TEXT NOT NULL, ref TEXT);
CREATE INDEX IF NOT EXISTS history_key ON history (key);
CREATE TABLE IF NOT EXISTS consent (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, email TEXT NOT NULL, list TEXT NOT NULL,
    at TEXT NOT NULL, source TEXT NOT NULL, text TEXT NOT NULL, confirmed_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS consent_key ON consent (key);
CREATE TABLE IF NOT EXISTS soft_bounces (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, email TEXT NOT NULL, at TEXT NOT NULL,
    issue TEXT NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS soft_bounces_key ON soft_bounces (key);
CREATE TABLE IF NOT EXISTS signups (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, email TEXT NOT NULL, list TEXT NOT NULL,
    name TEXT NOT NULL, asked_at TEXT NOT NULL, consent TEXT NOT NULL,
    confirmed_at TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS signups_key ON signups (key);
"""
TABLES = ("history", "consent", "soft_bounces", "signups")  # every table holding an address
# A sign-up is kept this long, then forgotten: longer than any confirmation link lives
# ([signup] expires_days is at most 30), so an expired link finds nothing either way.
SIGNUP_KEPT = dt.timedelta(days=31)


@dataclass(frozen=True)
class SignupRequest:
    id: int
    email: str
    list: str
    name: str
    asked_at: str
    consent: str  # the sentence the form showed
    confirmed_at: str  # "" until confirmed


def people_path(folder: Path) -> Path:
    return folder / ".newsletter" / PEOPLE_FILE


class People:
    """The file, open for one command or request; `with People(folder) as people: ...`."""

    def __init__(self, folder: Path) -> None:
        self.path = people_path(folder)
        make_folder(self.path.parent)
        with self._errors("cannot open"):
            os.close(open_private(self.path, os.O_RDONLY))  # created owner-only
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=DELETE")  # no -wal file to hold old rows
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(history)")]
            if "ref" not in columns:  # a file from before refs
                self._db.execute("ALTER TABLE history ADD COLUMN ref TEXT")
            self._db.executescript(f"BEGIN IMMEDIATE;{HISTORY_REF}COMMIT;")

    def __enter__(self) -> People:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._errors("cannot close"):
            self._db.close()

    def record_status(
        self, email: str, status: str, *, list_name: str = "", source: str = "", at: str = ""
    ) -> None:
        self.record_events([(email, StatusEvent(list_name, status, at or now(), source))])

    def record_statuses(
        self, changes: Iterable[tuple[str, str]], *, list_name: str, source: str, at: str
    ) -> None:
        """Record many (email, status) changes in one transaction (an import's rows)."""
        events = ((email, StatusEvent(list_name, status, at, source)) for email, status in changes)
        self.record_events(events)

    def record_events(
        self, events: Iterable[tuple[str, StatusEvent]], refs: Iterable[str | None] = ()
    ) -> None:
        """Record (address, event) pairs in one transaction. `refs`: the journal entry each
        came from; an event whose ref is recorded already is not recorded again (a fold
        retried after a crash records its events again)."""
        rows = (
            (address_key(email), email, e.list, e.status, e.at, e.source, ref)
            for (email, e), ref in itertools.zip_longest(events, refs)
        )
        sql = "INSERT OR IGNORE INTO history (key, email, list, status, at, source, ref)"
        sql += " VALUES (?,?,?,?,?,?,?)"
        with self._errors("cannot write"), self._transaction():
            self._db.executemany(sql, rows)

    def record_consent(
        self, email: str, *, list_name: str, source: str, text: str, at: str, confirmed_at: str
    ) -> None:
        self._insert(
            "INSERT INTO consent (key, email, list, at, source, text, confirmed_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (address_key(email), email, list_name, at, source, text, confirmed_at),
        )

    def soft_bounce(
        self, email: str, *, issue: str, status: str, at: dt.datetime, window_days: int = 30
    ) -> int:
        """Record a soft bounce; how many the address had within `window_days` up to `at`."""
        self._insert(
            "INSERT INTO soft_bounces (key, email, at, issue, status) VALUES (?,?,?,?,?)",
            (address_key(email), email, stamp(at), issue, status),
        )
        since = stamp(at - dt.timedelta(days=window_days))
        with self._errors("cannot read"):
            (count,) = self._db.execute(
                "SELECT count(*) FROM soft_bounces WHERE key = ? AND at > ? AND at <= ?",
                (address_key(email), since, stamp(at)),
            ).fetchone()
        return int(count)

    def ask(
        self, email: str, *, list_name: str, name: str, consent: str, at: str, since: str
    ) -> bool:
        """Record a sign-up unless the address asked after `since` (then False, nothing
        written); forgets sign-ups older than SIGNUP_KEPT. One transaction: two requests at
        once cannot both pass."""
        key = address_key(email)
        oldest = stamp(dt.datetime.fromisoformat(at.replace("Z", "+00:00")) - SIGNUP_KEPT)
        with self._errors("cannot write"), self._transaction():
            self._db.execute("DELETE FROM signups WHERE asked_at < ?", (oldest,))
            recent = self._db.execute(
                "SELECT 1 FROM signups WHERE key = ? AND asked_at > ?", (key, since)
            ).fetchone()
            if recent is None:
                self._db.execute(
                    "INSERT INTO signups (key, email, list, name, asked_at, consent)"
                    " VALUES (?,?,?,?,?,?)",
                    (key, email, list_name, name, at, consent),
                )
        return recent is None

    def withdraw(self, email: str, *, list_name: str, at: str) -> None:
        """Forget a sign-up that could not be completed (the person may ask again at once)."""
        with self._errors("cannot write"):
            self._db.execute(
                "DELETE FROM signups WHERE key = ? AND list = ? AND asked_at = ?",
                (address_key(email), list_name, at),
            )

    def signup(self, email: str, *, list_name: str, at: str) -> SignupRequest | None:
        sql = (
            "SELECT id, email, list, name, asked_at, consent, confirmed_at FROM signups"
            " WHERE key = ? AND list = ? AND asked_at = ?"
        )
        with self._errors("cannot read"):
            row = self._db.execute(sql, (address_key(email), list_name, at)).fetchone()
        return SignupRequest(*row) if row is not None else None

    def confirm(self, request: SignupRequest, *, confirmed_at: str) -> bool:
        """Mark the sign-up confirmed and record the consent, in one transaction; False when
        it was confirmed already (by a request running at the same time)."""
        with self._errors("cannot write"), self._transaction():
            done = self._db.execute(
                "UPDATE signups SET confirmed_at = ? WHERE id = ? AND confirmed_at = ''",
                (confirmed_at, request.id),
            ).rowcount
            if done:
                self.record_consent(
                    request.email,
                    list_name=request.list,
                    source="web form",
                    text=request.consent,
                    at=request.asked_at,
                    confirmed_at=confirmed_at,
                )
        return bool(done)

    def history(self, email: str) -> list[StatusEvent]:
        rows = self._select("SELECT list, status, at, source FROM history", email)
        return [StatusEvent(*row) for row in rows]

    def consents(self, email: str) -> list[ConsentRecord]:
        sql = "SELECT list, at, source, text, confirmed_at FROM consent"
        return [ConsentRecord(*row) for row in self._select(sql, email)]

    def signups(self, email: str) -> list[SignupRecord]:
        sql = "SELECT list, name, asked_at, consent, confirmed_at FROM signups"
        return [SignupRecord(*row) for row in self._select(sql, email)]

    def soft_bounces(self, email: str) -> list[SoftBounce]:
        rows = self._select("SELECT at, issue, status FROM soft_bounces", email)
        return [SoftBounce(*row) for row in rows]

    def forget(self, email: str) -> None:
        """Erase every record of the address (secure_delete overwrites the freed space)."""
        key = address_key(email)
        with self._errors("cannot erase from"), self._transaction():
            for table in TABLES:
                self._db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))  # noqa: S608

    def _insert(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._errors("cannot write"):
            self._db.execute(sql, params)

    def _select(self, sql: str, email: str) -> Iterator[tuple[Any, ...]]:
        with self._errors("cannot read"):
            rows = self._db.execute(f"{sql} WHERE key = ? ORDER BY id", (address_key(email),))
            return iter(rows.fetchall())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; an error inside rolls back (in `_errors`)."""
        self._db.execute("BEGIN IMMEDIATE")
        yield
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            db = getattr(self, "_db", None)
            if db is not None and db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            hint = "check the disk and the file's permissions"
            raise StorageError(self.path, action, str(exc), hint) from None

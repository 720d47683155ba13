"""The store's subscriber rows: how a list is named, a row read back as a Subscriber, and the
one transaction every change of who may get mail runs in.

A list of the store is named (`--into NAME`); where the protocols of store.py speak of a list's
path, the store's is `Path(NAME)`, the same on every machine (a send's ledger keeps it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import psycopg

from newsletter.addresses import address_key, key_hash
from newsletter.errors import InvalidInput, StoreUnavailable
from newsletter.models import Status, Subscriber
from newsletter.pg.connection import Conn, connect, reporting, where
from newsletter.pg.migrations import require_current
from newsletter.subscribers.csvfile import COLUMNS, RANK, SCOPE, split_tags

DEFAULT_LIST = "subscribers"  # where `add` writes when no list is named (subscribers.csv)
# pg_advisory_xact_lock key held by every change of the rows or the suppression entries: the
# change numbers then commit in order, so `watch` reading `changed > last` misses none.
CHANGES_KEY = 0x6E6C2D6C69737473

# The columns of a row, as the CSV format names them, in the table's order.
ROW_COLUMNS = "s.email, s.name, s.status, s.tags, s.subscribed_at, s.unsubscribed_at, s.source"


def list_name(path: Path | str) -> str:
    """The store's name of a list as the command line gives it: `news`, `news.csv` or
    `subscribers/news.csv` all name `news`."""
    path = Path(path)
    return path.stem if path.suffix.lower() == ".csv" else path.name


def signed(compact: int) -> int:
    """key_hash (unsigned 64 bits) as PostgreSQL's bigint."""
    return compact - (1 << 64) if compact >= 1 << 63 else compact


def unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def khash(email: str) -> int:
    """The bigint key of an address in the store's tables."""
    return signed(key_hash(address_key(email)))


def should_change(current: str, new: str) -> bool:
    """The rule of subscribers/status.py: a suppression only ever gets stronger."""
    if new in ("unsubscribed", "bounced", "complained"):
        return RANK.get(current, 0) < RANK[new]
    if new == "pending":
        return current == "subscribed"
    return current != "subscribed"


def subscriber(
    list_: str, cells: tuple[Any, ...], scope: str, extra: Mapping[str, str]
) -> Subscriber:
    """A row (the columns of ROW_COLUMNS) as the CSV store gives it."""
    fields = dict(zip(COLUMNS, (str(c) for c in cells), strict=True))
    if scope:
        fields[SCOPE] = scope
    fields.update(extra)
    return Subscriber(
        email=fields["email"],
        name=fields["name"],
        status=cast(Status, fields["status"] or "subscribed"),
        tags=split_tags(fields["tags"]),
        fields=fields,
        list_path=Path(list_),
        smtputf8=not fields["email"].partition("@")[0].isascii(),
    )


class Link:
    """One connection of a process to the store, for short transactions (autocommit between
    them), opened on first use with the schema version checked; reopened after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.place = where(url)
        self._conn: Conn | None = None
        self._lock = threading.Lock()  # serve's thread pool: one transaction at a time

    def open(self, *, autocommit: bool = True) -> Conn:
        """A new connection of its own (a stream), the schema version checked."""
        conn = connect(self.url, autocommit=autocommit)
        try:
            require_current(conn, self.place)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def transaction(self, action: str, *, changes: bool = True) -> Iterator[Conn]:
        """One transaction, committed when the block ends; `changes`: it may change who gets
        mail (takes CHANGES_KEY)."""
        with self._lock:
            conn = self._connection()
            try:
                with _refused(action), reporting(self.place, action), conn.transaction():
                    if changes:
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGES_KEY,))
                    yield conn
            except StoreUnavailable:
                self.close()  # the next call connects again
                raise

    def _connection(self) -> Conn:
        """The open connection, or a new one when there is none or the old one broke while
        idle (a restarted server): the change at hand then goes to the new one."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error:
                self.close()
        if self._conn is None or self._conn.closed:
            self._conn = self.open()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


@contextlib.contextmanager
def _refused(action: str) -> Iterator[None]:
    """A value the server refuses (DataError: a NUL, a number out of range) as InvalidInput:
    the transaction is rolled back, nothing of it is stored."""
    try:
        yield
    except psycopg.DataError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput.one(None, f"{action}: the store refused a value: {first}") from None


def list_ids(conn: Conn, names: list[str]) -> dict[str, int]:
    """The ids of the named lists; InvalidInput naming those the store does not have."""
    rows = conn.execute("SELECT name, id FROM lists WHERE name = ANY(%s)", (names,)).fetchall()
    found = {str(name): int(id_) for name, id_ in rows}
    missing = [n for n in names if n not in found]
    if missing:
        have = [str(r[0]) for r in conn.execute("SELECT name FROM lists ORDER BY name")]
        known = ", ".join(have) or "none yet: `newsletter subscribers import FILE --into NAME`"
        message = f"the store has no list named {', '.join(map(repr, missing))} (lists: {known})"
        raise InvalidInput.one(None, message, field="list")
    return found


def ensure_list(conn: Conn, name: str) -> int:
    """The id of the list `name`, created if missing."""
    conn.execute("INSERT INTO lists (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
    row = conn.execute("SELECT id FROM lists WHERE name = %s", (name,)).fetchone()
    assert row is not None  # inserted or there, in this transaction
    return int(row[0])


def record(
    conn: Conn, email: str, list_: str, status: str, at: str, source: str
) -> None:  # fmt: skip
    """One line of the person's status history."""
    conn.execute(
        "INSERT INTO status_history (khash, email, list, status, at, source)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (khash(email), email, list_, status, at, source),
    )

"""The store's lists in and out: `subscribers import --into NAME` (one transaction: all or
nothing), `export` (the CSV format of docs/subscribers.md), `purge` (only a digest stays), and
`list`, `stats` read from the store."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from newsletter.addresses import address_key, key_digest, key_hash
from newsletter.errors import InvalidInput, Problem, Severity
from newsletter.models import Subscriber
from newsletter.people_types import (
    ConsentRecord,
    Held,
    HeldRow,
    Purged,
    SignupRecord,
    SoftBounce,
    StatusEvent,
)
from newsletter.pg.lists import PgStore, suppress_entry
from newsletter.pg.rows import (
    ROW_COLUMNS,
    ensure_list,
    khash,
    list_ids,
    list_name,
    record,
    subscriber,
    unsigned,
)
from newsletter.subscribers.csvfile import COLUMNS, KNOWN, RANK, SCOPE, now
from newsletter.subscribers.export import write_csv
from newsletter.subscribers.importers import ImportReport, Record, check_source, first_records
from newsletter.subscribers.listing import Stats

# The subscriber tables that hold an address (the sends' rows are the Sends' to scrub:
# PgSends.forget keeps each row, so no sender mails them, without the address).
_ERASE = [
    "DELETE FROM subscribers WHERE khash = %(k)s",
    "DELETE FROM status_history WHERE khash = %(k)s",
    "DELETE FROM consent WHERE khash = %(k)s",
    "DELETE FROM soft_bounces WHERE khash = %(k)s",
    "DELETE FROM signups WHERE khash = %(k)s",
]


def import_into(
    store: PgStore,
    source: Path,
    into: str,
    *,
    fmt: str = "csv",
    skip_invalid: bool = False,
) -> ImportReport:
    """Import `source` into the store's list `into` (created if missing), in one transaction:
    a bad row (without `skip_invalid`) or a failure leaves the store as it was. Merging as
    subscribers.import_list: an address the list has keeps its values (empty ones filled), its
    status only ever gets stronger; suppressed addresses are skipped and reported."""
    name = list_name(into)
    report = ImportReport(source, Path(name), allow_reserved=store.allow_reserved)
    columns, _repeated = check_source(source, fmt, report, skip_invalid)
    extras = [c for c in columns if c.lower() not in KNOWN]
    with store.link.transaction("cannot import") as conn:
        merge = _Merge(conn, ensure_list(conn, name), name, report)
        _add_columns(conn, merge.list_id, extras)
        for _compact, item in first_records(source, fmt, report):
            merge.one(item)
        merge.flush()
    return report


def _add_columns(conn: Any, list_id: int, extras: list[str]) -> None:
    row = conn.execute("SELECT columns FROM lists WHERE id = %s", (list_id,)).fetchone()
    have = list(row[0]) if row else []
    new = [c for c in extras if c not in have]
    if new:
        conn.execute("UPDATE lists SET columns = %s WHERE id = %s", (have + new, list_id))


_KNOWN = [c for c in COLUMNS if c != "email"] + [SCOPE]  # the row's columns a merge may fill
_INSERT = (
    "INSERT INTO subscribers (list_id, khash, email, name, status, tags, subscribed_at,"
    " unsubscribed_at, source, scope, extra) VALUES (%(l)s, %(k)s, %(email)s, %(name)s,"
    " %(status)s, %(tags)s, %(subscribed_at)s, %(unsubscribed_at)s, %(source)s, %(scope)s,"
    " %(extra)s)"
)
_HISTORY = (
    "INSERT INTO status_history (khash, email, list, status, at, source)"
    " VALUES (%(k)s, %(email)s, %(list)s, %(status)s, %(at)s, 'import')"
)
BATCH = 1000  # new rows sent to the server at once (pipelined)


class _Merge:
    """The rows of an import merged into one list, in the caller's transaction: the list's
    addresses and the suppression entries read once, new rows inserted in batches."""

    def __init__(self, conn: Any, list_id: int, name: str, report: ImportReport) -> None:
        self.conn, self.list_id, self.name, self.report = conn, list_id, name, report
        self.suppressed = {int(r[0]) for r in conn.execute("SELECT khash FROM suppressed")}
        held = conn.execute("SELECT khash FROM subscribers WHERE list_id = %s", (list_id,))
        self.held = {int(r[0]) for r in held}
        self.new: list[dict[str, Any]] = []

    def one(self, item: Record) -> None:
        values = {k.lower() if k.lower() in KNOWN else k: v for k, v in item.values.items()}
        held = [k for k, v in values.items() if "\x00" in v]
        if held:  # PostgreSQL's text cannot hold it; the transaction is rolled back
            message = "a NUL character, which the store cannot hold: nothing was imported"
            raise InvalidInput.one(self.report.source, message, field=held[0], line=item.line)
        key = khash(item.email)
        if key in self.suppressed:
            message = (
                f"{item.email} is in the suppression list (erased or unsubscribed): not imported"
            )
            self.report.suppressed.append(
                Problem(self.report.source, message, line=item.line, severity=Severity.WARNING)
            )
        elif key in self.held:
            self._update(item.email, key, values)
        else:
            self._add(item.email, key, values)

    def _add(self, email: str, key: int, values: dict[str, str]) -> None:
        row: dict[str, Any] = {c: values.get(c, "") for c in (*COLUMNS, SCOPE)}
        row["status"] = row["status"] or "subscribed"
        extra = {k: v for k, v in values.items() if k not in KNOWN}
        row |= {"email": email, "l": self.list_id, "k": key, "extra": json.dumps(extra)}
        row["at"] = (
            row["unsubscribed_at"] if row["status"] != "subscribed" else row["subscribed_at"]
        ) or now()
        row["list"] = self.name
        self.new.append(row)
        self.held.add(key)
        self.report.added += 1
        if len(self.new) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.new:
            with self.conn.cursor() as cursor:
                cursor.executemany(_INSERT, self.new)
                cursor.executemany(_HISTORY, self.new)
            self.new = []

    def _update(self, email: str, key: int, values: dict[str, str]) -> None:
        self.flush()  # the row may be one of this import's (a repeated address merged first)
        row = self.conn.execute(
            f"SELECT {', '.join(_KNOWN)}, extra FROM subscribers WHERE list_id = %s AND khash = %s",  # noqa: S608  # column names
            (self.list_id, key),
        ).fetchone()
        current = dict(zip(_KNOWN, (str(c) for c in row[:-1]), strict=True))
        merged = _merged(current, values)
        extra = {k: v for k, v in values.items() if k not in KNOWN}
        merged_extra = {**extra, **{k: v for k, v in row[-1].items() if v}}
        if merged == current and merged_extra == row[-1]:
            self.report.unchanged += 1
            return
        sets = ", ".join(f"{c} = %({c})s" for c in _KNOWN)
        self.conn.execute(
            f"UPDATE subscribers SET {sets}, extra = %(extra)s,"  # noqa: S608  # column names
            " changed = nextval('subscriber_changes') WHERE list_id = %(l)s AND khash = %(k)s",
            {**merged, "extra": json.dumps(merged_extra), "l": self.list_id, "k": key},
        )
        if merged["status"] != current["status"]:
            at = merged["unsubscribed_at"] or now()
            record(self.conn, email, self.name, merged["status"], at, "import")
        self.report.updated += 1


def _merged(current: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    merged = dict(current)
    for column, value in current.items():
        incoming = values.get(column, "")
        if column == "status":
            if incoming and RANK.get(incoming, 0) > RANK.get(value or "subscribed", 0):
                merged[column] = incoming
        elif incoming and not value.strip():
            merged[column] = incoming
    return merged


# ---------------------------------------------------------------------------------------------
# export, list, stats


def export_columns(store: PgStore, lists: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(the lists, the header of their export): the CSV columns, scope when a row has one, then
    each list's own columns in import order."""
    names = store.list_names() if lists is None else list(lists)
    with store.link.transaction("cannot read the lists", changes=False) as conn:
        ids = list_ids(conn, names) if names else {}
        extras: dict[str, None] = {}
        for (columns,) in conn.execute(
            "SELECT columns FROM lists WHERE id = ANY(%s) ORDER BY name", (list(ids.values()),)
        ):
            extras.update(dict.fromkeys(columns))
        scoped = conn.execute(
            "SELECT 1 FROM subscribers WHERE list_id = ANY(%s) AND scope <> '' LIMIT 1",
            (list(ids.values()),),
        ).fetchone()
    header = [*COLUMNS, *([SCOPE] if scoped else []), *extras]
    return names, header


def rows(
    store: PgStore, lists: Sequence[str] | None = None, status: str | None = None
) -> Iterator[Subscriber]:
    """Every row of the lists (default: all, by name), in import order, streamed."""
    names = store.list_names() if lists is None else [list_name(n) for n in lists]
    conn = store.link.open(autocommit=False)
    try:
        with conn.cursor(name="newsletter_rows") as cursor:
            cursor.itersize = 2000
            cursor.execute(
                f"SELECT l.name, {ROW_COLUMNS}, s.scope, s.extra FROM subscribers s"  # noqa: S608  # constant
                " JOIN unnest(%s::text[]) WITH ORDINALITY AS c(name, n) ON true"
                " JOIN lists l ON l.id = s.list_id AND l.name = c.name"
                " WHERE %s::text IS NULL OR s.status = %s ORDER BY c.n, s.position",
                (names, status, status),
            )
            for row in cursor:
                yield subscriber(str(row[0]), row[1:8], str(row[8]), row[9])
    finally:
        conn.close()


def suppressed_hashes(store: PgStore) -> set[int]:
    with store.link.transaction("cannot read the suppressions", changes=False) as conn:
        return {unsigned(int(r[0])) for r in conn.execute("SELECT khash FROM suppressed")}


def stats(store: PgStore) -> Stats:
    """Rows per list and status, subscribed rows per tag, and the distinct recipients of a
    send to every list."""
    result = Stats()
    selection = store.select(None)
    suppressed = suppressed_hashes(store)
    for person in rows(store):
        result.by_list.setdefault(str(person.list_path), Counter())[person.status] += 1
        if person.status == "subscribed":
            result.by_tag.update(person.tags)
            result.held_back += key_hash(address_key(person.email)) in suppressed
    result.recipients = sum(1 for _ in selection)
    result.suppressed_entries = len(suppressed)
    return result


def purge(store: PgStore, email: str) -> Purged:
    """Erase an address: every row of it goes (its lists' rows, status history, consent
    records, soft bounces, sign-ups) and one suppression entry (a digest) stays, all in one
    transaction. The sends' records are scrubbed by PgSends.forget (Newsletter.purge)."""
    with store.link.transaction("cannot purge") as conn:
        held = conn.execute(
            "SELECT l.name FROM subscribers s JOIN lists l ON l.id = s.list_id"
            " WHERE s.khash = %s ORDER BY l.name",
            (khash(email),),
        ).fetchall()
        suppress_entry(conn, email, "purged")
        for statement in _ERASE:
            conn.execute(statement, {"k": khash(email)})
    return Purged(email, len(held), [Path(str(r[0])) for r in held])


def export(store: PgStore, out: IO[str], lists: Sequence[str] | None, status: str | None) -> int:
    """The store's lists (default: all) as one CSV list; how many rows."""
    names, header = export_columns(store, lists)
    return write_csv(rows(store, names, status), header, out)


# ---------------------------------------------------------------------------------------------
# what is held on a person (`subscribers show`)

# Each table's records of a 64-bit hash, oldest first; the address is compared in Python too,
# so another address sharing the hash is never shown.
_HELD = {
    "history": "SELECT email, list, status, at, source FROM status_history",
    "consents": "SELECT email, list, at, source, text, confirmed_at FROM consent",
    "soft_bounces": "SELECT email, at, issue, status FROM soft_bounces",
    "signups": "SELECT email, list, name, asked_at, consent, confirmed_at FROM signups",
}
_HELD_ROWS = f"""
SELECT l.name, {ROW_COLUMNS}, s.scope, s.extra,
       (SELECT count(*) FROM subscribers o WHERE o.list_id = s.list_id AND o.position <= s.position)
  FROM subscribers s JOIN lists l ON l.id = s.list_id WHERE s.khash = %s ORDER BY l.name
"""  # noqa: S608  # constant columns


def held(store: PgStore, email: str) -> Held:
    """Every row of the address (its list's name as the path, its place in the list's export
    as the line: the header is line 1), its suppression entry, history, consent records, soft
    bounces and sign-ups, read in one transaction."""
    key = address_key(email)
    with store.link.transaction("cannot read what is held", changes=False) as conn:
        rows = [
            HeldRow(Path(str(r[0])), int(r[10]) + 1, _held_columns(r))
            for r in conn.execute(_HELD_ROWS, (khash(email),))
            if address_key(str(r[1])) == key
        ]
        entry = conn.execute(
            "SELECT reason FROM suppressed WHERE digest = %s", (key_digest(key),)
        ).fetchone()
        found = {name: _records(conn, sql, email) for name, sql in _HELD.items()}
    return Held(
        tuple(rows),
        None if entry is None else str(entry[0]),
        tuple(StatusEvent(*r) for r in found["history"]),
        tuple(ConsentRecord(*r) for r in found["consents"]),
        tuple(SoftBounce(*r) for r in found["soft_bounces"]),
        tuple(SignupRecord(*r) for r in found["signups"]),
    )


def _held_columns(row: tuple[Any, ...]) -> dict[str, str]:
    """The row's columns as an export writes them: the CSV columns, its scope, its own."""
    return dict(subscriber(str(row[0]), row[1:8], str(row[8]), row[9]).fields)


def _records(conn: Any, sql: str, email: str) -> list[tuple[str, ...]]:
    """The rows of `sql` for the address (without their leading email column)."""
    key = address_key(email)
    found = conn.execute(f"{sql} WHERE khash = %s ORDER BY id", (khash(email),))
    return [tuple(str(c) for c in r[1:]) for r in found if address_key(str(r[0])) == key]

"""Every send of the newsletter in the store (store.Sends): any number of senders, on any
machines, join one send, named by the issue's slug and the destination and bound to the
content's digest, never by a local path."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from newsletter.errors import BadContinueFrom, ContentChanged, OtherSend, SendersAtWork
from newsletter.people_types import Scrubbed, SendOutcome
from newsletter.pg.connection import Conn, connect, reporting, where
from newsletter.pg.ledger import PgLedger
from newsletter.pg.migrations import require_current
from newsletter.pg.names import send_name, worker_id
from newsletter.pg.rows import khash
from newsletter.sends import continue_sends
from newsletter.store import ERASED, Failure, SendLedger, SendSummary, State

WAIT_NOTE_SECONDS = 2.0  # how long a plan waits on another sender's snapshot before saying so

_CURRENT = (
    "SELECT id, digest FROM sends WHERE slug = %s AND destination = %s AND replaced_at IS NULL"
)
_SUMMARY = """
SELECT s.id, s.slug, s.destination, coalesce(c.value, ''), coalesce(f.value, '[]'),
       (SELECT json_object_agg(state, n) FROM (SELECT state, count(*) n FROM send_recipients
         WHERE send_id = s.id GROUP BY state) t),
       (SELECT max(at) FROM send_recipients WHERE send_id = s.id)
FROM sends s
LEFT JOIN send_meta c ON c.send_id = s.id AND c.name = 'content'
LEFT JOIN send_meta f ON f.send_id = s.id AND f.name = 'continued_from'
WHERE s.replaced_at IS NULL AND (%(slug)s::text IS NULL OR s.slug = %(slug)s)
ORDER BY s.id
"""
_OUTCOMES = """
SELECT s.id, s.slug, s.destination, r.state, r.at FROM send_recipients r
JOIN sends s ON s.id = r.send_id WHERE r.khash = %s ORDER BY s.id
"""
# A purged person's rows, as ledger_people.erase does it: pending (claimed or not) and
# deferred rows are skipped, the others keep their state; the worker stays (its share in
# `status`).
_FORGET = """
WITH erased AS (
    UPDATE send_recipients SET email = '', name = '', fields = '{}', next_at = NULL,
        state = CASE WHEN state IN (0, 3) THEN 6 ELSE state END, reply = %s
    WHERE khash = %s RETURNING send_id)
SELECT s.id, s.slug, s.destination, count(*) FROM erased e JOIN sends s ON s.id = e.send_id
GROUP BY s.id, s.slug, s.destination ORDER BY s.id
"""
_WORKING = """
SELECT count(*) FROM send_workers WHERE send_id = %s AND finished_at IS NULL AND lease_until > now()
"""
_LIVE = """
SELECT 1 FROM send_workers w JOIN sends s ON s.id = w.send_id
WHERE s.slug = %s AND s.replaced_at IS NULL AND w.finished_at IS NULL AND w.lease_until > now()
"""


class PgSends:
    """The sends of the store at `url`; connects at the first use, checking the schema."""

    def __init__(
        self, url: str, *, lease: float = 30.0, notify: Callable[[str], None] | None = None
    ) -> None:
        self.url = url
        self.place = where(url)
        self.lease = lease
        self.notify = notify or (lambda _text: None)

    # -- connections -------------------------------------------------------------------------

    def _connect(self, *, autocommit: bool = False) -> Conn:
        conn = connect(self.url, autocommit=autocommit)
        try:
            require_current(conn, self.place)
            if not autocommit:
                conn.rollback()  # the check's transaction: the caller's starts afresh
        except BaseException:
            conn.close()
            raise
        return conn

    def _read(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of a query, on a connection of its own (a Newsletter has no close(): nothing
        is left open between calls; a plan makes a few of these)."""
        with self._connect(autocommit=True) as conn, reporting(self.place, "cannot read sends"):
            return conn.execute(sql, params).fetchall()

    def _ledger(self, conn: Conn, send_id: int, slug: str, destination: str) -> PgLedger:
        return PgLedger(
            conn, send_id, url=self.url, worker=worker_id(), place=self.place,
            lease_seconds=self.lease,
            draft=True, name=send_name(send_id, slug, destination),
        )  # fmt: skip

    # -- store.Sends -------------------------------------------------------------------------

    def open(
        self, slug: str, destination: str, digest: str, *, on_change: str | None = None
    ) -> tuple[PgLedger, str]:
        """This send's ledger as a draft (its transaction commits at save()); the first
        sender creates the send, the others wait for its plan to be saved or dropped."""
        conn = self._connect()
        try:
            return self._open(conn, slug, destination, digest, on_change)
        except BaseException:
            conn.close()
            raise

    def _open(
        self, conn: Conn, slug: str, destination: str, digest: str, on_change: str | None
    ) -> tuple[PgLedger, str]:
        send_id, bound = self._current_or_new(conn, slug, destination, digest)
        ledger = self._ledger(conn, send_id, slug, destination)
        if bound == digest:
            return ledger, ""
        working = int(ledger._one(_WORKING, (send_id,)))
        if working and (on_change is not None or not ledger.attempted()):
            raise SendersAtWork(ledger.path, working)  # they go on with the earlier version
        if not ledger.attempted() or on_change == "continue":
            ledger._sql("UPDATE sends SET digest = %s WHERE id = %s", (digest, send_id))
            return ledger, "the issue changed since the plan was made: the new version is sent"
        if on_change == "restart":
            ledger._sql("UPDATE sends SET replaced_at = now() WHERE id = %s", (send_id,))
            fresh, _ = self._current_or_new(conn, slug, destination, digest)
            note = f"the issue changed: a new send; the old one is kept as {ledger.path}"
            return self._ledger(conn, fresh, slug, destination), note
        counts = ledger.counts()
        raise ContentChanged(ledger.path, counts["sent"], sum(counts.values()))

    def _current_or_new(
        self, conn: Conn, slug: str, destination: str, digest: str
    ) -> tuple[int, str]:
        """(id, digest) of the current send, created (uncommitted) when there is none. While
        another sender's plan holds a new one uncommitted, wait for it, and say so."""
        said = False
        while True:
            with reporting(self.place, "cannot open the send"):
                found = conn.execute(_CURRENT, (slug, destination)).fetchone()
                if found is not None:
                    return int(found[0]), str(found[1])
                try:
                    with conn.transaction():  # a savepoint: a timeout undoes only the insert
                        conn.execute(
                            f"SET LOCAL lock_timeout = '{int(WAIT_NOTE_SECONDS * 1000)}ms'"
                        )
                        made = conn.execute(
                            "INSERT INTO sends (slug, destination, digest) VALUES (%s, %s, %s) "
                            "ON CONFLICT (slug, destination) WHERE replaced_at IS NULL DO NOTHING "
                            "RETURNING id",
                            (slug, destination, digest),
                        ).fetchone()
                        conn.execute("SET LOCAL lock_timeout = 0")
                except psycopg.errors.LockNotAvailable:
                    made = None
                    if not said:
                        self.notify(f"waiting for another sender's plan of {slug} to be sent")
                        said = True
                if made is not None:
                    return int(made[0]), digest

    def find(self, slug: str, destination: str) -> SendLedger | None:
        conn = self._connect(autocommit=True)  # a reader: never holds a snapshot or a lock
        with reporting(self.place, "cannot read the send"):
            found = conn.execute(_CURRENT, (slug, destination)).fetchone()
        if found is None:
            conn.close()
            return None
        ledger = self._ledger(conn, int(found[0]), slug, destination)
        ledger.draft = False
        return ledger

    def where(self, slug: str, destination: str) -> Path:
        return Path(f"store {self.place}") / send_name(0, slug, destination).name[7:]

    def summaries(self, slug: str | None = None) -> list[SendSummary]:
        return [_summary(row) for row in self._read(_SUMMARY, {"slug": slug})]

    def failures(self) -> list[Failure]:
        rows = self._read("SELECT email, code, reply, at FROM send_recipients WHERE state = 4")
        return [Failure(r[0], r[1], r[2] or "", float(r[3] or 0.0)) for r in rows]

    def started(self) -> bool:
        return True

    def lock(self, name: str) -> contextlib.AbstractContextManager[object]:
        """Nothing to hold: any number of senders work on one send at once."""
        return contextlib.nullcontext()

    def running(self, slug: str) -> bool:
        return bool(self._read(_LIVE, (slug,)))

    def others(
        self, slug: str, content: str, destination: str, continue_from: Sequence[Path]
    ) -> list[SendSummary]:
        """As sends.other_sends: the sends of this issue through other servers must each be
        continued from (`--continue-from` with the name `status` shows, or recorded)."""
        if destination == "outbox":
            if continue_from:
                raise BadContinueFrom(None, "is for SMTP sends: this one goes to the outbox")
            return []
        found = self.elsewhere(slug, content, destination)
        names = {one.path.name for one in found}
        for path in continue_from:
            if path.name not in names:
                reason = "not a send in the store of this issue through another server"
                raise BadContinueFrom(path, reason)
        mine = [one for one in self.summaries(slug) if one.destination == destination]
        recorded = set(mine[0].continued_from) if mine else set()
        chosen = {path.name for path in continue_from}
        needed = [one for one in found if one.path.name not in recorded]
        refused = [one for one in needed if one.path.name not in chosen]
        if refused:
            raise OtherSend(destination, refused, needed)
        return found

    def elsewhere(self, slug: str, content: str, destination: str) -> list[SendSummary]:
        return [
            one
            for one in self.summaries()
            if one.destination not in (destination, "outbox")
            and (one.slug == slug or (content and one.content == content))
            and (one.sent or one.unknown)
        ]

    def carry_over(
        self,
        ledger: SendLedger,
        sources: Sequence[SendSummary],
        *,
        slug: str,
        destination: str,
        content: str,
    ) -> list[str]:
        return continue_sends(ledger, sources, slug=slug, destination=destination, content=content)

    # -- a person's records (`subscribers show`, `purge`) ------------------------------------

    def outcomes(self, email: str) -> list[SendOutcome]:
        """What each send of the store (replaced ones too) recorded for the address."""
        rows = self._read(_OUTCOMES, (khash(email),))
        return [
            SendOutcome(
                slug, destination, State(state).label, at, str(send_name(send, slug, destination))
            )
            for send, slug, destination, state, at in rows
        ]

    def forget(self, email: str) -> list[Scrubbed]:
        """Erase the address from every send of the store in one transaction: each row keeps
        its hash and state (one not yet sent becomes skipped, so no sender mails it), and loses
        the address, name, merge fields and server reply."""
        with self._connect(autocommit=True) as conn, reporting(self.place, "cannot erase"):
            rows = conn.execute(_FORGET, (ERASED, khash(email))).fetchall()
        return [
            Scrubbed(str(send_name(send, slug, destination)), int(n), complete=True)
            for send, slug, destination, n in rows
        ]


def _summary(row: tuple[Any, ...]) -> SendSummary:
    send_id, slug, destination, content, continued, states, last = row
    by_state = {int(k): int(v) for k, v in (states or {}).items()}
    counts = {state.label: by_state.get(int(state), 0) for state in State}
    return SendSummary(
        path=send_name(int(send_id), slug, destination),
        slug=slug,
        destination=destination,
        content=content,
        sent=counts["sent"],
        unknown=counts["unknown"] + counts["sending"],
        continued_from=tuple(json.loads(continued)),
        counts=counts,
        last_change=float(last) if last is not None else None,
    )

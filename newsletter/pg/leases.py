"""Senders' leases on one send in the store: joining with one, renewing it, ending it, and
taking back what a sender whose lease expired left, its database session ended first.

A frozen sender cannot be asked to let go, and the server ends a session by itself only when it
is idle in a transaction: one stopped in the middle of a pipeline or of a message keeps its
row locks with no timeout. So every sender records its session when it joins, and the others
end that session once its lease has expired: at once when they take back its claims, and every
third of a lease from a thread of their own (`Reaper`), so a sender waiting on a lock the frozen
one holds is freed too, whatever statement it waits in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from newsletter.errors import StoreUnavailable
from newsletter.pg.connection import Conn, connect, reporting

if TYPE_CHECKING:
    from newsletter.pg.ledger import PgLedger

POLL_SECONDS = 0.25  # with nothing left to claim: how often to look at the other senders
LOCK_WAIT_MS = 500  # taking back an expired sender's rows waits at most this for a lock
CUT_OFF_MS = 2000  # ending an expired sender's session waits at most this for it to end

_JOIN = """
INSERT INTO send_workers (send_id, worker, lease_until, backend_pid, backend_start)
SELECT %s, %s, now() + make_interval(secs => %s), pid, backend_start
FROM pg_stat_activity WHERE pid = pg_backend_pid()
ON CONFLICT (send_id, worker) DO UPDATE SET lease_until = EXCLUDED.lease_until,
    finished_at = NULL, backend_pid = EXCLUDED.backend_pid,
    backend_start = EXCLUDED.backend_start
"""

# The sessions of senders whose lease expired, ended (waiting at most CUT_OFF_MS for each):
# a frozen sender may hold row locks in a session the server never times out (stopped
# mid-pipeline or mid-message), and nothing it does after its lease may count. Only sessions
# of our own role are visible and can be ended: across roles the server's idle timeout is all.
_CUT_OFF = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid, %s))
FROM send_workers w JOIN pg_stat_activity a
  ON a.pid = w.backend_pid AND a.backend_start = w.backend_start
WHERE w.send_id = %s AND w.worker <> %s AND w.finished_at IS NULL AND w.lease_until <= now()
  AND a.pid <> pg_backend_pid()
"""

# This sender's lease, renewed while its own session waits on a lock (a frozen sender's, say):
# it is alive, only its send loop cannot renew while it waits, and the others must not end it
_WAITING = """
UPDATE send_workers w SET lease_until = now() + make_interval(secs => %s)
FROM pg_stat_activity a
WHERE w.send_id = %s AND w.worker = %s AND w.finished_at IS NULL
  AND a.pid = w.backend_pid AND a.backend_start = w.backend_start AND a.wait_event_type = 'Lock'
"""

# A sender whose lease expired: its attempts in flight may have gone out (unknown), its claims
# and its retries go back to anyone. One transaction per expired sender, which it marks done.
_EXPIRED = """
SELECT worker FROM send_workers
WHERE send_id = %s AND finished_at IS NULL AND lease_until <= now() AND worker <> %s
LIMIT 1 FOR UPDATE SKIP LOCKED
"""
_IN_DOUBT = """
UPDATE send_recipients SET state = 5,
    reply = 'its sender stopped while it was in flight: may have been delivered'
WHERE send_id = %s AND worker = %s AND state = 1
"""
_UNCLAIM = """
UPDATE send_recipients SET worker = NULL, state = 0, next_at = NULL
WHERE send_id = %s AND worker = %s AND state IN (0, 3)
"""
# A sender that stops cleanly gives back its claims not started (its deferred rows stay
# its own: a later sender claims the deferred rows of a finished one)
_GIVE_BACK = """
UPDATE send_recipients SET worker = NULL, state = 0, next_at = NULL
WHERE send_id = %s AND worker = %s AND state = 0
"""
_UNUSED_GRANTS = (
    "DELETE FROM send_grants WHERE send_id = %s AND worker = %s AND at > extract(epoch FROM now())"
)
_ENDED = "UPDATE send_workers SET finished_at = now() WHERE send_id = %s AND worker = %s"

_WORKING = """
SELECT extract(epoch FROM min(lease_until) - now()) FROM send_workers w
WHERE w.send_id = %s AND w.worker <> %s AND w.finished_at IS NULL AND EXISTS (
    SELECT 1 FROM send_recipients r
    WHERE r.send_id = w.send_id AND r.worker = w.worker AND r.state IN (0, 1, 3))
"""


def join(ledger: PgLedger) -> None:
    """`ledger`'s sender joins its send with a lease, naming its session (uncommitted)."""
    ledger._sql(_JOIN, (ledger.send_id, ledger.worker, ledger.lease_seconds))
    # A sender frozen idle in a transaction must not hold its row locks past its lease: the
    # server ends such a session (a live sender commits at least every third of a lease); one
    # frozen anywhere else, the others end (cut_off)
    timeout = f"{int(ledger.lease_seconds * 1000)}ms"
    ledger._sql(f"SET idle_in_transaction_session_timeout = '{timeout}'")


def leave(ledger: PgLedger) -> None:
    """Give back what `ledger`'s sender claimed and did not start, and end its lease."""
    mine = (ledger.send_id, ledger.worker)
    ledger._sql(_GIVE_BACK, mine)
    ledger._sql(_UNUSED_GRANTS, mine)
    ledger._sql(_ENDED, mine)
    ledger.commit()


def cut_off(conn: Conn, send_id: int, worker: str) -> int:
    """End the sessions of the senders of `send_id` (other than `worker`) whose lease expired;
    how many ended."""
    found = conn.execute(_CUT_OFF, (CUT_OFF_MS, send_id, worker)).fetchone()
    return int(found[0]) if found else 0


class PgLease:
    """This sender's lease on its send (store.Lease)."""

    def __init__(self, ledger: PgLedger, url: str) -> None:
        self.ledger = ledger
        self.seconds = ledger.lease_seconds
        self.reaper = Reaper(url, ledger.send_id, ledger.worker, self.seconds)

    def renew(self) -> bool:
        """False when the lease had expired and the others took back this sender's claims
        (it was stopped or cut off longer than the lease): it must stop."""
        ledger = self.ledger
        renewed = ledger._sql(
            "UPDATE send_workers SET lease_until = now() + make_interval(secs => %s) "
            "WHERE send_id = %s AND worker = %s AND finished_at IS NULL",
            (self.seconds, ledger.send_id, ledger.worker),
        )
        ledger.commit()
        return bool(renewed.rowcount)

    def others(self) -> float | None:
        ledger = self.ledger
        recover_expired(ledger)
        wait = ledger._one(_WORKING, (ledger.send_id, ledger.worker))
        ledger.commit()
        if wait is None:
            return None
        # wake when the first lease may have expired, and look often meanwhile: a sender that
        # finishes ends its lease at once, and the last claims may come back then
        return min(max(float(wait), 0.0) + 0.05, POLL_SECONDS)

    def reserve(
        self, span: float, plan: Callable[[float, list[float]], list[float]]
    ) -> tuple[float, list[float]]:
        ledger = self.ledger
        send = ledger.send_id
        ledger._sql("INSERT INTO send_rate (send_id) VALUES (%s) ON CONFLICT DO NOTHING", (send,))
        ledger.commit()
        try:
            with ledger.conn.transaction():
                ledger._sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
                ledger._sql("SELECT 1 FROM send_rate WHERE send_id = %s FOR UPDATE", (send,))
                return self._grant(span, plan)
        except psycopg.errors.LockNotAvailable:
            return 0.0, []  # a sender frozen while it held the lock: ask again (plan not run)

    def _grant(
        self, span: float, plan: Callable[[float, list[float]], list[float]]
    ) -> tuple[float, list[float]]:
        ledger = self.ledger
        send = ledger.send_id
        now = float(ledger._one("SELECT extract(epoch FROM clock_timestamp())"))
        ledger._sql("DELETE FROM send_grants WHERE send_id = %s AND at < %s", (send, now - 86400))
        granted = [
            float(r[0])
            for r in ledger._sql(
                "SELECT at FROM send_grants WHERE send_id = %s AND at > %s ORDER BY at",
                (send, now - span),
            ).fetchall()
        ]
        times = plan(now, granted)
        with reporting(ledger.place, "cannot record the send times"), ledger.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO send_grants (send_id, worker, at) VALUES (%s, %s, %s)",
                [(send, ledger.worker, t) for t in times],
            )
        return now, times


def recover_expired(ledger: PgLedger) -> int:
    """Take back what every sender whose lease expired left, first ending its session; how
    many attempts became unknown. A row still locked (a session still ending, or one of
    another role) is left for a later look, never waited on."""
    in_doubt = 0
    with reporting(ledger.place, "cannot take back an expired sender's claims"):
        cut_off(ledger.conn, ledger.send_id, ledger.worker)
    ledger.commit()
    while True:
        try:
            with ledger.conn.transaction():
                ledger._sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
                found = ledger._one(_EXPIRED, (ledger.send_id, ledger.worker))
                if found is None:
                    return in_doubt
                count = int(ledger._sql(_IN_DOUBT, (ledger.send_id, found)).rowcount)
                ledger._sql(_UNCLAIM, (ledger.send_id, found))
                ledger._sql(_ENDED, (ledger.send_id, found))
            in_doubt += count
        except psycopg.errors.LockNotAvailable:
            return in_doubt


class Reaper:
    """Every third of a lease, on a connection of its own, end the sessions of the send's
    senders whose lease expired, after renewing this sender's lease if its session waits on
    a lock. A thread, so that it works while this sender waits on a lock (a statement of the
    main path blocks the whole send); it takes no lock itself."""

    def __init__(self, url: str, send_id: int, worker: str, lease: float) -> None:
        self.url, self.send_id, self.worker, self.lease = url, send_id, worker, lease
        self.every = lease / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * CUT_OFF_MS / 1000)

    def _run(self) -> None:
        conn: Conn | None = None
        try:
            while not self._stop.wait(self.every):
                try:
                    conn = conn or connect(self.url, autocommit=True)
                    conn.execute(_WAITING, (self.lease, self.send_id, self.worker))
                    cut_off(conn, self.send_id, self.worker)
                except (StoreUnavailable, psycopg.Error):
                    if conn is not None:  # the main path says what became of the store
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

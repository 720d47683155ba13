"""A sender frozen past its lease, at each point where it can be frozen, never holds its
claims: the others take them back and send them (tests against a real PostgreSQL).

A frozen process cannot be asked to let go, and the server ends a session on its own only when
it is idle in a transaction; a client stopped in the middle of a pipeline or of a message
leaves its session waiting for input with no timeout, holding its row locks. These tests put
one sender's session in each of those states, as `SIGSTOP` would at the wrong moment."""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from newsletter.pg.connection import Conn, connect, where
from newsletter.pg.leases import cut_off
from newsletter.pg.ledger import PgLedger
from newsletter.pg.migrations import migrate
from newsletter.pg.sends import PgSends
from newsletter.store import Entry, Row
from tests.pgcluster import Cluster
from tests.send_helpers import REPO
from tests.waits import wait_until

LEASE = 1.0  # seconds: the frozen sender's; the test waits on the outcome, never on a clock
PEOPLE = 40


def _idle_in_transaction(conn: Conn, lock: str) -> None:
    """Stopped between two statements of a transaction holding its locks."""
    conn.execute(lock.encode())


def _mid_pipeline(conn: Conn, lock: str) -> None:
    """Stopped inside a pipeline (as executemany sends outcomes or send times): the server ran
    the statement and waits for the rest, with no Sync, so it is not idle in a transaction."""
    conn.execute("SELECT 1")  # a transaction
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    pgconn.send_query_params(lock.encode(), None)
    while pgconn.flush():
        pass


def _mid_message(conn: Conn, lock: str) -> None:
    """Stopped in the middle of writing a message: the server waits for its end."""
    conn.execute(lock.encode())
    os.write(conn.pgconn.socket, b"Q" + struct.pack("!i", 1000) + b"UPDATE send_rec")


def rows_lock(rows: list[Row]) -> str:
    ids = ",".join(str(r.id) for r in rows)
    return f"UPDATE send_recipients SET at = at WHERE id IN ({ids})"  # noqa: S608  # numbers


FREEZES = {
    "idle in a transaction": _idle_in_transaction,
    "mid-pipeline": _mid_pipeline,
    "mid-message": _mid_message,
}


@pytest.fixture
def store(pg_cluster: Cluster) -> str:
    url = pg_cluster.url(pg_cluster.create_database())
    with connect(url) as conn:
        migrate(conn, "test")
    return url


@contextlib.contextmanager
def sender(url: str, send: PgLedger, name: str, lease: float) -> Iterator[PgLedger]:
    """Another sender of the send `send`, joined with its own lease."""
    ledger = PgLedger(
        connect(url), send.send_id, url=url, worker=name, place=where(url), lease_seconds=lease,
        draft=True, name=send.path,
    )  # fmt: skip
    ledger.save()
    try:
        yield ledger
    finally:
        with contextlib.suppress(Exception):
            ledger.conn.close()


def state_of(url: str, send_id: int) -> dict[tuple[int, str | None], int]:
    """How many rows per (state, worker)."""
    with connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, worker, count(*) FROM send_recipients WHERE send_id = %s GROUP BY 1, 2",
            (send_id,),
        ).fetchall()
    return {(int(s), w): int(n) for s, w, n in rows}


@contextlib.contextmanager
def two_senders(
    url: str, frozen: float = LEASE, other: float = 60.0, third: float | None = None
) -> Iterator[tuple[PgLedger, PgLedger]]:
    """A send of PEOPLE recipients and two of its senders with these leases: one to be frozen,
    the other (and a third, given its lease, that does nothing but look through its Reaper)."""
    planner, _ = PgSends(url, lease=60.0).open("issue-1", "smtp://127.0.0.1:25", "d")
    planner.add(Entry(f"r{i}@example.org", f"r{i}@example.org") for i in range(PEOPLE))
    planner.save()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(planner))
        first = stack.enter_context(sender(url, planner, "frozen:1:t", frozen))
        second = stack.enter_context(sender(url, planner, "other:2:t", other))
        if third is not None:
            stack.enter_context(sender(url, planner, "third:3:t", third))
        yield first, second


def in_thread(call: Callable[[], object], what: str) -> object:
    """`call()`'s result, run in a thread (it may wait on a lock); fail if it never ends."""
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(call()), daemon=True)
    thread.start()
    wait_until(lambda: not thread.is_alive(), what)
    assert done, f"{what}: raised"
    return done[0]


def waits_then_starts(
    frozen: PgLedger, other: PgLedger, freeze: Callable[[Conn, str], None]
) -> None:
    """`frozen` stops holding rows `other` claimed; `other` starts one of them (waiting on
    the lock until the frozen one's session is ended), and commits."""
    mine = other.pending(0, 5)
    freeze(frozen.conn, rows_lock(mine))
    started = in_thread(lambda: other.start(mine[0].id), "the other sender's start")
    assert started is True
    other.commit()


@pytest.mark.parametrize("freeze", FREEZES.values(), ids=list(FREEZES))
def test_a_sender_frozen_anywhere_past_its_lease_loses_its_claims(
    store: str, freeze: Callable[[Conn, str], None]
) -> None:
    with two_senders(store) as (frozen, other):
        claimed = frozen.pending(0, 10)
        assert frozen.start(claimed[0].id)  # one attempt in flight, committed
        frozen.commit()
        freeze(frozen.conn, rows_lock(claimed))
        lease = other.lease()
        assert lease is not None

        def taken_back() -> bool:
            lease.others()
            return state_of(store, frozen.send_id).get((0, "frozen:1:t"), 0) == 0

        wait_until(taken_back, "the frozen sender's claims taken back")
        rest = other.pending(0, PEOPLE)
    assert [r.id for r in rest] == [r.id for r in claimed[1:]] + list(range(11, PEOPLE + 1))
    after = state_of(store, frozen.send_id)
    assert after[(5, "frozen:1:t")] == 1  # what was in flight: unknown, never resent


@pytest.mark.parametrize("freeze", FREEZES.values(), ids=list(FREEZES))
def test_a_sender_waiting_on_a_lock_a_frozen_one_holds_goes_on_once_its_lease_expired(
    store: str, freeze: Callable[[Conn, str], None]
) -> None:
    """The frozen one holds rows the other claimed (as an unsubscribe's skip does): the other
    waits on them in `start`, a statement with no lock timeout, and must not wait for ever."""
    with two_senders(store) as (frozen, other):
        waits_then_starts(frozen, other, freeze)
    assert state_of(store, other.send_id)[(1, "other:2:t")] == 1


@pytest.mark.parametrize("freeze", FREEZES.values(), ids=list(FREEZES))
def test_send_times_are_granted_again_once_a_frozen_holder_of_the_rate_lost_its_lease(
    store: str, freeze: Callable[[Conn, str], None]
) -> None:
    """The frozen one stopped while it held the send's rate row (reserving send times): the
    others' reservations find it busy until its lease expired, then go on."""
    with two_senders(store) as (frozen, other):
        lease = other.lease()
        assert lease is not None
        lease.reserve(1.0, lambda now, granted: [])  # the send's rate row exists
        rate = "SELECT 1 FROM send_rate FOR UPDATE"  # the only send of the store
        freeze(frozen.conn, rate)

        def granted() -> bool:
            _, times = lease.reserve(1.0, lambda now, granted: [now])
            return bool(times)

        wait_until(granted, "send times granted to the other sender")


@pytest.mark.parametrize("freeze", FREEZES.values(), ids=list(FREEZES))
def test_a_sender_waiting_on_a_frozen_ones_lock_keeps_its_lease_while_it_waits(
    store: str, freeze: Callable[[Conn, str], None]
) -> None:
    """The frozen one has a longer lease than the sender waiting on its lock: the waiting
    sender's lease must not lapse while it waits (a third sender would end its session as
    if it were frozen), and it goes on once the frozen one's lease expired."""
    # the third's Reaper looks every third of LEASE
    with two_senders(store, frozen=3 * LEASE, other=LEASE, third=LEASE) as (frozen, other):
        frozen_lease = frozen.lease()
        assert frozen_lease is not None
        frozen_lease.reaper.stop()  # a frozen process: none of its threads run
        waits_then_starts(frozen, other, freeze)
    assert state_of(store, other.send_id)[(1, "other:2:t")] == 1


def test_a_sender_of_another_role_holding_the_roles_the_docs_name_ends_a_frozen_one(
    pg_cluster: Cluster,
) -> None:
    """docs/deployment.md says what a sender of another role must hold to end the session of a
    frozen sender: granted exactly that, it does."""
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    paragraph = next(p for p in text.split("\n\n") if "has its session ended by the others" in p)
    granted = re.findall(r"`(pg_\w+)`", paragraph)
    dbname = pg_cluster.create_database()
    roles = [f"{dbname}_a", f"{dbname}_b"]
    with connect(pg_cluster.url(dbname)) as conn:
        migrate(conn, "test")
    for role in roles:
        pg_cluster.sql(f'CREATE ROLE "{role}" LOGIN')
        grant = f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"; '
        grant += f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"'
        pg_cluster.sql(grant, dbname)
    for name in granted:
        pg_cluster.sql(f'GRANT {name} TO "{roles[1]}"')
    urls = [pg_cluster.url(dbname).replace("newsletter@", f"{role}@") for role in roles]
    planner, _ = PgSends(urls[0], lease=60.0).open("issue-1", "smtp://127.0.0.1:25", "d")
    planner.add(Entry(f"r{i}@example.org", f"r{i}@example.org") for i in range(PEOPLE))
    planner.save()
    with (
        contextlib.closing(planner),
        sender(urls[0], planner, "frozen:1:t", LEASE) as frozen,
        connect(urls[1], autocommit=True) as other,
    ):
        frozen_lease = frozen.lease()
        assert frozen_lease is not None
        frozen_lease.reaper.stop()
        _mid_pipeline(frozen.conn, rows_lock(frozen.pending(0, 5)))
        expired = "SELECT lease_until <= now() FROM send_workers WHERE worker = 'frozen:1:t'"
        wait_until(lambda: bool(other.execute(expired).fetchone()[0]), "the lease expired")  # type: ignore[index]  # one row
        assert cut_off(other, frozen.send_id, "other:2:t") == 1

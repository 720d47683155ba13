"""A sender frozen past its lease, at each point where it can be frozen, never holds its
claims: the others take them back and send them (tests against a real PostgreSQL).

A frozen process cannot be asked to let go, and the server ends a session on its own only when
it is idle in a transaction; a client stopped in the middle of a pipeline or of a message
leaves its session waiting for input with no timeout, holding its row locks. These tests put
one sender's session in each of those states, as `SIGSTOP` would at the wrong moment."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.pg.connection import Conn, connect, where
from newsletter.pg.ledger import PgLedger
from newsletter.pg.migrations import migrate
from newsletter.pg.sends import PgSends
from newsletter.store import Entry, Row
from tests.pgcluster import Cluster
from tests.waits import wait_until

LEASE = 1.0  # seconds: the frozen sender's; the test waits on the outcome, never on a clock
PEOPLE = 40


def _idle_in_transaction(conn: Conn, mine: list[Row]) -> None:
    """Stopped between two statements of a transaction holding its rows."""
    conn.execute("UPDATE send_recipients SET at = at WHERE id = ANY(%s)", ([r.id for r in mine],))


def _mid_pipeline(conn: Conn, mine: list[Row]) -> None:
    """Stopped inside a pipeline (as executemany sends outcomes): the server ran the update
    and waits for the rest, with no Sync, so it is not idle in a transaction."""
    _idle_in_transaction(conn, [])
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    ids = "{" + ",".join(str(r.id) for r in mine) + "}"
    pgconn.send_query_params(
        b"UPDATE send_recipients SET at = at WHERE id = ANY($1::int[])", [ids.encode()]
    )
    while pgconn.flush():
        pass


def _mid_message(conn: Conn, mine: list[Row]) -> None:
    """Stopped in the middle of writing a message: the server waits for its end."""
    _idle_in_transaction(conn, mine)
    os.write(conn.pgconn.socket, b"Q" + struct.pack("!i", 1000) + b"UPDATE send_rec")


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
        connect(url), send.send_id, worker=name, place=where(url), lease_seconds=lease,
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


@pytest.mark.parametrize("freeze", FREEZES.values(), ids=list(FREEZES))
def test_a_sender_frozen_anywhere_past_its_lease_loses_its_claims(
    store: str, freeze: Callable[[Conn, list[Row]], None], tmp_path: Path
) -> None:
    planner, _ = PgSends(store, lease=60.0).open("issue-1", "smtp://127.0.0.1:25", "d")
    planner.add(Entry(f"r{i}@example.org", f"r{i}@example.org") for i in range(PEOPLE))
    planner.save()
    send_id = planner.send_id
    with (
        contextlib.closing(planner),
        sender(store, planner, "frozen:1:t", LEASE) as frozen,
        sender(store, planner, "other:2:t", 60.0) as other,
    ):
        claimed = frozen.pending(0, 10)
        assert frozen.start(claimed[0].id)  # one attempt in flight, committed
        frozen.commit()
        freeze(frozen.conn, claimed)
        lease = other.lease()
        assert lease is not None

        def taken_back() -> bool:
            lease.others()
            return state_of(store, send_id).get((0, "frozen:1:t"), 0) == 0

        wait_until(taken_back, "the frozen sender's claims taken back")
        rest = other.pending(0, PEOPLE)
    assert [r.id for r in rest] == [r.id for r in claimed[1:]] + list(range(11, PEOPLE + 1))
    after = state_of(store, send_id)
    assert after[(5, "frozen:1:t")] == 1  # what was in flight: unknown, never resent

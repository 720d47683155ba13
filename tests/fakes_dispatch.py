"""A fake clock and a scripted fake transport, for the dispatcher's unit tests only.

The behaviour tests against a real SMTP server are in test_dispatch_smtp.py; these fakes exist
because exact timing (rate limits, retry delays) can only be checked with a clock we control.
"""

from __future__ import annotations

import asyncio
import heapq
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from newsletter.errors import DeliveryError, TransportError
from newsletter.ledger import Ledger
from newsletter.store import Entry, Row
from newsletter.transport import Accepted, Connection, Envelope

T = TypeVar("T")
WALL0 = 1_700_000_000.0


class FakeClock:
    """Virtual time: `run()` jumps to the next sleeper whenever the event loop is idle."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.t + max(seconds, 0.0), self._seq, future))
        await future

    async def run(self, coro: Coroutine[Any, Any, T], idle_rounds: int = 30) -> T:
        task = asyncio.ensure_future(coro)
        stuck = 0
        while not task.done():
            for _ in range(idle_rounds):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled
            if self._sleepers and not task.done():
                when, _, future = heapq.heappop(self._sleepers)
                self.t = max(self.t, when)
                future.set_result(None)
                stuck = 0
            elif not task.done():
                stuck += 1
                assert stuck < 100, "deadlock: nothing runs and nobody sleeps"
        return task.result()


@dataclass
class FakeServer:
    """Scripted outcomes per recipient: a list consumed one per attempt, then "ok".

    Outcomes: "ok", "451", "550" (5.1.1), "554" (5.7.1), "drop" (before data), "lost" (after
    data: the server kept it). `delivered` is what the server accepted, in order.
    """

    clock: FakeClock
    script: dict[str, list[str]] = field(default_factory=dict)
    latency: float = 0.01
    connect_failures: int = 0  # the first N connects fail
    always_refuse_connect: bool = False
    ledger_path: Path | None = None  # when set, every send checks the attempt is on disk first
    delivered: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # clock time of each send
    connects: int = 0
    max_sending_on_disk: int = 0
    description: str = "fake"
    destination: str = "fake://test"

    async def connect(self) -> Connection:
        self.connects += 1
        if self.always_refuse_connect or self.connects <= self.connect_failures:
            raise TransportError("connection refused", host="fake")
        return FakeConnection(self)

    def on_disk(self, email: str) -> tuple[int, int]:
        """(this row's state, rows in state sending) as another process would read them."""
        assert self.ledger_path is not None
        with sqlite3.connect(self.ledger_path) as db:
            row = db.execute("SELECT state FROM recipients WHERE email = ?", (email,)).fetchone()
            sending = db.execute("SELECT count(*) FROM recipients WHERE state = 1").fetchone()
        db.close()
        return int(row[0]), int(sending[0])


class FakeConnection:
    eight_bit = True
    dot_stuffed = True

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.open = True

    async def send(self, envelope: Envelope, data: bytes) -> Accepted:
        assert self.open, "send on a closed connection"
        server = self.server
        server.starts.append(server.clock.now())
        if server.ledger_path is not None:
            state, sending = server.on_disk(envelope.recipient)
            assert state == 1, f"{envelope.recipient}: data out before its attempt was recorded"
            server.max_sending_on_disk = max(server.max_sending_on_disk, sending)
        await server.clock.sleep(server.latency)
        steps = server.script.get(envelope.recipient, [])
        outcome = steps.pop(0) if steps else "ok"
        return self._answer(envelope.recipient, outcome)

    def _answer(self, recipient: str, outcome: str) -> Accepted:
        if outcome == "451":
            raise DeliveryError(recipient, 451, "4.3.0 try again later")
        if outcome == "550":
            raise DeliveryError(recipient, 550, "5.1.1 no such user")
        if outcome == "554":
            raise DeliveryError(recipient, 554, "5.7.1 rejected as spam")
        if outcome == "drop":
            self.open = False
            raise TransportError("connection lost", host="fake", data_sent=False)
        if outcome == "lost":
            self.open = False
            self.server.delivered.append(recipient)
            raise TransportError("connection lost", host="fake", data_sent=True)
        self.server.delivered.append(recipient)
        return Accepted(250, f"2.0.0 queued {len(self.server.delivered)}")

    async def close(self) -> None:
        self.open = False


def people(n: int) -> list[Entry]:
    return [Entry(key=f"p{i}@example.org", email=f"p{i}@example.org") for i in range(n)]


async def compose(row: Row, conn: Connection) -> tuple[Envelope, bytes]:
    return Envelope("news@example.org", row.email), f"To: {row.email}\r\n\r\nhi\r\n".encode()


def new_ledger(tmp: Path, n: int) -> Ledger:
    ledger = Ledger(tmp / "send.sqlite")
    ledger.put("digest", "d1")
    ledger.add(people(n))
    ledger.commit()
    return ledger

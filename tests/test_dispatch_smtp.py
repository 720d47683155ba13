"""The send loop against a real SMTP server (aiosmtpd in-process) injecting each fault.

For every fault: each recipient's final state, and the server's record shows no address twice
except those the ledger marks unknown.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.dispatch import Dispatcher, RunResult
from newsletter.ledger import Ledger
from newsletter.limits import Limits
from newsletter.smtp import SmtpTransport
from newsletter.store import Row, State
from newsletter.transport import Connection, Envelope
from tests.fakes_dispatch import new_ledger
from tests.message_reference import wire_bytes
from tests.smtpd import (
    Fault,
    SmtpServer,
    drop_after_data,
    no_such_user,
    shutting_down,
    slow,
    stop_answering,
    temporary,
    too_big,
)
from tests.smtpd import settings_for as smtp_settings

N = 12
TARGET = "p5@example.org"
FAST = Limits(connections=3, retry_delays=(0.05, 0.1, 0.2), pause_after=4)
HEALTHY = 30.0  # client timeout where no timeout should fire: only a hang reaches it, not load
SHORT = 2.0  # where a timeout is the fault under test: every healthy reply still comes sooner


async def compose(row: Row, conn: Connection) -> tuple[Envelope, bytes]:
    body = f"From: news@example.org\nTo: {row.email}\nSubject: hi\n\n.hello\n"
    return Envelope("news@example.org", row.email), wire_bytes(body.encode())


def send(
    server: SmtpServer, ledger: Ledger, limits: Limits = FAST, timeout: float = HEALTHY
) -> tuple[RunResult, list[str]]:
    bounced: list[str] = []

    async def on_bounce(email: str) -> None:
        bounced.append(email)

    transport = SmtpTransport(smtp_settings(server, timeout=timeout), None)
    dispatcher = Dispatcher(ledger, transport, compose, limits, on_bounce=on_bounce)
    return asyncio.run(dispatcher.run()), bounced


def states(ledger: Ledger) -> dict[str, str]:
    sql = "SELECT email, state FROM recipients"
    return {email: State(state).label for email, state in ledger._db.execute(sql)}


def assert_no_duplicates_but_unknown(server: SmtpServer, ledger: Ledger) -> None:
    unknown = set(ledger.emails(5))
    twice = {r for r, n in server.delivered().items() if n > 1}
    assert twice <= unknown


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (temporary(), "sent"),
        (no_such_user(), "failed"),
        (too_big(), "failed"),
        (shutting_down(), "sent"),
        (drop_after_data(), "unknown"),
        (slow(SHORT + 60), "unknown"),  # the session closes at the client's timeout
    ],
    ids=["451-then-ok", "550-rcpt", "552-data", "421-disconnect", "drop-after-data", "slow"],
)
def test_fault_on_one_recipient(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path, fault: Fault, expected: str
) -> None:
    """One recipient meets the fault; it ends in the expected state, everyone else is sent."""
    server = make_smtp_server()
    server.add_fault(fault, recipient=TARGET)
    ledger = new_ledger(tmp_path, N)
    result, _ = send(server, ledger, timeout=SHORT if fault.delay else HEALTHY)
    final = states(ledger)
    assert final.pop(TARGET) == expected
    assert set(final.values()) == {"sent"}
    assert set(server.delivered()) >= set(final)
    assert_no_duplicates_but_unknown(server, ledger)
    assert result.stopped == ""


def test_no_such_user_is_reported_as_bounce(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """550 5.1.1 on RCPT: failed with its reply, and handed to on_bounce; never retried."""
    server = make_smtp_server()
    server.add_fault(no_such_user(), recipient=TARGET)
    ledger = new_ledger(tmp_path, N)
    _, bounced = send(server, ledger)
    assert bounced == [TARGET]
    assert [(f.code, f.reply) for f in ledger.failures()] == [(550, "5.1.1 No such user here")]
    assert server.rcpt_attempts[TARGET] == 1


def test_drop_after_data_is_not_resent_on_rerun(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """The in-doubt recipient is left alone by a second run; the server has it exactly once."""
    server = make_smtp_server()
    server.add_fault(drop_after_data(), recipient=TARGET)
    ledger = new_ledger(tmp_path, N)
    send(server, ledger)
    send(server, ledger)
    assert server.delivered()[TARGET] == 1
    assert server.delivered() == Counter({f"p{i}@example.org": 1 for i in range(N)})


def test_server_that_stops_answering_pauses_the_run(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Every MAIL hangs: timeouts before any data, so nobody is lost; the run pauses, resumable."""
    server = make_smtp_server()
    server.add_fault(stop_answering())
    ledger = new_ledger(tmp_path, N)
    result, _ = send(server, ledger, timeout=0.3)  # a timeout at any step is the point here
    assert result.stopped.startswith("paused after 4 connection failures")
    assert result.resumable
    counts = ledger.counts()
    assert counts["sent"] == counts["unknown"] == 0
    assert counts["pending"] + counts["deferred"] == N


def test_many_faults_at_once_still_exactly_once(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Mixed faults over 60 recipients: all settle, duplicates only among unknown ones."""
    server = make_smtp_server()
    plan = {3: temporary(times=2), 7: shutting_down(), 11: drop_after_data(), 19: no_such_user()}
    for i, fault in plan.items():
        server.add_fault(fault, recipient=f"p{i}@example.org")
    ledger = new_ledger(tmp_path, 60)
    send(server, ledger)
    counts = ledger.counts()
    assert (counts["sent"], counts["unknown"], counts["failed"]) == (58, 1, 1)
    assert_no_duplicates_but_unknown(server, ledger)

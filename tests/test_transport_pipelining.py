"""One message's SMTP exchange: pipelined when the server offers it (RFC 2920), one deadline.

Against real aiosmtpd servers (tests/smtpd.py), which advertise PIPELINING unless told not to;
`server.reads` shows which commands arrived together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiosmtplib.response import SMTPResponse

from newsletter.config import SmtpSettings
from newsletter.dispatch import Dispatcher
from newsletter.errors import DeliveryError, TransportError
from newsletter.ledger import Ledger
from newsletter.limits import Limits
from newsletter.smtp import SmtpTransport, _PipeliningProtocol
from newsletter.store import Row, State
from newsletter.transport import Accepted, Connection, Envelope
from tests.fakes_dispatch import new_ledger
from tests.smtpd import Fault, SmtpServer, no_such_user, settings_for, slow, stop_answering

SENDER = "news@example.org"
MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"
ServerFactory = Callable[..., SmtpServer]
Outcome = Accepted | DeliveryError | TransportError


async def _send_all(server: SmtpServer, *to: str, timeout: float = 30.0) -> list[Outcome]:
    """Send to each of `to` in turn on one connection: each outcome, Accepted or the error."""
    connection = await SmtpTransport(settings_for(server, timeout=timeout), None).connect()
    outcomes: list[Outcome] = []
    try:
        for recipient in to:
            try:
                outcomes.append(await connection.send(Envelope(SENDER, recipient), MESSAGE))
            except (DeliveryError, TransportError) as exc:
                outcomes.append(exc)
    finally:
        await connection.close()
    return outcomes


def send_all(server: SmtpServer, *to: str, timeout: float = 30.0) -> list[Outcome]:
    return asyncio.run(_send_all(server, *to, timeout=timeout))


def groups(server: SmtpServer) -> int:
    """How many reads brought MAIL, RCPT and DATA together: pipelined transactions."""
    return sum(b"MAIL FROM" in r and b"RCPT TO" in r and b"DATA\r\n" in r for r in server.reads)


# -- pipelining -------------------------------------------------------------------------------


def test_pipelined_commands_arrive_in_one_read(plain_smtp_server: SmtpServer) -> None:
    """With PIPELINING offered, MAIL, RCPT and DATA reach the server before it answers MAIL."""
    outcomes = send_all(plain_smtp_server, "a@example.org", "b@example.org", "c@example.org")
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert groups(plain_smtp_server) == 3
    assert plain_smtp_server.messages[0].data == MESSAGE


def test_refused_rcpt_in_a_group_is_that_recipients_outcome(plain_smtp_server: SmtpServer) -> None:
    """A 5xx and a 4xx to RCPT inside pipelined groups: each recipient gets its own reply (not
    DATA's 503), the others are delivered once, all on one connection."""
    plain_smtp_server.add_fault(no_such_user(), recipient="gone@example.org")
    plain_smtp_server.add_fault(Fault("RCPT", "452 4.2.2 Mailbox full"), recipient="full@x.org")
    to = ["a@example.org", "gone@example.org", "b@example.org", "full@x.org", "c@example.org"]
    outcomes = send_all(plain_smtp_server, *to)
    a, gone, b, full, c = outcomes
    assert all(isinstance(o, Accepted) for o in (a, b, c))
    assert isinstance(gone, DeliveryError)
    assert (gone.smtp_code, gone.reply, gone.permanent) == (550, "5.1.1 No such user here", True)
    assert isinstance(full, DeliveryError)
    assert (full.smtp_code, full.reply, full.permanent) == (452, "4.2.2 Mailbox full", False)
    assert plain_smtp_server.delivered() == {
        "a@example.org": 1,
        "b@example.org": 1,
        "c@example.org": 1,
    }
    assert plain_smtp_server.sessions == 1
    assert groups(plain_smtp_server) == 5


def test_refused_mail_in_a_group_defers_and_resets(plain_smtp_server: SmtpServer) -> None:
    """A 4xx to a pipelined MAIL defers that message (its own reply, not RCPT's or DATA's 503);
    the session is reset and the next message goes out on it."""
    plain_smtp_server.add_fault(Fault("MAIL", "451 4.3.0 Busy, try later"))
    refused, accepted = send_all(plain_smtp_server, "a@example.org", "b@example.org")
    assert isinstance(refused, DeliveryError)
    assert (refused.smtp_code, refused.permanent) == (451, False)
    assert isinstance(accepted, Accepted)
    assert plain_smtp_server.delivered() == {"b@example.org": 1}
    assert plain_smtp_server.sessions == 1


def test_server_without_pipelining_gets_one_command_at_a_time(
    make_smtp_server: ServerFactory,
) -> None:
    """Without PIPELINING offered, each command waits for the reply to the one before."""
    server = make_smtp_server(pipelining=False)
    server.add_fault(no_such_user(), recipient="gone@example.org")
    a, gone, b = send_all(server, "a@example.org", "gone@example.org", "b@example.org")
    assert isinstance(a, Accepted) and isinstance(b, Accepted)
    assert isinstance(gone, DeliveryError) and gone.smtp_code == 550
    assert not any(b"MAIL FROM" in r and b"RCPT TO" in r for r in server.reads)
    assert server.delivered() == {"a@example.org": 1, "b@example.org": 1}
    assert server.sessions == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize(
    ("fault", "data_sent"),
    [
        (stop_answering("RCPT"), False),  # MAIL answered, then silence
        (Fault("RCPT", close=True), False),  # MAIL answered, then the connection drops
        (slow(60, "DATA"), True),  # the data went out; the final reply never comes in time
    ],
    ids=["hang-mid-group", "drop-mid-group", "hang-after-data"],
)
def test_server_that_stops_mid_transaction(
    make_smtp_server: ServerFactory, pipelining: bool, fault: Fault, data_sent: bool
) -> None:
    """Silence or a drop inside the exchange fails it within the deadline, and data_sent says
    whether the message data had gone out."""
    server = make_smtp_server(pipelining=pipelining)
    server.add_fault(fault)
    started = time.monotonic()
    [error] = send_all(server, "a@example.org", timeout=1.0)
    assert time.monotonic() - started < 1.0 + 1.0  # the deadline, plus connect and close
    assert isinstance(error, TransportError)
    assert error.data_sent is data_sent


# -- one deadline -----------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_one_deadline_bounds_the_whole_transaction(
    make_smtp_server: ServerFactory, pipelining: bool
) -> None:
    """Replies each within [smtp] timeout but together past it fail the message, before DATA."""
    server = make_smtp_server(pipelining=pipelining)
    server.add_fault(slow(0.7, "MAIL"))
    server.add_fault(slow(0.7, "RCPT"))
    started = time.monotonic()
    [error] = send_all(server, "a@example.org", timeout=1.0)
    assert time.monotonic() - started < 1.0 + 1.0  # the deadline, plus connect and close
    assert isinstance(error, TransportError)
    assert not error.data_sent
    assert not server.messages


# -- the send loop over pipelined groups ------------------------------------------------------

ONE_CONNECTION = Limits(connections=1, retry_delays=(0.05,), pause_after=4)
NO_RETRY = Limits(connections=1, retry_delays=(), pause_after=4)


async def _compose(row: Row, conn: Connection) -> tuple[Envelope, bytes]:
    return Envelope(SENDER, row.email), MESSAGE


def run(server: SmtpServer, ledger: Ledger, limits: Limits, timeout: float = 30.0) -> None:
    transport = SmtpTransport(settings_for(server, timeout=timeout), None)
    asyncio.run(Dispatcher(ledger, transport, _compose, limits).run())


def states(ledger: Ledger) -> dict[str, str]:
    sql = "SELECT email, state FROM recipients"
    return {email: State(state).label for email, state in ledger._db.execute(sql)}


def test_send_loop_attributes_each_refusal_in_groups(
    plain_smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """5xx to one RCPT: failed; 4xx to another: retried and sent; everyone else sent exactly
    once, over the one connection."""
    plain_smtp_server.add_fault(no_such_user(), recipient="p2@example.org")
    plain_smtp_server.add_fault(Fault("RCPT", "451 4.7.1 Greylisted"), recipient="p4@example.org")
    ledger = new_ledger(tmp_path, 8)
    run(plain_smtp_server, ledger, ONE_CONNECTION)
    final = states(ledger)
    assert final.pop("p2@example.org") == "failed"
    assert set(final.values()) == {"sent"}
    assert plain_smtp_server.delivered() == {email: 1 for email in final}
    assert plain_smtp_server.sessions == 1
    assert groups(plain_smtp_server) == 9  # 8 readers, one of them twice


@pytest.mark.parametrize(
    ("fault", "expected"),
    [(Fault("RCPT", hang=True), "deferred"), (slow(60, "DATA"), "unknown")],
    ids=["hang-before-data", "hang-after-data"],
)
def test_send_loop_state_after_a_hang_mid_group(
    plain_smtp_server: SmtpServer, tmp_path: Path, fault: Fault, expected: str
) -> None:
    """A server that stops answering: deferred before the data went out, unknown after."""
    plain_smtp_server.add_fault(fault)  # the first reader's transaction only
    ledger = new_ledger(tmp_path, 3)
    run(plain_smtp_server, ledger, NO_RETRY, timeout=1.0)
    final = states(ledger)
    assert final.pop("p0@example.org") == expected
    assert set(final.values()) == {"sent"}
    assert plain_smtp_server.delivered()["p1@example.org"] == 1


# -- the protocol: replies that come together -------------------------------------------------


class _Wire:
    """The least of a transport that SMTPProtocol needs: what it wrote, open until closed."""

    def __init__(self) -> None:
        self.written = b""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def test_replies_arriving_together_are_read_in_order() -> None:
    """Replies in one piece, or arriving while an earlier one waits to be read, all arrive in
    order (aiosmtplib's own protocol would keep only the first and wait for ever)."""

    async def scenario() -> list[SMTPResponse]:
        protocol = _PipeliningProtocol(loop=asyncio.get_running_loop())
        protocol.connection_made(_Wire())  # type: ignore[arg-type]  # a stand-in, see _Wire
        protocol.data_received(b"220 hello\r\n")
        await protocol.read_response()
        protocol.owed = 4
        protocol.data_received(b"250 mail\r\n250 rcpt\r\n")
        first = await protocol.read_owed()
        protocol.data_received(b"354 go")  # the next part while nothing waits
        protocol.data_received(b" on\r\n250-more\r\n")
        replies = [first, await protocol.read_owed(), await protocol.read_owed()]
        waiting = asyncio.ensure_future(protocol.read_owed())
        await asyncio.sleep(0)
        protocol.data_received(b"250 last\r\n")
        return [*replies, await waiting]

    replies = asyncio.run(asyncio.wait_for(scenario(), 10))  # a lost reply: fail, not hang
    assert [(r.code, r.message) for r in replies] == [
        (250, "mail"),
        (250, "rcpt"),
        (354, "go on"),
        (250, "more\nlast"),
    ]


# -- a server that accepts DATA after refusing the only recipient -----------------------------

SCRIPT = {b"EHLO": b"250-script\r\n250 PIPELINING", b"MAIL": b"250 ok", b"DATA": b"354 go on"}
SCRIPT |= {b"RSET": b"250 reset", b"QUIT": b"221 bye"}


class Scripted:
    """A server answering as SCRIPT says, RCPT to gone@ with 550 but DATA still with 354 (which
    RFC 2920 3.1 allows), an empty message with 554; it keeps every line it heard."""

    def __init__(self) -> None:
        self.heard: list[bytes] = []

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 script\r\n")
        while line := await reader.readline():
            self.heard.append(line)
            reply = self.reply(line)
            if reply:
                writer.write(reply + b"\r\n")
        writer.close()

    def reply(self, line: bytes) -> bytes | None:
        verb = line.split()[0].upper() if line.strip() else b""
        if verb == b"RCPT":
            return b"550 5.1.1 No such user" if b"gone@" in line else b"250 ok"
        if verb == b".":
            empty = self.heard[-2] == b"DATA\r\n"
            return b"554 5.5.1 No valid recipients" if empty else b"250 queued"
        return SCRIPT.get(verb)


def test_data_accepted_after_a_refused_rcpt_is_ended_empty() -> None:
    """DATA accepted although the only RCPT was refused: a lone "." ends it, none of the
    message goes out, the refusal is the outcome, and the session is reset and reused."""
    scripted = Scripted()

    async def scenario() -> list[Outcome]:
        server = await asyncio.start_server(scripted.session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5.0)
        connection = await SmtpTransport(settings, None).connect()
        outcomes: list[Outcome] = []
        for to in ("gone@example.org", "b@example.org"):
            try:
                outcomes.append(await connection.send(Envelope(SENDER, to), MESSAGE))
            except DeliveryError as exc:
                outcomes.append(exc)
        await connection.close()
        server.close()
        return outcomes

    refused, accepted = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert isinstance(refused, DeliveryError) and refused.smtp_code == 550
    assert isinstance(accepted, Accepted) and accepted.reply == "queued"
    heard = scripted.heard
    assert heard[heard.index(b"DATA\r\n") :][:3] == [b"DATA\r\n", b".\r\n", b"RSET\r\n"]
    assert heard.count(b"Hello.\r\n") == 1  # the second message only

"""One message's SMTP exchange: one deadline for all of it."""

from __future__ import annotations

import asyncio
import time

from newsletter.errors import TransportError
from newsletter.smtp import SmtpTransport
from newsletter.transport import Envelope
from tests.smtpd import SmtpServer, settings_for, slow

SENDER = "news@example.org"
READER = "reader@example.org"
MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"


async def _send_one(server: SmtpServer, timeout: float) -> BaseException | None:
    connection = await SmtpTransport(settings_for(server, timeout=timeout), None).connect()
    try:
        await connection.send(Envelope(SENDER, READER), MESSAGE)
    except TransportError as exc:
        return exc
    finally:
        await connection.close()
    return None


def test_one_deadline_bounds_the_whole_transaction(plain_smtp_server: SmtpServer) -> None:
    """Replies each within [smtp] timeout but together past it fail the message, before DATA."""
    plain_smtp_server.add_fault(slow(0.7, "MAIL"))
    plain_smtp_server.add_fault(slow(0.7, "RCPT"))
    started = time.monotonic()
    error = asyncio.run(_send_one(plain_smtp_server, timeout=1.0))
    assert time.monotonic() - started < 1.3 + 0.5  # the deadline, plus connect and QUIT
    assert isinstance(error, TransportError)
    assert not error.data_sent
    assert not plain_smtp_server.messages

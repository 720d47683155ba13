"""The speed seam: DATA writes our prepared bytes as they are, and still means the same thing."""

from __future__ import annotations

import asyncio
import hashlib
import inspect

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings
from aiosmtplib.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.smtp import TESTED_AIOSMTPLIB, SmtpTransport
from newsletter.transport import Envelope
from tests.message_reference import wire_bytes
from tests.smtpd import SmtpServer, settings_for

# The upstream code _PreparedSMTP (DATA) and _PipeliningProtocol (replies to a pipelined group:
# the buffer, the waiter and its flags, what connection_lost and EOF do to them) mirror or
# rely on, as in aiosmtplib 5.1.3. When one changes, read the new code, update ours if
# needed, then these hashes.
PINNED = {
    SMTPProtocol.__init__: "499310c426417f4d",
    SMTPProtocol.data_received: "5edbbead3dc96987",
    SMTPProtocol._read_response_from_buffer: "064bd213eed7a04f",
    SMTPProtocol._set_response_exception: "4f6c439ff062d5d4",
    SMTPProtocol.connection_lost: "771b1b3847412f05",
    SMTPProtocol.eof_received: "3a3dfc0a118f7a03",
    SMTPProtocol.execute_data_command: "a55f9634add2db08",
    SMTPProtocol.write: "4b11ce8fce2f2f16",
    SMTPProtocol.read_response: "0b9d810b358b1b0b",
    SMTP.data: "ac54fc47aec81b08",
    SMTP.execute_command: "0da02e72439965c8",
    SMTP.close: "dfa096b568cd13b9",
}

DOTTY = (
    b"Subject: dots\r\n\r\n"
    b".\r\n"  # a lone dot: would end the data if not stuffed
    b"..\r\n"
    b".leading dot\r\n"
    b"middle . dot\r\n"
    b". \r\n"
    b"last line\r\n"
)


def _digest(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def test_mirrored_upstream_code_is_unchanged() -> None:
    """Fails when aiosmtplib changes the DATA code our seam mirrors (review, then re-pin)."""
    changed = {f.__qualname__ for f, digest in PINNED.items() if _digest(f) != digest}
    assert not changed, (
        f"aiosmtplib {aiosmtplib.__version__} changed {sorted(changed)} since "
        f"{TESTED_AIOSMTPLIB}: review _PreparedSMTP and _PipeliningProtocol against them"
    )


async def _send(server: SmtpServer, *bodies: bytes) -> None:
    connection = await SmtpTransport(settings_for(server), None).connect()
    try:
        for body in bodies:
            await connection.send(Envelope("a@example.org", "b@example.org"), body)
    finally:
        await connection.close()


def test_leading_dots_arrive_intact(plain_smtp_server: SmtpServer) -> None:
    """Lines starting with "." (and a lone ".") arrive as written, sent through the seam."""
    asyncio.run(_send(plain_smtp_server, wire_bytes(DOTTY)))
    assert plain_smtp_server.messages[0].data == DOTTY


def test_seam_delivers_what_plain_aiosmtplib_delivers(plain_smtp_server: SmtpServer) -> None:
    """The prepared path and aiosmtplib's own sendmail put the same message in the mailbox."""
    body = DOTTY.replace(b"\r\n", b"\n") + b"no newline at the end"

    async def upstream() -> None:
        async with aiosmtplib.SMTP(
            hostname=plain_smtp_server.host, port=plain_smtp_server.port, start_tls=False
        ) as client:
            await client.sendmail("a@example.org", ["b@example.org"], body)

    asyncio.run(upstream())
    asyncio.run(_send(plain_smtp_server, wire_bytes(body)))
    theirs, ours = plain_smtp_server.messages
    assert ours.data == theirs.data


lines = st.lists(
    st.sampled_from([b".", b"..", b".x", b"x", b"", b"\xc3\xa9", b"a.b", b" .", b"\r"]),
    max_size=12,
)
endings = st.sampled_from([b"\r\n", b"\n", b"\r"])


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    parts = draw(lines)
    return b"".join(part + draw(endings) for part in parts) + draw(st.sampled_from([b"", b"."]))


@given(bodies())
def test_wire_bytes_matches_aiosmtplibs_normalisation(body: bytes) -> None:
    """wire_bytes is exactly what aiosmtplib's DATA would have put on the wire."""
    upstream = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(body))
    assert wire_bytes(body) == upstream


@settings(max_examples=25, deadline=None)
@given(body=bodies())
def test_any_prepared_body_round_trips(body: bytes) -> None:
    """For odd bodies (dots, lone CR or LF, 8-bit), the server gets the normalised original."""
    with SmtpServer() as server:
        asyncio.run(_send(server, wire_bytes(body)))
        expected = normalize_message_line_endings(body)
        assert server.messages[0].data == expected

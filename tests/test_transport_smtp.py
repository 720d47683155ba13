"""SmtpTransport against a real aiosmtpd server: TLS, AUTH, errors, faults, reuse."""

from __future__ import annotations

import asyncio
import email.policy
import socket
import ssl
from collections.abc import Callable, Iterator
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from newsletter.config import SmtpSettings
from newsletter.errors import ConfigError, DeliveryError, SecretMissing, TransportError
from newsletter.smtp import SmtpConnection, SmtpTransport
from newsletter.transport import Accepted, Envelope
from tests.message_reference import wire_bytes
from tests.smtpd import (
    PASSWORD,
    USER,
    Fault,
    SmtpServer,
    drop_after_data,
    no_such_user,
    settings_for,
    shutting_down,
    slow,
    stop_answering,
    temporary,
    too_big,
)

SENDER = "news@example.org"
READER = "reader@example.org"
ServerFactory = Callable[..., SmtpServer]


def message(
    to: str = READER, name: str = "A Reader", body: str = "Hello.\n", subject: str = "Issue 1"
) -> bytes:
    """A small valid message in wire form (CRLF, dot-stuffed); 8-bit when the body is."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address("The Newsletter", addr_spec=SENDER)
    msg["To"] = Address(name, addr_spec=to)
    msg["Subject"] = subject
    cte = "7bit" if body.isascii() else "8bit"
    msg.set_content(body, cte=cte)
    return wire_bytes(msg.as_bytes())


def parsed(data: bytes) -> EmailMessage:
    parsed_message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed_message, EmailMessage)
    return parsed_message


def transport(server: SmtpServer, tls: ssl.SSLContext | None = None, **overrides: Any) -> Any:
    password = overrides.pop("password", PASSWORD if server.users else None)
    return SmtpTransport(settings_for(server, **overrides), password, ssl_context=tls)


async def send_all(
    smtp: SmtpTransport, *items: tuple[Envelope, bytes]
) -> list[Accepted | BaseException]:
    """Send on one connection; each outcome is the Accepted or the error raised."""
    connection = await smtp.connect()
    outcomes: list[Accepted | BaseException] = []
    try:
        for envelope, data in items:
            try:
                outcomes.append(await connection.send(envelope, data))
            except (DeliveryError, TransportError) as exc:
                outcomes.append(exc)
    finally:
        await connection.close()
    return outcomes


def send(smtp: SmtpTransport, to: str = READER, data: bytes | None = None) -> Any:
    envelope = Envelope(SENDER, to)
    return asyncio.run(send_all(smtp, (envelope, data or message(to))))[0]


def connect_error(smtp: SmtpTransport) -> TransportError:
    with pytest.raises(TransportError) as caught:
        asyncio.run(smtp.connect())
    return caught.value


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says anything."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


# -- connecting -------------------------------------------------------------------------------


def test_starttls_and_auth_deliver(smtp_server: SmtpServer, client_tls: ssl.SSLContext) -> None:
    """STARTTLS then AUTH, and the message arrives over TLS as the configured user."""
    accepted = send(transport(smtp_server, client_tls))
    assert accepted.code == 250
    [received] = smtp_server.messages
    assert (received.tls, received.login, received.recipients) == (True, USER, (READER,))
    assert parsed(received.data)["Subject"] == "Issue 1"


def test_implicit_tls_delivers(
    make_smtp_server: ServerFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """security = tls connects with TLS from the first byte and logs in."""
    server = make_smtp_server(implicit_tls=server_tls, users={USER: PASSWORD})
    assert send(transport(server, client_tls)).code == 250
    assert server.messages[0].tls
    assert server.messages[0].login == USER


def test_auth_in_clear_on_loopback(make_smtp_server: ServerFactory) -> None:
    """Without TLS, AUTH is allowed when the server is on this machine."""
    server = make_smtp_server(users={USER: PASSWORD})
    assert send(transport(server)).code == 250
    assert server.messages[0].login == USER


def test_wrong_password_is_one_clear_line_without_the_password(
    smtp_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    """A refused login names the server, the user and what to set, and hides the password."""
    wrong = "not-the-password-42"
    error = connect_error(transport(smtp_server, client_tls, password=wrong))
    text = str(error)
    assert f"127.0.0.1:{smtp_server.port}: login refused for 'newsletter' (535" in text
    assert "NEWSLETTER_SMTP_PASSWORD" in text
    assert wrong not in text
    assert wrong not in repr(error.args)
    assert "\n" not in text
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_untrusted_certificate_is_a_clear_error(smtp_server: SmtpServer) -> None:
    """A certificate from an unknown CA stops STARTTLS with one line saying so."""
    error = connect_error(transport(smtp_server, ssl.create_default_context()))
    assert "TLS certificate is not trusted" in str(error)
    assert not smtp_server.messages


def test_untrusted_certificate_with_implicit_tls(
    make_smtp_server: ServerFactory, server_tls: ssl.SSLContext
) -> None:
    """Implicit TLS reports an untrusted certificate the same way."""
    server = make_smtp_server(implicit_tls=server_tls)
    error = connect_error(transport(server, ssl.create_default_context()))
    assert "TLS certificate is not trusted" in str(error)


def test_tls_to_a_plain_port_says_check_security(plain_smtp_server: SmtpServer) -> None:
    """security = tls against a server speaking plain SMTP points at [smtp] security."""
    error = connect_error(transport(plain_smtp_server, security="tls"))
    assert "TLS failed" in str(error)
    assert "[smtp] security" in str(error)


def test_starttls_missing_is_a_clear_error(plain_smtp_server: SmtpServer) -> None:
    """A server that does not offer STARTTLS is not silently used in clear."""
    error = connect_error(transport(plain_smtp_server, security="starttls"))
    assert "does not offer STARTTLS" in str(error)


def test_server_without_auth_is_a_clear_error(plain_smtp_server: SmtpServer) -> None:
    """A username for a server that offers no AUTH says so, rather than sending without it."""
    error = connect_error(transport(plain_smtp_server, username=USER, password=PASSWORD))
    assert "does not offer AUTH" in str(error)


def test_connection_refused_is_a_clear_error(free_port: int) -> None:
    """Nothing listening: host:port, the reason, and what to check."""
    settings = SmtpSettings(host="127.0.0.1", port=free_port, security="none", timeout=2)
    error = connect_error(SmtpTransport(settings, None))
    assert str(error).startswith(f"127.0.0.1:{free_port}: cannot connect (")
    assert "(Connection refused): check [smtp] host and port" in str(error)


def test_silent_server_times_out_on_connect(silent_port: int) -> None:
    """A server that never greets gives a timeout error after [smtp] timeout."""
    settings = SmtpSettings(host="127.0.0.1", port=silent_port, security="none", timeout=0.3)
    error = connect_error(SmtpTransport(settings, None))
    assert "no answer within 0.3 s" in str(error)


def test_plaintext_to_another_host_is_refused() -> None:
    """security = none to a host that is not loopback needs allow_plaintext."""
    settings = SmtpSettings(host="mail.example.org", security="none")
    with pytest.raises(ConfigError, match="allow_plaintext"):
        SmtpTransport(settings, None)


def test_plaintext_to_another_host_with_allow_plaintext() -> None:
    """allow_plaintext lets security = none through, and the description says so."""
    settings = SmtpSettings(host="mail.example.org", security="none", allow_plaintext=True)
    smtp = SmtpTransport(settings, None)
    assert smtp.description == "SMTP mail.example.org:25 (no encryption, no login)"


def test_auth_in_clear_to_another_host_is_refused() -> None:
    """A password never goes unencrypted off the machine, even with allow_plaintext."""
    settings = SmtpSettings(
        host="mail.example.org", security="none", allow_plaintext=True, username="me"
    )
    with pytest.raises(ConfigError, match="expose the password"):
        SmtpTransport(settings, "secret")


def test_username_without_password_says_what_to_set() -> None:
    """A username without NEWSLETTER_SMTP_PASSWORD fails before connecting."""
    settings = SmtpSettings(host="mail.example.org", username="me")
    with pytest.raises(SecretMissing, match="NEWSLETTER_SMTP_PASSWORD"):
        SmtpTransport(settings, None)


def test_description_and_destination() -> None:
    """One line for the user; a stable key for the ledger; no password in repr."""
    settings = SmtpSettings(host="smtp.example.org", username="me")
    smtp = SmtpTransport(settings, "hunter2")
    assert smtp.description == "SMTP smtp.example.org:587 (STARTTLS, as me)"
    assert smtp.destination == "smtp://smtp.example.org:587"
    assert "hunter2" not in repr(smtp)


# -- sending: outcomes ------------------------------------------------------------------------


def test_refused_recipient_then_next_message_on_the_same_connection(
    plain_smtp_server: SmtpServer,
) -> None:
    """550 on RCPT is a DeliveryError; the same session then delivers the next message."""
    plain_smtp_server.add_fault(no_such_user(), recipient="gone@example.org")
    gone, fine = Envelope(SENDER, "gone@example.org"), Envelope(SENDER, READER)
    refused, accepted = asyncio.run(
        send_all(transport(plain_smtp_server), (gone, message()), (fine, message()))
    )
    assert isinstance(refused, DeliveryError)
    assert refused.permanent
    assert (refused.recipient, refused.smtp_code) == ("gone@example.org", 550)
    assert "5.1.1" in refused.reply
    assert isinstance(accepted, Accepted)
    assert plain_smtp_server.sessions == 1
    assert plain_smtp_server.delivered() == {READER: 1}


def test_temporary_refusal_then_success(plain_smtp_server: SmtpServer) -> None:
    """451 is a temporary DeliveryError; a retry on the same connection succeeds."""
    plain_smtp_server.add_fault(temporary())
    item = (Envelope(SENDER, READER), message())
    deferred, accepted = asyncio.run(send_all(transport(plain_smtp_server), item, item))
    assert isinstance(deferred, DeliveryError)
    assert deferred.smtp_code == 451
    assert not deferred.permanent
    assert isinstance(accepted, Accepted)
    assert plain_smtp_server.delivered() == {READER: 1}


def test_refused_after_data_keeps_the_connection(plain_smtp_server: SmtpServer) -> None:
    """552 after the data is a DeliveryError and the session stays usable."""
    plain_smtp_server.add_fault(too_big(), recipient="full@example.org")
    full, fine = Envelope(SENDER, "full@example.org"), Envelope(SENDER, READER)
    refused, accepted = asyncio.run(
        send_all(transport(plain_smtp_server), (full, message()), (fine, message()))
    )
    assert isinstance(refused, DeliveryError)
    assert refused.smtp_code == 552
    assert isinstance(accepted, Accepted)
    assert plain_smtp_server.sessions == 1


def test_421_before_data_is_a_transport_error(plain_smtp_server: SmtpServer) -> None:
    """421 on RCPT breaks the connection; the data was not sent."""
    plain_smtp_server.add_fault(shutting_down("RCPT"))
    error = send(transport(plain_smtp_server))
    assert isinstance(error, TransportError)
    assert (error.smtp_code, error.data_sent) == (421, False)


def test_421_after_data_counts_as_data_sent(plain_smtp_server: SmtpServer) -> None:
    """421 in answer to the final dot: the data went out, so the outcome is unknown."""
    plain_smtp_server.add_fault(shutting_down("DATA"))
    error = send(transport(plain_smtp_server))
    assert isinstance(error, TransportError)
    assert (error.smtp_code, error.data_sent) == (421, True)


def test_drop_after_data_counts_as_data_sent(plain_smtp_server: SmtpServer) -> None:
    """A drop after the whole message went out: data_sent, and the server did get it."""
    plain_smtp_server.add_fault(drop_after_data())
    error = send(transport(plain_smtp_server))
    assert isinstance(error, TransportError)
    assert error.data_sent
    assert "may have been delivered" in str(error)
    assert plain_smtp_server.delivered() == {READER: 1}


def test_slow_reply_after_data_times_out(plain_smtp_server: SmtpServer) -> None:
    """A reply to the final dot slower than [smtp] timeout: TransportError, data_sent."""
    plain_smtp_server.add_fault(slow(60))  # the session closes at the client's timeout
    error = send(transport(plain_smtp_server, timeout=2))  # every other reply comes sooner
    assert isinstance(error, TransportError)
    assert error.data_sent
    assert "did not answer within 2 s" in str(error)


def test_server_that_stops_answering_before_data(plain_smtp_server: SmtpServer) -> None:
    """No answer to MAIL: a timeout before any data went out."""
    plain_smtp_server.add_fault(stop_answering("MAIL"))
    error = send(transport(plain_smtp_server, timeout=0.3))
    assert isinstance(error, TransportError)
    assert not error.data_sent


def test_send_after_a_drop_reports_the_closed_connection(plain_smtp_server: SmtpServer) -> None:
    """Once a connection broke, further sends fail fast with data_sent False."""
    plain_smtp_server.add_fault(shutting_down("RCPT"))
    item = (Envelope(SENDER, READER), message())
    _first, second = asyncio.run(send_all(transport(plain_smtp_server), item, item))
    assert isinstance(second, TransportError)
    assert not second.data_sent
    assert "connection closed" in str(second)


def test_sender_refused_stops_the_connection(plain_smtp_server: SmtpServer) -> None:
    """A 5xx to MAIL is about the sender, not this reader: a TransportError naming the key."""
    plain_smtp_server.add_fault(Fault("MAIL", "553 5.7.1 Sender not allowed"))
    error = send(transport(plain_smtp_server))
    assert isinstance(error, TransportError)
    assert error.smtp_code == 553
    assert "envelope_from" in str(error)
    assert not error.data_sent


@pytest.mark.parametrize(
    "sneaky", ["x@example.org\r\nRCPT TO:<y@example.org>", "x@example.org> NOTIFY=NEVER"]
)
def test_unsendable_address_is_refused_before_sending(
    plain_smtp_server: SmtpServer, sneaky: str
) -> None:
    """An address that could smuggle commands or parameters never reaches the server."""
    error = send(transport(plain_smtp_server), to=sneaky, data=message())
    assert isinstance(error, DeliveryError)
    assert error.smtp_code == 553
    assert not plain_smtp_server.rcpt_attempts


# -- sending: extensions and content ----------------------------------------------------------


def test_eight_bit_body_is_sent_with_8bitmime(plain_smtp_server: SmtpServer) -> None:
    """8-bit data goes with BODY=8BITMIME; 7-bit data without it."""
    eight, seven = message(body="Grüße aus Zürich\n"), message()
    item8, item7 = (Envelope(SENDER, READER), eight), (Envelope(SENDER, READER), seven)
    asyncio.run(send_all(transport(plain_smtp_server), item8, item7))
    with_8bit, without = plain_smtp_server.messages
    assert "BODY=8BITMIME" in with_8bit.mail_options
    assert not any(o.startswith("BODY") for o in without.mail_options)
    assert parsed(with_8bit.data).get_content().splitlines() == ["Grüße aus Zürich"]


def test_server_without_8bitmime(make_smtp_server: ServerFactory) -> None:
    """The connection reports eight_bit False, and refuses 8-bit data rather than corrupt it."""
    server = make_smtp_server(eight_bit=False)

    async def attempt() -> SmtpConnection:
        connection = await transport(server).connect()
        try:
            with pytest.raises(ValueError, match="8BITMIME"):
                await connection.send(Envelope(SENDER, READER), message(body="naïve\n"))
        finally:
            await connection.close()
        return connection

    assert asyncio.run(attempt()).eight_bit is False
    assert not server.messages


def test_smtputf8_recipient(plain_smtp_server: SmtpServer) -> None:
    """A non-ASCII address goes out with SMTPUTF8 when the server offers it."""
    zoe = "zoë@example.org"
    item = (Envelope(SENDER, zoe, smtputf8=True), message(to="zoe@example.org"))
    [accepted] = asyncio.run(send_all(transport(plain_smtp_server), item))
    assert isinstance(accepted, Accepted)
    [received] = plain_smtp_server.messages
    assert received.recipients == (zoe,)
    assert "SMTPUTF8" in received.mail_options


def test_smtputf8_missing_is_a_delivery_error(make_smtp_server: ServerFactory) -> None:
    """Without SMTPUTF8 at the server, a non-ASCII address fails clearly, for that reader."""
    server = make_smtp_server(smtputf8=False)
    item = (Envelope(SENDER, "zoë@example.org", smtputf8=True), message())
    [error] = asyncio.run(send_all(transport(server), item))
    assert isinstance(error, DeliveryError)
    assert error.smtp_code == 553
    assert "SMTPUTF8" in error.reply


def test_non_ascii_display_names_survive(
    smtp_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    """Names with accents, CJK and emoji arrive as written (RFC 2047 in the header)."""
    name = "Zoë Ångström 山田 🎉"
    send(transport(smtp_server, client_tls), data=message(name=name, subject="Café ☕"))
    received = parsed(smtp_server.messages[0].data)
    assert received["To"].addresses[0].display_name == name
    assert received["Subject"] == "Café ☕"


def test_hook_injects_faults_by_count(plain_smtp_server: SmtpServer) -> None:
    """A hook can drop the connection after the 3rd message; a new connection carries on."""
    plain_smtp_server.hook = lambda command, _rcpt, count: (
        drop_after_data() if command == "DATA" and count == 2 else None
    )
    items = [(Envelope(SENDER, f"r{i}@example.org"), message()) for i in range(5)]
    first = asyncio.run(send_all(transport(plain_smtp_server), *items[:3]))
    rest = asyncio.run(send_all(transport(plain_smtp_server), *items[3:]))
    kinds = [type(o).__name__ for o in first + rest]
    assert kinds == ["Accepted", "Accepted", "TransportError", "Accepted", "Accepted"]
    assert plain_smtp_server.sessions == 2
    assert len(plain_smtp_server.messages) == 5


def test_one_connection_carries_many_messages(plain_smtp_server: SmtpServer) -> None:
    """A connection is reused: 20 messages, one session, each reader once."""
    readers = [f"r{i}@example.org" for i in range(20)]
    items = [(Envelope(SENDER, r), message(to=r)) for r in readers]
    outcomes = asyncio.run(send_all(transport(plain_smtp_server), *items))
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert plain_smtp_server.sessions == 1
    assert plain_smtp_server.delivered() == dict.fromkeys(readers, 1)

"""The SMTP client: connections to one server as [smtp] says, each sending many messages.

Implements transport.py's `Transport` and `Connection` (read the contract there). This is the
only module importing aiosmtplib.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse

from newsletter.config import PASSWORD_ENV
from newsletter.errors import DeliveryError, NewsletterError, SecretMissing, TransportError
from newsletter.transport import (
    DEFAULT_PORTS,
    Accepted,
    Envelope,
    check_address,
    check_security,
    destination,
    is_loopback,
)

if TYPE_CHECKING:
    from newsletter.config import SmtpSettings


# ---------------------------------------------------------------------------------------------
# The speed seam: DATA without aiosmtplib's per-message normalisation; pipelined commands

TESTED_AIOSMTPLIB = "5.1.3"  # _PreparedSMTP mirrors this version; tests pin the code it copies


class _PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, able to read the replies to a group of commands sent at once.

    Upstream parses one reply per `data_received` and drops data that arrives while no command
    waits (or while a parsed reply waits to be picked up): right when each command waits for
    its reply, wrong for RFC 2920 pipelining, where the replies to MAIL, RCPT and DATA come
    back to back, often in one piece. While `owed` > 0 every byte is kept, and `read_owed`
    takes the replies from the buffer in order. aiosmtplib builds its protocol itself, with no
    hook for a subclass, so `_PreparedSMTP` switches the class of its instance: safe, as this
    class adds methods and one attribute (`owed`, 0 by default), nothing that __init__ sets.
    """

    owed = 0  # replies still due to the commands of a pipelined group

    def data_received(self, data: bytes) -> None:
        if not self.owed:
            super().data_received(data)
            return
        self._buffer.extend(data)
        if len(self._buffer) > MAX_RESPONSE_LENGTH * self.owed:  # upstream's bound, per reply
            del self._buffer[:]
            if isinstance(self.transport, asyncio.WriteTransport):
                self.transport.abort()  # the reads that wait fail: "Connection lost"
            return
        self._hand_over()

    def _hand_over(self) -> None:
        """Give the next buffered reply to the read that waits for it, if one does."""
        waiter = self._response_waiter
        if waiter is None or waiter.done() or not self._response_pending:
            return
        try:
            reply = self._read_response_from_buffer()
        except SMTPResponseException as exc:  # malformed or too long, as upstream reports it
            self._set_response_exception(waiter, exc)
            return
        if reply is not None:
            waiter.set_result(reply)

    async def read_owed(self) -> SMTPResponse:
        """The group's next reply: already in the buffer, or as it arrives."""
        reply = self._read_response_from_buffer()
        if reply is None:
            reply = await self.read_response(timeout=None)
        self.owed -= 1
        if not self.owed:
            del self._buffer[:]  # anything after the last reply is unsolicited: upstream drops it
        return reply


class _PreparedSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client plus a DATA path for bytes already in wire form, and pipelining.

    `SMTP.data()` calls `SMTPProtocol.execute_data_command`, which re-normalises line endings
    and dot-stuffs the whole body (two regex passes per message: most of the client's CPU
    time). Our bytes are put in wire form once per issue, so `data_prepared` writes them as
    they are. It mirrors execute_data_command of aiosmtplib 5.1.3 through public methods only
    (`execute_command`, `protocol.write`, `protocol.read_response`, `close`; `close` also
    aborts the transport). `write_group` and `group_reply` send several commands in one write
    and read their replies in order (RFC 2920), through `_PipeliningProtocol`.
    tests/test_transport_seam.py fails if the upstream code they mirror or rely on changes.
    None of these has a timeout of its own: the caller bounds the whole transaction
    (SmtpConnection.send).
    """

    data_written = False  # the last message's data and final "." went to the socket

    def close(self) -> None:
        """Close now: a plain close waits to flush what a stalled peer never reads, and the
        socket outlives the event loop (a leak). Data still unsent is moot once we close."""
        transport = self.transport
        super().close()
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()

    async def data_prepared(self, message: bytes) -> SMTPResponse:
        """DATA, then `message` (CRLF, dot-stuffed, ending in CRLF) as is, then "."."""
        self.data_written = False
        start = await self.execute_command(b"DATA", timeout=None)  # closes the client on drop
        if start.code != aiosmtplib.SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        return await self.data_after_start(message)

    async def data_after_start(self, message: bytes) -> SMTPResponse:
        """After a 354: `message` as is, then ".", and the final reply."""
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(message + b".\r\n")  # one write: one send() for the whole message
            self.data_written = True
            response = await protocol.read_response(timeout=None)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            self.close()  # as SMTP.data() does: the protocol may be out of step now
            raise
        if response.code == aiosmtplib.SMTPStatus.domain_unavailable:
            self.close()
        if response.code != aiosmtplib.SMTPStatus.completed:
            raise SMTPDataError(response.code, response.message)
        return response

    def write_group(self, *commands: list[bytes]) -> None:
        """Each command (its words) on its own line, all in one write; then one `group_reply`
        per command. The words are ours or addresses check_address let through: no CR/LF."""
        protocol = self._pipelining()
        protocol.owed = len(commands)
        protocol.write(b"".join(b" ".join(words) + b"\r\n" for words in commands))

    async def group_reply(self) -> SMTPResponse:
        """The next reply of the group written last. Any failure closes the connection: the
        replies still due could no longer be told apart."""
        protocol = self.protocol
        if not isinstance(protocol, _PipeliningProtocol):
            raise SMTPServerDisconnected("Connection lost")
        try:
            reply = await protocol.read_owed()
        except BaseException:  # dropped, malformed, or the transaction's deadline
            self.close()
            raise
        if reply.code == aiosmtplib.SMTPStatus.domain_unavailable:
            self.close()  # 421: the server closes the session, as execute_command has it
        return reply

    async def end_empty_data(self) -> None:
        """RFC 2920 3.1: DATA was accepted although MAIL or RCPT was refused, so end it with
        a lone "." (no message: none of our data goes out) and ignore the reply."""
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(b".\r\n")
            await protocol.read_response(timeout=None)
        except BaseException:
            self.close()
            raise

    def _pipelining(self) -> _PipeliningProtocol:
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        if not isinstance(protocol, _PipeliningProtocol):
            protocol.__class__ = _PipeliningProtocol  # why: _PipeliningProtocol's docstring
        return cast(_PipeliningProtocol, protocol)


# ---------------------------------------------------------------------------------------------
# SMTP

_SECURITY_LABEL = {"tls": "TLS", "starttls": "STARTTLS", "none": "no encryption"}


class SmtpTransport:
    """Connections to one SMTP server, set up as [smtp] says."""

    def __init__(
        self,
        settings: SmtpSettings,
        password: str | None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        check_security(settings)
        if settings.username and password is None:
            raise SecretMissing(
                f"[smtp] username is set but {PASSWORD_ENV} is not: set it in the environment "
                f"(or store it in the system keyring: service newsletter, user "
                f"{settings.username}@{settings.host})"
            )
        self.settings = settings
        self.host = settings.host
        self.port = settings.port or DEFAULT_PORTS[settings.security]
        self.where = f"{self.host}:{self.port}"
        self.destination = destination(settings)
        self.description = f"SMTP {self.where} ({_describe(settings)})"
        self._password = password
        self._ssl_context = ssl_context
        self._local_hostname: str | None = None

    def __repr__(self) -> str:
        return f"SmtpTransport({self.description!r})"  # never the password

    async def connect(self) -> SmtpConnection:
        """Open, secure and log in one connection; a failure is one clear TransportError."""
        client = await self._client()
        try:
            await client.connect()
            await _greet(client)
            await self._login(client)
        except (SMTPException, OSError) as exc:
            client.close()
            raise self._connect_error(exc) from None
        except BaseException:  # our own refusal, or cancelled: never leave the socket open
            client.close()
            raise
        return SmtpConnection(client, self.where, self._hide)

    async def _client(self) -> _PreparedSMTP:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        security = self.settings.security
        return _PreparedSMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self._local_hostname,
            timeout=self.settings.timeout,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=await self._tls_context() if security != "none" else None,
        )

    async def _tls_context(self) -> ssl.SSLContext:
        """The caller's context (tests: a test CA), else the system's, verifying certificates."""
        if self._ssl_context is None:
            self._ssl_context = await asyncio.to_thread(ssl.create_default_context)
        return self._ssl_context

    async def _login(self, client: _PreparedSMTP) -> None:
        username = self.settings.username
        if not username:
            return
        encrypted = client.get_transport_info("sslcontext") is not None
        if not encrypted and not is_loopback(self.host):
            raise TransportError(
                f"{self.where}: refusing to send the password over an unencrypted connection: "
                "set [smtp] security to starttls or tls",
                host=self.where,
                lasting=True,
            )
        await client.login(username, self._password or "")  # a 535 here: _connect_error
        await _greet(client)

    def _connect_error(self, exc: BaseException) -> TransportError:
        code = exc.code if isinstance(exc, SMTPResponseException) else None
        text = self._hide(_connect_problem(exc, self.settings))
        return TransportError(
            f"{self.where}: {text}", host=self.where, smtp_code=code, lasting=_lasting(exc)
        )

    def _hide(self, text: str) -> str:
        """A server reply echoed into a message must never carry the password."""
        return text.replace(self._password, "***") if self._password else text


def _describe(settings: SmtpSettings) -> str:
    label = _SECURITY_LABEL[settings.security]
    return f"{label}, as {settings.username}" if settings.username else f"{label}, no login"


async def _greet(client: _PreparedSMTP) -> None:
    """EHLO (HELO for old servers) when the session needs one, so extensions are known."""
    if not client.is_ehlo_or_helo_needed:
        return
    try:
        await client.ehlo()
    except SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


def _connect_problem(exc: BaseException, settings: SmtpSettings) -> str:
    """What went wrong while connecting, and what to do: one line."""
    tls = _ssl_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return (
            f"the server's TLS certificate is not trusted ({tls.verify_message}): check that "
            "[smtp] host is the name on its certificate"
        )
    if tls is not None:
        return (
            f"TLS failed ({tls.reason or tls}): check [smtp] security "
            "(tls for port 465, starttls for 587)"
        )
    if isinstance(exc, SMTPAuthenticationError):
        return (
            f"login refused for {settings.username!r} ({exc.code} {_one_line(exc.message)}): "
            f"check [smtp] username and {PASSWORD_ENV}"
        )
    if isinstance(exc, SMTPTimeoutError):
        return (
            f"no answer within {settings.timeout:g} s: check [smtp] host, port and security "
            "(a port expecting implicit TLS needs security = tls)"
        )
    return _refusal_problem(exc)


def _refusal_problem(exc: BaseException) -> str:
    if isinstance(exc, SMTPConnectResponseError | SMTPHeloError):
        return f"the server refused the session: {exc.code} {_one_line(exc.message)}"
    if isinstance(exc, SMTPConnectError):
        reason = _os_reason(exc.__cause__) or _one_line(str(exc))
        return f"cannot connect ({reason}): check [smtp] host and port, and that the server runs"
    if isinstance(exc, SMTPServerDisconnected):
        return "the server closed the connection while setting it up"
    if isinstance(exc, SMTPResponseException):
        return f"{exc.code} {_one_line(exc.message)}"
    message = str(exc)
    if "AUTH" in message:  # before STARTTLS: aiosmtplib's AUTH message mentions STARTTLS
        return "the server does not offer AUTH: remove [smtp] username, or check security"
    if "STARTTLS" in message:
        return "the server does not offer STARTTLS: use security = tls for port 465"
    return _one_line(message) or type(exc).__name__


def _lasting(exc: BaseException) -> bool:
    """A failure to set up the session that the same settings will meet again: TLS refused
    (a certificate, a TLS port spoken to in plain text), login refused, or an extension the
    settings need that the server does not offer. Refused connections and timeouts pass."""
    if _ssl_error(exc) is not None or isinstance(exc, SMTPAuthenticationError):
        return True
    if isinstance(exc, SMTPResponseException | SMTPConnectError | SMTPServerDisconnected):
        return False
    return "AUTH" in str(exc) or "STARTTLS" in str(exc)


def _os_reason(error: BaseException | None) -> str:
    """The system's words for it: Connection refused, Name or service not known, ..."""
    if isinstance(error, socket.gaierror):
        return str(error.strerror)
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return ""


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind `exc`: raw from STARTTLS, wrapped for implicit TLS."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, ssl.SSLError):
            return candidate
    return None


def _refusal(reply: SMTPResponse, expected: tuple[int, ...]) -> SMTPResponseException | None:
    """The refusal in `reply`, unless its code is one of `expected`."""
    if reply.code in expected:
        return None
    return SMTPResponseException(reply.code, reply.message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class SmtpConnection:
    """One SMTP session, reused for many messages, one at a time."""

    dot_stuffed = True

    def __init__(self, client: _PreparedSMTP, where: str, hide: Callable[[str], str]) -> None:
        self._client = client
        self._where = where
        self._hide = hide
        self._lock = asyncio.Lock()
        self.eight_bit = client.supports_extension("8bitmime")
        self.smtputf8 = client.supports_extension("smtputf8")
        self._size = client.supports_extension("size")
        self._pipelining = client.supports_extension("pipelining")

    async def send(self, envelope: Envelope, data: bytes) -> Accepted:
        options = self._mail_options(envelope, data)
        async with self._lock:
            if not self._client.is_connected:
                raise TransportError(f"{self._where}: connection closed", host=self._where)
            self._client.data_written = False
            try:  # one deadline for the whole exchange: a hung server fails it in bounded time
                async with asyncio.timeout(self._client.timeout):
                    reply = await self._transaction(envelope, data, options)
            except SMTPResponseException as exc:
                raise await self._refused(envelope, exc) from None
            except OSError as exc:  # dropped (ConnectionError), timed out (TimeoutError), TLS
                raise self._broken(exc) from None
        return Accepted(reply.code, reply.message)

    def _mail_options(self, envelope: Envelope, data: bytes) -> list[str]:
        if not data.endswith(b"\r\n"):
            raise ValueError("message data must end with CRLF (SMTP DATA form)")
        check_address(envelope.sender, envelope.smtputf8, envelope.recipient)
        check_address(envelope.recipient, envelope.smtputf8, envelope.recipient)
        if envelope.smtputf8 and not self.smtputf8:  # first: such a message is 8-bit too
            raise DeliveryError(
                envelope.recipient,
                553,
                f"5.6.7 {self._where} does not offer SMTPUTF8, which this address needs",
            )
        options = [f"SIZE={len(data)}"] if self._size else []
        if not data.isascii():
            if not self.eight_bit:
                raise ValueError("8-bit data for a server without 8BITMIME (check eight_bit)")
            options.append("BODY=8BITMIME")
        if envelope.smtputf8:
            options.append("SMTPUTF8")
        return options

    async def _transaction(
        self, envelope: Envelope, data: bytes, options: list[str]
    ) -> SMTPResponse:
        """MAIL, RCPT, DATA: pipelined when the server offers it, else one command at a time.
        All under the one deadline that send() sets for the whole exchange rather than an
        asyncio.wait_for per command (four a message, a hot spot in the profile).
        MAIL and RCPT go out with the addresses that _check_address let through: aiosmtplib's
        mail() and rcpt() would parse each address again with email.utils.parseaddr (~25 us
        each, a quarter of the client's CPU)."""
        encoding = "utf-8" if envelope.smtputf8 else "ascii"
        sender = f"<{envelope.sender}>".encode(encoding)
        recipient = f"<{envelope.recipient}>".encode(encoding)
        mail = [b"MAIL", b"FROM:" + sender, *map(str.encode, options)]
        rcpt = [b"RCPT", b"TO:" + recipient]
        if self._pipelining:
            return await self._pipelined(envelope, mail, rcpt, data)
        try:
            await self._command((250,), *mail)
        except SMTPResponseException as exc:
            self._check_sender(envelope, exc)
            raise
        await self._command((250, 251), *rcpt)
        return await self._client.data_prepared(data)

    async def _pipelined(
        self, envelope: Envelope, mail: list[bytes], rcpt: list[bytes], data: bytes
    ) -> SMTPResponse:
        """MAIL, RCPT and DATA in one write (RFC 2920), each reply checked against its own
        command: a refused MAIL or RCPT is this message's outcome, raised once the group's
        replies are all read, and the DATA reply that follows it (503, 554) is not."""
        client = self._client
        client.write_group(mail, rcpt, [b"DATA"])
        refusal = _refusal(await client.group_reply(), (250,))
        if refusal is not None:
            self._check_sender(envelope, refusal)
        refused_rcpt = _refusal(await client.group_reply(), (250, 251))
        if refused_rcpt is not None and refused_rcpt.code == 421:
            raise refused_rcpt  # the server closes the session: no DATA reply will come
        refusal = refusal or refused_rcpt
        start = await client.group_reply()
        if refusal is None:
            if start.code != aiosmtplib.SMTPStatus.start_input:
                raise SMTPDataError(start.code, start.message)
            return await client.data_after_start(data)
        if start.code == aiosmtplib.SMTPStatus.start_input:
            await client.end_empty_data()
        raise refusal

    def _check_sender(self, envelope: Envelope, refusal: SMTPResponseException) -> None:
        if refusal.code >= 500 or refusal.code == 421:
            raise self._sender_refused(envelope, refusal) from None

    async def _command(self, expected: tuple[int, ...], *words: bytes) -> None:
        response = await self._client.execute_command(*words, timeout=None)  # closes: drop, 421
        if response.code not in expected:
            raise SMTPResponseException(response.code, response.message)

    def _sender_refused(self, envelope: Envelope, exc: SMTPResponseException) -> TransportError:
        """A permanent refusal of MAIL is about the sender or the session, not the recipient:
        every message would get it, so it stops the connection rather than fail each reader."""
        self._client.close()
        reply = self._hide(f"{exc.code} {_one_line(exc.message)}")
        hint = "" if exc.code == 421 else ": check [newsletter] envelope_from and [smtp] username"
        return TransportError(
            f"{self._where} refused MAIL FROM {envelope.sender}: {reply}{hint}",
            host=self._where,
            smtp_code=exc.code,
        )

    async def _refused(self, envelope: Envelope, exc: SMTPResponseException) -> NewsletterError:
        reply = self._hide(_one_line(exc.message))
        if exc.code == 421 or not self._client.is_connected:
            return self._broken(exc)
        await self._reset()
        return DeliveryError(envelope.recipient, exc.code, reply)

    async def _reset(self) -> None:
        """RSET after a refusal, so the session is ready for the next message."""
        try:
            await self._client.rset()
        except (SMTPException, OSError):
            self._client.close()  # the next send reports the broken connection

    def _broken(self, exc: BaseException) -> TransportError:
        sent = self._client.data_written
        self._client.close()
        if isinstance(exc, SMTPResponseException):
            what = f"closed the session ({exc.code} {_one_line(exc.message)})"
        elif isinstance(exc, TimeoutError):
            what = f"did not answer within {self._client.timeout or 0:g} s"
        else:
            what = "dropped the connection"
        after = " after the message data was sent: it may have been delivered" if sent else ""
        code = exc.code if isinstance(exc, SMTPResponseException) else None
        return TransportError(
            self._hide(f"{self._where} {what}{after}"),
            host=self._where,
            smtp_code=code,
            data_sent=sent,
        )

    async def close(self) -> None:
        """QUIT politely when the session is alive; close in any case."""
        if self._client.is_connected:
            with contextlib.suppress(SMTPException, OSError):  # closing anyway
                await self._client.quit(timeout=min(5.0, self._client.timeout or 5.0))
        self._client.close()

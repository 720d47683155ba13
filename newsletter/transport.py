"""Where message bytes go: an SMTP server (aiosmtplib) or the outbox Maildir, behind one interface.

The dispatcher sees only `Transport` and `Connection`. Contract for `Connection.send`:
- returns `Accepted` when the message was accepted;
- raises `DeliveryError` for a definite 4xx/5xx reply about this message (connection still usable);
- raises `TransportError` when the connection broke or timed out (connection unusable; reconnect);
  its `data_sent` says whether the message data had already gone out (then: outcome unknown).
  Also when the server refuses MAIL FROM with 5xx: that is about the sender or the session, every
  message would get it, so it counts as a connection failure (pause) rather than failing a reader.
`data` is exactly what goes on the wire after DATA: CRLF line endings, and dot-stuffed when
`connection.dot_stuffed` is True; 8-bit bodies only when `connection.eight_bit` is True.

`open_transport(config)` picks one: `SmtpTransport` when `[smtp] host` is set, else
`OutboxTransport` (a Maildir at outbox/). This is the only module importing aiosmtplib.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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
from aiosmtplib.response import SMTPResponse

from newsletter.config import PASSWORD_ENV, smtp_password
from newsletter.errors import (
    ConfigError,
    DeliveryError,
    NewsletterError,
    SecretMissing,
    TransportError,
)
from newsletter.fileio import fsync_folder, make_folder, open_private

if TYPE_CHECKING:
    from newsletter.config import Config, SmtpSettings


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    smtputf8: bool = False  # the recipient address needs the server's SMTPUTF8


@dataclass(frozen=True)
class Accepted:
    code: int
    reply: str  # the server's reply text, or the outbox file written


class Connection(Protocol):
    eight_bit: bool  # the peer takes 8-bit MIME bodies (server advertised 8BITMIME)
    dot_stuffed: bool  # the peer wants data with leading dots doubled (SMTP: yes; outbox: no)

    async def send(self, envelope: Envelope, data: bytes) -> Accepted: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    description: str  # one line for the user: where messages go
    destination: str  # stable key for the ledger, e.g. "smtp://host:587" or "outbox"

    async def connect(self) -> Connection: ...


# ---------------------------------------------------------------------------------------------
# The speed seam: DATA without aiosmtplib's per-message normalisation

TESTED_AIOSMTPLIB = "5.1.3"  # _PreparedSMTP mirrors this version; tests pin the code it copies


class _PreparedSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client plus a DATA path for bytes already in wire form.

    `SMTP.data()` calls `SMTPProtocol.execute_data_command`, which re-normalises line endings
    and dot-stuffs the whole body (two regex passes per message: most of the client's CPU
    time). Our bytes are put in wire form once per issue, so `data_prepared` writes them as
    they are. It mirrors execute_data_command of aiosmtplib 5.1.3 through public methods only
    (`execute_command`, `protocol.write`, `protocol.read_response`, `close`; `close` also
    aborts the transport);
    tests/test_transport_seam.py fails if the upstream code it mirrors changes.
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
        start = await self.execute_command(b"DATA")  # closes the client on drop or timeout
        if start.code != aiosmtplib.SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(message + b".\r\n")  # one write: one send() for the whole message
            self.data_written = True
            response = await protocol.read_response(timeout=self.timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            self.close()  # as SMTP.data() does: the protocol may be out of step now
            raise
        if response.code == aiosmtplib.SMTPStatus.domain_unavailable:
            self.close()
        if response.code != aiosmtplib.SMTPStatus.completed:
            raise SMTPDataError(response.code, response.message)
        return response


# ---------------------------------------------------------------------------------------------
# SMTP

DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_SECURITY_LABEL = {"tls": "TLS", "starttls": "STARTTLS", "none": "no encryption"}


# The numeric forms the resolver (inet_aton) also reads as IPv4: 127.1, 2130706433, 0x7f.0.0.1.
_SHORT_IPV4 = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}")


def canonical_host(host: str) -> str:
    """One spelling per server name: lowercase, no trailing dot or brackets, IPs compressed
    (also IPv4 written short or mapped into IPv6: the same server, so the same ledger)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        short = _short_ipv4(name)
        if short is None:
            return name
        address = short
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.compressed


def _short_ipv4(name: str) -> ipaddress.IPv4Address | None:
    if not _SHORT_IPV4.fullmatch(name):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def smtp_destination(host: str, port: int | None, security: str) -> str:
    """The ledger key of an SMTP server: `smtp://host:port`, however the settings spell it
    (host case, a trailing dot, the default port written out or left implicit)."""
    name = canonical_host(host)
    return f"smtp://{f'[{name}]' if ':' in name else name}:{port or DEFAULT_PORTS[security]}"


def is_loopback(host: str) -> bool:
    """True for localhost names and loopback addresses (mail never leaves the machine)."""
    name = canonical_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
        self.destination = smtp_destination(settings.host, settings.port, settings.security)
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
            )
        await client.login(username, self._password or "")
        await _greet(client)

    def _connect_error(self, exc: BaseException) -> TransportError:
        code = exc.code if isinstance(exc, SMTPResponseException) else None
        text = self._hide(_connect_problem(exc, self.settings))
        return TransportError(f"{self.where}: {text}", host=self.where, smtp_code=code)

    def _hide(self, text: str) -> str:
        """A server reply echoed into a message must never carry the password."""
        return text.replace(self._password, "***") if self._password else text


def check_security(settings: SmtpSettings) -> None:
    """Refuse settings that would send mail or a password in clear text off this machine."""
    if settings.security != "none" or is_loopback(settings.host):
        return
    if settings.username:
        raise ConfigError.one(
            None,
            f"AUTH over an unencrypted connection to {settings.host} would expose the password: "
            "set security to starttls or tls",
            field="smtp.security",
        )
    if not settings.allow_plaintext:
        raise ConfigError.one(
            None,
            f"`none` would send mail unencrypted to {settings.host}: use starttls or tls, "
            "or set [smtp] allow_plaintext = true if you really mean it",
            field="smtp.security",
        )


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

    async def send(self, envelope: Envelope, data: bytes) -> Accepted:
        options = self._mail_options(envelope, data)
        async with self._lock:
            if not self._client.is_connected:
                raise TransportError(f"{self._where}: connection closed", host=self._where)
            self._client.data_written = False
            try:
                reply = await self._transaction(envelope, data, options)
            except SMTPResponseException as exc:
                raise await self._refused(envelope, exc) from None
            except OSError as exc:  # dropped (ConnectionError), timed out (TimeoutError), TLS
                raise self._broken(exc) from None
        return Accepted(reply.code, reply.message)

    def _mail_options(self, envelope: Envelope, data: bytes) -> list[str]:
        if not data.endswith(b"\r\n"):
            raise ValueError("message data must end with CRLF (SMTP DATA form)")
        _check_address(envelope.sender, envelope.smtputf8, envelope.recipient)
        _check_address(envelope.recipient, envelope.smtputf8, envelope.recipient)
        options = [f"SIZE={len(data)}"] if self._size else []
        if not data.isascii():
            if not self.eight_bit:
                raise ValueError("8-bit data for a server without 8BITMIME (check eight_bit)")
            options.append("BODY=8BITMIME")
        if envelope.smtputf8:
            if not self.smtputf8:
                raise DeliveryError(
                    envelope.recipient,
                    553,
                    f"5.6.7 {self._where} does not offer SMTPUTF8, which this address needs",
                )
            options.append("SMTPUTF8")
        return options

    async def _transaction(
        self, envelope: Envelope, data: bytes, options: list[str]
    ) -> SMTPResponse:
        """MAIL, RCPT, DATA. MAIL and RCPT go through execute_command with the addresses that
        _check_address let through: aiosmtplib's mail() and rcpt() would parse each address
        again with email.utils.parseaddr (~25 us each, a quarter of the client's CPU)."""
        encoding = "utf-8" if envelope.smtputf8 else "ascii"
        sender = f"<{envelope.sender}>".encode(encoding)
        try:
            await self._command((250,), b"MAIL", b"FROM:" + sender, *map(str.encode, options))
        except SMTPResponseException as exc:
            if exc.code >= 500 or exc.code == 421:
                raise self._sender_refused(envelope, exc) from None
            raise
        recipient = f"<{envelope.recipient}>".encode(encoding)
        await self._command((250, 251), b"RCPT", b"TO:" + recipient)
        return await self._client.data_prepared(data)

    async def _command(self, expected: tuple[int, ...], *words: bytes) -> None:
        response = await self._client.execute_command(*words)  # closes on drop, timeout, 421
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


_UNSENDABLE = re.compile(r"[\x00-\x20\x7f<>]")  # controls, space, angle brackets


def _check_address(address: str, smtputf8: bool, recipient: str) -> None:
    """Refuse an address that cannot go on an SMTP command line, before anything is sent."""
    bad = _UNSENDABLE.search(address)
    if bad or (not smtputf8 and not address.isascii()):
        reason = f"the character {bad.group()!r}" if bad else "non-ASCII without SMTPUTF8"
        raise DeliveryError(recipient, 553, f"5.1.3 address {address!r} has {reason}")


# ---------------------------------------------------------------------------------------------
# The outbox: a Maildir

_COUNTER = itertools.count()


class OutboxTransport:
    """Messages written into a Maildir (new/cur/tmp) that any mail client or `mailbox` reads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = f"outbox {folder} (a Maildir; open it with any mail client)"
        self.destination = "outbox"

    async def connect(self) -> OutboxConnection:
        await asyncio.to_thread(self._make_maildir)
        return OutboxConnection(self.folder)

    def _make_maildir(self) -> None:
        try:
            for sub in ("tmp", "new", "cur"):
                make_folder(self.folder / sub)
        except OSError as exc:
            raise TransportError(
                f"outbox {self.folder}: cannot create the Maildir ({exc.strerror or exc})",
                host="outbox",
            ) from None


class OutboxConnection:
    """Writes each message atomically: tmp/NAME, fsync, rename to new/NAME, fsync new/."""

    eight_bit = True
    dot_stuffed = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, envelope: Envelope, data: bytes) -> Accepted:
        _check_address(envelope.sender, True, envelope.recipient)
        _check_address(envelope.recipient, True, envelope.recipient)
        path = await asyncio.to_thread(self._deliver, _delivered(envelope, data))
        return Accepted(250, str(path))

    def _deliver(self, message: bytes) -> Path:
        name = _unique_name()
        tmp = self.folder / "tmp" / name
        final = self.folder / "new" / name
        try:
            _write_synced(tmp, message)
            os.rename(tmp, final)
            fsync_folder(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransportError(
                f"outbox {self.folder}: cannot write a message ({exc.strerror or exc})",
                host="outbox",
            ) from None
        return final

    async def close(self) -> None:
        return None


def _delivered(envelope: Envelope, data: bytes) -> bytes:
    """The message as a delivery agent stores it: envelope headers first, Unix line endings."""
    trace = f"Return-Path: <{envelope.sender}>\nDelivered-To: {envelope.recipient}\n"
    return trace.encode() + data.replace(b"\r\n", b"\n")


def _unique_name() -> str:
    """time.MusecPpidQcounterRrandom.host, as Maildir readers expect (and `mailbox` writes)."""
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    micro = int((now % 1) * 1_000_000)
    return f"{int(now)}.M{micro}P{os.getpid()}Q{next(_COUNTER)}R{secrets.token_hex(4)}.{host}"


def _write_synced(path: Path, data: bytes) -> None:
    fd = open_private(path, os.O_WRONLY, exclusive=True)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------


def open_transport(config: Config, *, ssl_context: ssl.SSLContext | None = None) -> Transport:
    """SMTP when [smtp] host is set (file or NEWSLETTER_SMTP_HOST), else the outbox Maildir."""
    if config.smtp.host:
        return SmtpTransport(config.smtp, smtp_password(config.smtp), ssl_context=ssl_context)
    return OutboxTransport(config.outbox_dir)

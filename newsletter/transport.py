"""Where message bytes go: an SMTP server or the outbox Maildir, behind one interface.

The dispatcher sees only `Transport` and `Connection`. Contract for `Connection.send`:
- returns `Accepted` when the message was accepted;
- raises `DeliveryError` for a definite 4xx/5xx reply about this message (connection still usable);
- raises `TransportError` when the connection broke or timed out (connection unusable; reconnect);
  its `data_sent` says whether the message data had already gone out (then: outcome unknown).
  Also when the server refuses MAIL FROM with 5xx: that is about the sender or the session, every
  message would get it, so it counts as a connection failure (pause) rather than failing a reader.
`data` is exactly what goes on the wire after DATA: CRLF line endings, and dot-stuffed when
`connection.dot_stuffed` is True; 8-bit bodies only when `connection.eight_bit` is True.

`open_transport(config)` picks one: `SmtpTransport` (newsletter/smtp.py, the only module importing
aiosmtplib) when `[smtp] host` is set, else `OutboxTransport` (a Maildir at outbox/, here).
`destination(config.smtp)` is the key naming a send's ledger: where the messages go.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from newsletter.config import smtp_password
from newsletter.errors import ConfigError, DeliveryError, TransportError
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
# Destinations: one name per server, the ledger's key

DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
OUTBOX = "outbox"  # the ledger key of messages written to the outbox Maildir


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


def destination(smtp: SmtpSettings) -> str:
    """The ledger key of where messages go under these [smtp] settings: the server's
    `smtp://host:port`, or "outbox" when no host is set (as `open_transport` chooses).
    Needs no password, so a plan or `status` names the same ledger a send writes."""
    if not smtp.host:
        return OUTBOX
    return smtp_destination(smtp.host, smtp.port, smtp.security)


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


_UNSENDABLE = re.compile(r"[\x00-\x20\x7f<>]")  # controls, space, angle brackets


def check_address(address: str, smtputf8: bool, recipient: str) -> None:
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
        self.destination = OUTBOX

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
        check_address(envelope.sender, True, envelope.recipient)
        check_address(envelope.recipient, True, envelope.recipient)
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
        from newsletter.smtp import SmtpTransport  # aiosmtplib loads only when SMTP is used

        return SmtpTransport(config.smtp, smtp_password(config.smtp), ssl_context=ssl_context)
    return OutboxTransport(config.outbox_dir)

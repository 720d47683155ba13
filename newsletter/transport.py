"""Where message bytes go: an SMTP server (aiosmtplib) or the outbox Maildir, behind one interface.

The dispatcher sees only `Transport` and `Connection`. Contract for `Connection.send`:
- returns `Accepted` when the message was accepted;
- raises `DeliveryError` for a definite 4xx/5xx reply about this message (connection still usable);
- raises `TransportError` when the connection broke or timed out (connection unusable; reconnect);
  its `data_sent` says whether the message data had already gone out (then: outcome unknown).
`data` is exactly what goes on the wire after DATA: CRLF line endings, and dot-stuffed when
`connection.dot_stuffed` is True; 8-bit bodies only when `connection.eight_bit` is True.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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

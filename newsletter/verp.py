"""Return paths per message (VERP): `bounces+<id>@example.org`, so a bounce names its recipient.

With `[newsletter] bounce_address = "bounces@example.org"`, each message of a send goes out with
the envelope sender `bounces+<send>-<row>-<mac>@example.org`:
  send  6 base32 letters: which send (a hash of the issue's slug and its destination)
  row   the recipient's row in that send's ledger, in decimal
  mac   10 base32 letters (50 bits) of an HMAC-SHA256 under NEWSLETTER_SECRET over the send,
        the row and the address in that row
A bounce addressed to it maps to exactly one recipient of one send: the ledger gives the row's
address, and the MAC proves we made the id for that address. A forged or mangled id (or one of
an older ledger replaced since) maps to nobody. Everything is lowercase letters and digits, so
a relay that changes the case of the local part changes nothing (it is read case-insensitively).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.errors import SecretMissing

_DOMAIN_SEPARATION = b"newsletter return path v1\x00"
TAG_CHARS = 6
MAC_CHARS = 10
MAX_ROW_DIGITS = 10
# "+", the send, "-", the row, "-", the MAC: what the id adds to bounce_address's local part
ID_OCTETS = 1 + TAG_CHARS + 1 + MAX_ROW_DIGITS + 1 + MAC_CHARS
MAX_LOCAL = 64  # RFC 5321, 4.5.3.1.1
_ID = re.compile(r"([a-z2-7]{6})-([0-9]{1,10})-([a-z2-7]{10})")  # TAG, MAX_ROW_DIGITS, MAC


@dataclass(frozen=True)
class VerpId:
    """The id in a return path, as read back (not yet checked against a ledger)."""

    send: str
    row: int
    mac: str


def _b32(raw: bytes, chars: int) -> str:
    return base64.b32encode(raw).decode("ascii")[:chars].lower()


def send_tag(slug: str, destination: str) -> str:
    """The send's part of the id: the same for every message of one issue to one destination."""
    return _b32(hashlib.sha256(f"{slug}\0{destination}".encode()).digest(), TAG_CHARS)


class ReturnPaths:
    """Makes and reads the return paths under one bounce address and secret."""

    def __init__(self, bounce_address: str, secret: bytes) -> None:
        if not secret:
            raise SecretMissing("the return-path secret is empty: set NEWSLETTER_SECRET")
        local, _, domain = bounce_address.rpartition("@")
        self.local = local
        self.domain = domain
        self._keyed = hmac.new(secret, _DOMAIN_SEPARATION, hashlib.sha256)

    def _mac(self, send: str, row: int, email: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{send}\0{row}\0{email}".encode())
        return _b32(mac.digest()[:7], MAC_CHARS)

    def for_send(self, slug: str, destination: str) -> Callable[[int, str], str]:
        """The envelope sender of each message of this send, from its row id and address."""
        send = send_tag(slug, destination)
        head, tail = f"{self.local}+{send}-", f"@{self.domain}"

        def sender(row: int, email: str) -> str:
            return f"{head}{row}-{self._mac(send, row, email)}{tail}"

        return sender

    def read(self, address: str) -> VerpId | None:
        """The id in `address` when it is one of our return paths (any case), else None."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or domain.lower().rstrip(".") != self.domain.lower():
            return None
        base, plus, rest = local.lower().rpartition("+")
        if not plus or base != self.local.lower():
            return None
        found = _ID.fullmatch(rest)
        if found is None:
            return VerpId("", 0, "")  # ours in form, but no id we could have made
        return VerpId(found[1], int(found[2]), found[3])

    def verifies(self, verp: VerpId, email: str) -> bool:
        """Whether we made `verp` for `email` (the address in its ledger row)."""
        if not verp.send:
            return False
        return hmac.compare_digest(verp.mac, self._mac(verp.send, verp.row, email))


def local_part_problem(address: str) -> str | None:
    """Why `address` cannot be a bounce address (its ids would pass 64 octets), or None."""
    local = address.rpartition("@")[0]
    room = MAX_LOCAL - ID_OCTETS
    if len(local.encode()) > room:
        return (
            f"{address!r}: the part before @ may have at most {room} characters: each message "
            f"adds {ID_OCTETS} for its id, and RFC 5321 allows {MAX_LOCAL}"
        )
    return None

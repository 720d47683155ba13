"""Unsubscribe and sign-up confirmation tokens: an address, bound to this list by an HMAC-SHA256.

A token is URL-safe base64 (no padding) of: one version byte, the 32-byte HMAC, then the
normalised address in UTF-8. The HMAC key is NEWSLETTER_SECRET; the HMAC covers the list id and
the address, so a token for one list never unsubscribes from another. The endpoint needs nothing
but the secret to find the reader: the address travels in the token, the HMAC proves we made it.

A confirmation token (`make_confirm_token`) is made the same way under another version byte and
another domain-separation label, so neither kind ever verifies as the other: it carries the time
the person asked (it expires from there), the list they chose and their address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import unicodedata
from dataclasses import dataclass

from newsletter.errors import InvalidToken, SecretMissing

VERSION = b"\x01"
CONFIRM_VERSION = b"\x02"
_MAC_SIZE = 32
_MAX_TOKEN = 2048  # far above any real token (addresses are at most 254 octets); bounds the work
_DOMAIN_SEPARATION = b"newsletter unsubscribe v1\x00"
_CONFIRM_SEPARATION = b"newsletter confirm v1\x00"


def normalise_address(email: str) -> str:
    """The form tokens are made over: NFC, domain lowercased. Unlike addresses.address_key it
    keeps the local part's case: the token carries the address as stored; the endpoint matches
    rows with address_key."""
    local, at, domain = unicodedata.normalize("NFC", email.strip()).rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else domain


class TokenMaker:
    """Makes and checks tokens for one list; keeps the keyed HMAC state so each token is cheap."""

    def __init__(self, secret: bytes, list_id: str, purpose: bytes = _DOMAIN_SEPARATION) -> None:
        if not secret:
            raise SecretMissing("the unsubscribe secret is empty: set NEWSLETTER_SECRET")
        label = list_id.encode()
        prefix = purpose + len(label).to_bytes(2, "big") + label
        self._keyed = hmac.new(secret, prefix, hashlib.sha256)

    def _mac(self, address: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(address)
        return mac.digest()

    def make(self, email: str) -> str:
        address = normalise_address(email).encode()
        raw = VERSION + self._mac(address) + address
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> str:
        raw = _decode(token)
        version, mac, address = raw[:1], raw[1 : 1 + _MAC_SIZE], raw[1 + _MAC_SIZE :]
        if version != VERSION or not address:
            raise InvalidToken("not an unsubscribe token")
        if not hmac.compare_digest(mac, self._mac(address)):
            raise InvalidToken("unsubscribe token does not verify")
        try:
            return address.decode()
        except UnicodeDecodeError:  # only reachable with a forged MAC; kept for clarity
            raise InvalidToken("not an unsubscribe token") from None


def _decode(token: str) -> bytes:
    """Strict URL-safe base64: one encoding per token, so no two spellings carry the same bytes."""
    if not token.isascii() or len(token) > _MAX_TOKEN or len(token) % 4 == 1:
        raise InvalidToken("not an unsubscribe token")
    text = token.encode("ascii")
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("not an unsubscribe token") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != text:
        raise InvalidToken("not an unsubscribe token")  # non-canonical trailing bits
    return raw


def make_token(secret: bytes, list_id: str, email: str) -> str:
    """A URL-safe token carrying `email` (normalised), bound to `list_id` under `secret`."""
    return TokenMaker(secret, list_id).make(email)


def verify_token(secret: bytes, list_id: str, token: str) -> str:
    """The normalised address in `token`, or InvalidToken when it is not ours, altered or cut."""
    return TokenMaker(secret, list_id).verify(token)


# ---------------------------------------------------------------------------------------------
# Sign-up confirmation


@dataclass(frozen=True)
class ConfirmClaim:
    """What a confirmation token says: who asked, for which list, when (unix seconds)."""

    email: str
    list_name: str  # "" for the default list
    asked_at: int


def make_confirm_token(
    secret: bytes, list_id: str, email: str, list_name: str, asked_at: int
) -> str:
    """A URL-safe token confirming `email`'s sign-up to `list_name`, asked at `asked_at`."""
    name = list_name.encode()
    if len(name) > 255:
        raise InvalidToken("list name too long for a token")
    body = (
        asked_at.to_bytes(8, "big") + bytes([len(name)]) + name + normalise_address(email).encode()
    )
    mac = TokenMaker(secret, list_id, _CONFIRM_SEPARATION)._mac(body)
    return base64.urlsafe_b64encode(CONFIRM_VERSION + mac + body).rstrip(b"=").decode("ascii")


def verify_confirm_token(secret: bytes, list_id: str, token: str) -> ConfirmClaim:
    """The claim in `token`, or InvalidToken when it is not a confirmation token of ours (an
    unsubscribe token is not one). Expiry is the caller's: it knows the configured days."""
    raw = _decode(token)
    version, mac, body = raw[:1], raw[1 : 1 + _MAC_SIZE], raw[1 + _MAC_SIZE :]
    if version != CONFIRM_VERSION or len(body) < 10:
        raise InvalidToken("not a confirmation token")
    if not hmac.compare_digest(mac, TokenMaker(secret, list_id, _CONFIRM_SEPARATION)._mac(body)):
        raise InvalidToken("confirmation token does not verify")
    size = body[8]
    name, address = body[9 : 9 + size], body[9 + size :]
    if len(name) != size or not address:
        raise InvalidToken("not a confirmation token")
    try:
        return ConfirmClaim(address.decode(), name.decode(), int.from_bytes(body[:8], "big"))
    except UnicodeDecodeError:  # only reachable with a forged MAC
        raise InvalidToken("not a confirmation token") from None

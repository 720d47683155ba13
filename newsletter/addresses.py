"""Email addresses: the stored form, the comparison key, and the compact key used for big sets.

Stored form: Unicode NFC, the local part as written, the domain lowercased and readable (an IDN
domain stays in Unicode; punycode is only for the wire). A non-ASCII local part is accepted and
flagged: sending to it needs a server offering SMTPUTF8.

Comparison: two spellings of one address are one person. The domain compares case-insensitively
(DNS does), and so does the local part by default: RFC 5321 lets a server treat `Ann@` and
`ann@` as different mailboxes, but no mainstream provider does, and treating them as one person
is what protects an unsubscribe typed in a different case.
"""

from __future__ import annotations

import hashlib
import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

from newsletter.errors import NewsletterError


class BadAddress(NewsletterError):
    """An address that does not pass the syntax check; `.address` is what was given."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address!r}: {reason}" if address else reason)
        self.address = address
        self.reason = reason


def normalise_address(raw: str) -> tuple[str, bool]:
    """(stored form, needs_smtputf8) of an address; raises BadAddress when it is not valid.

    Offline: syntax only, no DNS. Whitespace around the address is trimmed.
    """
    text = raw.strip()
    if not text:
        raise BadAddress("", "empty email address")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise BadAddress(text, _reason(exc)) from None
    return unicodedata.normalize("NFC", result.normalized), bool(result.smtputf8)


def _reason(exc: EmailNotValidError) -> str:
    message = str(exc)
    return message[:1].lower() + message[1:].rstrip(".")


def address_key(email: str) -> str:
    """The comparison key of an address: NFC, domain lowercased (Unicode), local part casefolded.

    Never raises: it is also used on text that has not been validated (to find a row to update).
    """
    text = email.strip()
    if text.isascii():
        text = text.lower()
        if "xn--" not in text:
            return text
    else:
        text = unicodedata.normalize("NFC", text)
    local, at, domain = text.rpartition("@")
    if not at:
        return text.casefold()
    return f"{local.casefold()}@{_readable_domain(domain.lower())}"


def _readable_domain(domain: str) -> str:
    if "xn--" not in domain:
        return domain
    try:
        return str(idna.decode(domain))
    except (idna.IDNAError, UnicodeError):
        return domain


def key_hash(key: str) -> int:
    """The compact key: the first 8 bytes of sha256(address key), as an int.

    A million of these in a set costs ~70 MB instead of ~150 MB of strings; a false match needs
    a 64-bit collision (about 1 in 36 billion pairs at a million addresses).
    """
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def key_digest(key: str) -> str:
    """The full sha256 (hex) of an address key: what the suppression file stores."""
    return hashlib.sha256(key.encode()).hexdigest()


def digest_hash(digest: str) -> int:
    """The compact key of a suppression-file digest (its first 8 bytes)."""
    return int(digest[:16], 16)

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
import re
import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

from newsletter.errors import BadAddress
from newsletter.models import HEADER_CONTROL


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


# One mailbox as a person writes it in newsletter.toml: `news@example.org`, `Name <news@...>` or
# `"Name, with specials" <news@...>`. Looser parsers (email.utils.parseaddr) read an unquoted
# comma as the end of one address, so `Acme, Inc. <news@...>` silently became `Acme`.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PLAIN_NAME = r'[^"(),:;<>@\[\]\\]*'  # no specials but '.', which "J. Smith" needs
_MAILBOX = re.compile(
    rf"\s*(?:(?P<name>{_QUOTED}|{_PLAIN_NAME}?)\s*<(?P<angle>[^<>]*)>|(?P<bare>[^\s<>\",]+))\s*"
)
_NAME_THEN_ADDRESS = re.compile(r"\s*(?P<name>[^<>]*?)\s*<(?P<address>[^<>]*)>\s*")


def parse_mailbox(text: str, *, name_allowed: bool = True) -> tuple[str, str]:
    """(display name, address) of exactly one mailbox, its address with a domain; raises
    BadAddress saying what is wrong and how to write it instead."""
    if bad := HEADER_CONTROL.search(text):
        raise BadAddress(text, f"contains a control character (U+{ord(bad.group()):04X})")
    if "=?" in text:
        raise BadAddress(text, "write the name as plain text, not as an encoded word (=?...?=)")
    match = _MAILBOX.fullmatch(text)
    if match is None:
        fix = _quoted_name(text) if name_allowed else ""
        reason = "is not one email address" + (
            ": quote a display name that has commas or other specials" if fix else ""
        )
        raise BadAddress(text, reason, fix)
    raw_name = match.group("name") or ""
    if raw_name and not name_allowed:
        raise BadAddress(text, "must be an address alone, such as news@example.org (no name)")
    name = re.sub(r"\\(.)", r"\1", raw_name[1:-1]) if raw_name.startswith('"') else raw_name
    address = match.group("angle") if match.group("bare") is None else match.group("bare")
    try:
        normalise_address(address)
    except BadAddress as exc:
        inner = "" if address == text else f"{address.strip()!r} "
        raise BadAddress(text, f"{inner}is not an address: {exc.reason}") from None
    return name.strip(), address.strip()


def ascii_address(address: str) -> str:
    """The address with its domain in ASCII (IDNA): the form for headers and MAIL FROM of a
    message that does not use SMTPUTF8. A non-ASCII local part stays as it is."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except (idna.IDNAError, UnicodeError):
        raise BadAddress(address, "its domain has no ASCII (IDNA) form") from None


def _quoted_name(text: str) -> str:
    """`Name, Inc. <a@b.org>` as `"Name, Inc." <a@b.org>`; "" when that is not the mistake."""
    found = _NAME_THEN_ADDRESS.fullmatch(text)
    if found is None or '"' in found.group("name") or "\\" in found.group("name"):
        return ""
    return f'"{found.group("name")}" <{found.group("address")}>'

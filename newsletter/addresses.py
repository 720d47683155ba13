"""Email addresses: the stored form, the comparison key, and the compact key used for big sets.

Stored form: Unicode NFC, the local part as written, the domain lowercased and readable (an IDN
domain stays in Unicode; punycode is only for the wire). A non-ASCII local part is accepted and
flagged: sending to it needs a server offering SMTPUTF8.

Comparison: two spellings of one address are one person. The domain compares case-insensitively
(DNS does), and so does the local part by default: RFC 5321 lets a server treat `Ann@` and
`ann@` as different mailboxes, but no mainstream provider does, and treating them as one person
is what protects an unsubscribe typed in a different case.

Reserved names (RFC 2606 and 6761: the `.test`, `.example`, `.invalid` and `.localhost`
top-level domains, and `localhost`) never receive mail. Every way an address comes in (`test
--to`, `subscribers add`, import, a send's lists) refuses them unless the folder allows them for
local testing ([newsletter] allow_reserved_domains); this module is the one place that decides.
example.com, .net and .org are real domains, so they are ordinary addresses here.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

from newsletter.errors import BadAddress, ReservedAddress
from newsletter.models import HEADER_CONTROL

RESERVED_NAMES = ("test", "example", "invalid", "localhost")  # RFC 2606, RFC 6761
# Appended to a reserved domain so that email_validator, which refuses most of them outright,
# checks the rest of the address as it checks any other; removed again from its result.
_STAND_IN = ".reserved.example.org"


# A plain ASCII dot-atom local part (RFC 5322 atext, single dots inside): valid whatever the
# domain, so such an address needs only its domain checked, and a list has few domains.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def normalise_address(raw: str, *, allow_reserved: bool = False) -> tuple[str, bool]:
    """(stored form, needs_smtputf8) of an address; raises BadAddress when it is not valid,
    ReservedAddress when its domain is a reserved name and `allow_reserved` is off.

    Offline: syntax only, no DNS. Whitespace around the address is trimmed.
    """
    text = raw.strip()
    if not text:
        raise BadAddress("", "empty email address")
    local, _, domain = text.rpartition("@")
    if _plain(text, local, domain):  # the usual address: its domain's check is cached
        stored_domain, reason, name = _domain_check(domain, allow_reserved)
        if name:
            raise ReservedAddress(text, name)
        if reason:
            raise BadAddress(text, reason)
        return f"{local}@{stored_domain}", False
    return _checked(text, allow_reserved)


def _plain(text: str, local: str, domain: str) -> bool:
    return (
        text.isascii()
        and len(text) <= 254
        and 0 < len(local) <= 64
        and "xn--" not in domain.lower()
        and _PLAIN_LOCAL.fullmatch(local) is not None
    )


@functools.lru_cache(maxsize=4096)
def _domain_check(domain: str, allow_reserved: bool) -> tuple[str, str, str]:
    """(stored domain, why it is refused, the reserved name it is under): the full check of
    an address with a plain local part at `domain`, whose outcome is the domain's alone."""
    try:
        stored, _smtputf8 = _checked(f"a@{domain}", allow_reserved)
    except ReservedAddress as exc:
        return "", "", exc.name
    except BadAddress as exc:
        return "", exc.reason, ""
    return stored.rpartition("@")[2], "", ""


def _checked(text: str, allow_reserved: bool) -> tuple[str, bool]:
    """normalise_address through email_validator, for any address."""
    name = reserved_name(text)
    probe = text + _STAND_IN if name and not text.endswith(".") else text
    try:
        result = validate_email(probe, check_deliverability=False)
    except EmailNotValidError as exc:
        raise BadAddress(text, _reason(exc)) from None
    if name and not allow_reserved:
        raise ReservedAddress(text, name)
    stored = result.normalized.removesuffix(_STAND_IN) if probe != text else result.normalized
    return unicodedata.normalize("NFC", stored), bool(result.smtputf8)


def reserved_name(address: str) -> str | None:
    """`localhost`, or the reserved top-level domain (`.test`, ...) the address is under.

    Read as DNS reads the domain: any case, full-width dots (NFKC) and a final dot included."""
    domain = unicodedata.normalize("NFKC", address.rpartition("@")[2]).casefold()
    top = domain.replace("\u3002", ".").rstrip(".").rpartition(".")[2]
    if top not in RESERVED_NAMES:
        return None
    return "localhost" if domain.rstrip(".") == "localhost" else f".{top}"


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


def parse_mailbox(
    text: str, *, name_allowed: bool = True, allow_reserved: bool = False
) -> tuple[str, str]:
    """(display name, address) of exactly one mailbox, its address with a domain; raises
    BadAddress saying what is wrong and how to write it instead (ReservedAddress: see
    normalise_address)."""
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
        normalise_address(address, allow_reserved=allow_reserved)
    except ReservedAddress:
        raise
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

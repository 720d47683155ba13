"""Text for mail headers: refused when it could inject a header, tidied, and encoded (RFC 2047)
when it is not plain ASCII. The message builder puts the results into its header bytes.
"""

from __future__ import annotations

import binascii
import re

from newsletter.errors import MessageError
from newsletter.models import HEADER_CONTROL

_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # as email.utils.formataddr: these need quoting
_SPACES = re.compile(" {2,}")
_WORD_OCTETS = 45  # UTF-8 octets per encoded word: base64 of 45 is 60, the word 72 characters


def check_header_value(value: str, *, field: str, recipient: str = "") -> str:
    """`value` unchanged, or MessageError when a CR, LF or other control character could
    start a new header line (header injection) or corrupt the header."""
    bad = HEADER_CONTROL.search(value)
    if bad is not None:
        raise MessageError(
            f"contains control character U+{ord(bad.group()):04X}: refused in a mail header",
            recipient=recipient,
            field=field,
        )
    return value


def tidy_header_text(value: str) -> str:
    """Header text as it is sent: single spaces, no whitespace of any kind at the ends (a name
    of only no-break spaces is blank, as merge fields treat it)."""
    return _SPACES.sub(" ", value).strip()


# ---------------------------------------------------------------------------------------------
# Encoding (RFC 2047 base64 encoded words, folded onto continuation lines)


def encoded_words(text: str) -> str:
    """`text` as RFC 2047 encoded words of at most 72 characters, folded with CRLF SP."""
    data = text.encode()
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_OCTETS, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # never split a UTF-8 sequence between two words
        chunk = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?utf-8?b?{chunk}?=")
        start = end
    return "\r\n ".join(words)


def _plain_enough(text: str) -> bool:
    """Text that can go into a header as it is: printable ASCII, short, not like an encoded word."""
    return text.isascii() and "=?" not in text and len(text) <= 900


def header_text(text: str) -> str:
    """An unstructured header value (Subject): as is when plain ASCII, else encoded words."""
    return text if _plain_enough(text) else encoded_words(text)


def phrase(name: str) -> str:
    """A display name: as is, quoted like formataddr when it has specials, else encoded words."""
    if not _plain_enough(name):
        return encoded_words(name)
    if _SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return name


def mailbox(name: str, address: str) -> str:
    """`Name <address>`, or the bare address when there is no name."""
    return f"{phrase(name)} <{address}>" if name else address

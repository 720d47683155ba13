"""The one rule for whether a URL written by a person can be linked to: shared by the config
check, the issue check and lint, so `check` refuses exactly what would break a send or a page."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

# A host as a link can carry it: DNS labels (letters, IDN letters included, digits, '-', '_')
# joined by dots, an IPv4 address, or an IPv6 address (its brackets already taken off).
_HOST = re.compile(r"[\w-]+(?:\.[\w-]+)*\.?|[0-9a-f:.]*:[0-9a-f:.]*")


def split(url: str) -> SplitResult | None:
    """`url` split into its parts, or None when it cannot be (e.g. `https://[::1`)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError:
        return None
    return None if port == 0 else parts


# A merge field or tag in a link (`?u={{ subscriber.email }}`) is filled per reader: judge the
# link with each one as a plain word, so the blanks inside the braces are not the link's own.
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def url_problem(url: str) -> str | None:
    """Why `url` is not a usable web or mailto: link, or None. Says nothing about its scheme
    beyond that: callers decide which schemes they accept."""
    url = _TEMPLATE.sub("x", url)
    parts = split(url.strip())
    if parts is None:
        return "cannot be parsed as a URL (check the brackets, the port and the host)"
    if parts.scheme in ("http", "https") and not parts.hostname:
        return "has no host (write it in full, e.g. https://example.org/page)"
    if parts.scheme in ("http", "https") and not _HOST.fullmatch(parts.hostname or ""):
        return f"{parts.hostname!r} is not a host name (letters, digits, '-' and dots)"
    if any(char.isspace() for char in url.strip()):
        return "contains a space or other blank: write it as %20"
    if parts.scheme == "mailto" and "@" not in parts.path:
        return "has no address after mailto:"
    return None


# ---------------------------------------------------------------------------------------------
# Database URLs ([store] url): shown in errors and `store check`, never with their password

_QUERY_PASSWORD = re.compile(r"(?i)((?:^|[?&])password=)[^&#]*")
_KEYWORD_PASSWORD = re.compile(r"(?i)((?:^|\s)password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|\S*)")


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (in its user part or its query)."""
    return masked(url) != url


def masked(url: str) -> str:
    """`url` with its password (user part or `?password=`) replaced by `***`, to be shown."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # libpq's `key=value` form: its password may be quoted and hold spaces
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    netloc_end = len(rest) if (cut := _first(rest, "/?#")) < 0 else cut
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    if "@" in netloc:
        user_part, at, hosts = netloc.rpartition("@")
        if ":" in user_part:
            netloc = f"{user_part.partition(':')[0]}:***{at}{hosts}"
    return scheme + sep + netloc + _QUERY_PASSWORD.sub(r"\1***", tail)


def _first(text: str, chars: str) -> int:
    """The index of the first of `chars` in `text`, or -1."""
    found = [i for c in chars if (i := text.find(c)) >= 0]
    return min(found) if found else -1

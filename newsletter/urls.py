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

# `sslpassword` (the passphrase of the client's key) is a secret as `password` is
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|[?&])(?:ssl)?password=)[^&#]*")
_KEYWORD_PASSWORD = re.compile(r"(?i)((?:^|\s)(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|\S*)")


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (in its user part or its query)."""
    return masked(url) != url


def masked(url: str) -> str:
    """`url` with its password (user part or `?password=`) replaced by `***`, to be shown."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # libpq's `key=value` form: its password may be quoted and hold spaces
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    end = _user_end(rest)
    user, after = (rest[:end], rest[end:]) if end >= 0 else ("", rest)
    if ":" in user:
        user = f"{user.partition(':')[0]}:***"
    return scheme + sep + user + _QUERY_PASSWORD.sub(r"\1***", after)


def user_password(url: str) -> str:
    """The password of a URL's user part as written (not decoded); "" without one."""
    rest = url.partition("://")[2]
    end = _user_end(rest)
    return rest[:end].partition(":")[2] if end >= 0 else ""


def _user_end(rest: str) -> int:
    """Where the user part of a URL (after `scheme://`) ends, at its `@`; -1 without one. A
    password pasted without percent-encoding may hold `@`, `/`, `?` or `#`: the last `@` that
    is not in the query (`?key=value&...` after a host, port or path)."""
    for end in range(len(rest) - 1, -1, -1):
        if rest[end] == "@" and not _in_query(rest[:end]):
            return end
    return -1


def _in_query(head: str) -> bool:
    """Whether `head` (a URL's text before an `@`) ends inside its query."""
    base, mark, query = head.partition("?")
    if not mark or not _QUERY.fullmatch(query):
        return False
    return "/" in base or ":" not in base or base.rpartition(":")[2].isdigit()


_QUERY = re.compile(r"(?:\w+=[^&]*&)*\w+=[^&]*")

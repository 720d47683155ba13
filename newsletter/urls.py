"""The one rule for whether a URL written by a person can be linked to: shared by the config
check, the issue check and lint, so `check` refuses exactly what would break a send or a page."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split(url: str) -> SplitResult | None:
    """`url` split into its parts, or None when it cannot be (e.g. `https://[::1`)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError on a port that is not a number in range
    except ValueError:
        return None
    return parts


def url_problem(url: str) -> str | None:
    """Why `url` is not a usable web or mailto: link, or None. Says nothing about its scheme
    beyond that: callers decide which schemes they accept."""
    parts = split(url.strip())
    if parts is None:
        return "cannot be parsed as a URL (check the brackets, the port and the host)"
    if parts.scheme in ("http", "https") and not parts.hostname:
        return "has no host (write it in full, e.g. https://example.org/page)"
    if parts.scheme == "mailto" and "@" not in parts.path:
        return "has no address after mailto:"
    return None

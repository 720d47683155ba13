"""The checks of configuration values: each takes a value and returns a problem, or None.

settings.py names one per key (`key(..., check=checks.https)`); the loader reports what they
return with the file, line and key (or the environment variable) the value came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

Check = Callable[[Any], str | None]  # returns a problem, or None when the value is fine

# What `init` writes for the keys marked REPLACE (scaffold/newsletter.toml): `check` and the
# outbox warn about them; a send through an SMTP server refuses them (lint.refuse_placeholders).
INIT_FROM = "news@example.org"
INIT_BASE_URL = "https://news.example.org"


def https(value: str) -> str | None:
    from newsletter.urls import url_problem

    if not value:
        return None
    problem = url_problem(value)
    if problem is None and urlsplit(value).scheme != "https":
        problem = "is not https://"
    return f"must be an https:// URL: {value!r} {problem}" if problem else None


def base_url(value: str) -> str | None:
    problem = https(value)
    if problem is None and (value.endswith("/") or urlsplit(value).query):
        return f"must not end with '/' or carry a query string: {value!r}"
    return problem


def mailbox(toml_key: str, *, name_allowed: bool, sender: bool = True) -> Check:
    """One email address with a domain (and a display name when allowed), strictly parsed.
    A `sender` address goes into every message or MAIL FROM: its local part must be ASCII
    (else every reader's server would need SMTPUTF8); its domain is sent in IDNA form.
    Reserved names (news@x.test) pass here: load_config refuses them, unless
    allow_reserved_domains (a check that needs two keys)."""

    def check(value: str) -> str | None:
        from newsletter.addresses import ascii_address, parse_mailbox
        from newsletter.errors import BadAddress

        if not value:
            return None
        try:
            parsed = parse_mailbox(value, name_allowed=name_allowed, allow_reserved=True)
            address = ascii_address(parsed[1])
            if sender and not address.isascii():
                return (
                    f"{value!r}: the part before @ must be ASCII (else every server needs SMTPUTF8)"
                )
        except BadAddress as exc:
            fix = f", as in {toml_key} = '{exc.fix}'" if exc.fix else ""
            return f"{value!r} {exc.reason}{fix}"
        return None

    return check


def bounce_address(value: str) -> str | None:
    """A sender address (as `mailbox` checks it) whose local part leaves room for the id each
    message adds (verp.py)."""
    from newsletter.addresses import ascii_address
    from newsletter.verp import local_part_problem

    problem = mailbox("bounce_address", name_allowed=False)(value)
    if problem or not value:
        return problem
    return local_part_problem(ascii_address(value.strip()))


def _header_text(value: str) -> str | None:
    """Text that goes into a mail header: no line breaks or other control characters."""
    from newsletter.models import HEADER_CONTROL

    bad = HEADER_CONTROL.search(value)
    return f"contains a control character (U+{ord(bad.group()):04X})" if bad else None


# RFC 2919 list id: dot-atom text with at least one dot, e.g. news.example.org
LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


def list_id(value: str) -> str | None:
    ok = not value or LIST_ID.fullmatch(value)
    return None if ok else f"{value!r} is not a list id such as news.example.org"


# A DNS name as DKIM's d= and s= carry it (in a header, and in the key's DNS query): labels of
# letters, digits, '-' and '_', joined by dots. Anything else (';', a space, a line break) would
# change the DKIM-Signature header itself.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def ascii_domain(value: str) -> str:
    """`value` in its ASCII (IDNA) form; unchanged when it has none."""
    try:
        return value.encode("idna").decode("ascii")
    except UnicodeError:
        return value


def dns_name(example: str, *, domain: bool) -> Check:
    def check(value: str) -> str | None:
        name = ascii_domain(value) if domain else value
        ok = not value or (_DNS_NAME.fullmatch(name) and (not domain or "." in name))
        return None if ok else f"{value!r} is not a DNS name such as {example}"

    return check


def host(value: str) -> str | None:
    """A host name (IDN allowed, one trailing dot) or an IP address, as a connection takes it."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    name = ascii_domain(value.removesuffix("."))
    if not value or _DNS_NAME.fullmatch(name):
        return None
    return f"{value!r} is not a host name or IP address (the port goes in [smtp] port)"


def store_url(value: str) -> str | None:
    """Empty, or a PostgreSQL URL (libpq's form: postgresql://user@host:port/dbname?param=...)."""
    from newsletter.urls import masked

    scheme = value.partition("://")[0] if "://" in value else ""
    if not value or scheme in ("postgresql", "postgres"):
        return None
    return f"{masked(value)!r} is not a PostgreSQL URL such as postgresql://user@host/dbname"


def one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def positive(value: float | None) -> str | None:
    ok = value is None or (math.isfinite(value) and value > 0)
    return None if ok else "must be a number greater than 0"


def port(value: int | None) -> str | None:
    return None if value is None or 1 <= value <= 65535 else "must be a port from 1 to 65535"


def connections(value: int) -> str | None:
    # each connection is a task and a socket: a typo such as 1000000000 must not start them all
    return None if 1 <= value <= 1000 else "must be from 1 to 1000"


def delays(value: tuple[float, ...]) -> str | None:
    ok = all(math.isfinite(v) and v >= 0 for v in value)
    return None if ok else "must be a list of seconds, each 0 or more"


# The CSS named colours (CSS Color Module Level 4), accepted wherever a colour is.
# fmt: off
CSS_COLOURS = frozenset({
    "aliceblue", "antiquewhite", "aqua", "aquamarine", "azure", "beige", "bisque", "black",
    "blanchedalmond", "blue", "blueviolet", "brown", "burlywood", "cadetblue", "chartreuse",
    "chocolate", "coral", "cornflowerblue", "cornsilk", "crimson", "cyan", "darkblue",
    "darkcyan", "darkgoldenrod", "darkgray", "darkgreen", "darkgrey", "darkkhaki",
    "darkmagenta", "darkolivegreen", "darkorange", "darkorchid", "darkred", "darksalmon",
    "darkseagreen", "darkslateblue", "darkslategray", "darkslategrey", "darkturquoise",
    "darkviolet", "deeppink", "deepskyblue", "dimgray", "dimgrey", "dodgerblue", "firebrick",
    "floralwhite", "forestgreen", "fuchsia", "gainsboro", "ghostwhite", "gold", "goldenrod",
    "gray", "green", "greenyellow", "grey", "honeydew", "hotpink", "indianred", "indigo",
    "ivory", "khaki", "lavender", "lavenderblush", "lawngreen", "lemonchiffon", "lightblue",
    "lightcoral", "lightcyan", "lightgoldenrodyellow", "lightgray", "lightgreen", "lightgrey",
    "lightpink", "lightsalmon", "lightseagreen", "lightskyblue", "lightslategray",
    "lightslategrey", "lightsteelblue", "lightyellow", "lime", "limegreen", "linen", "magenta",
    "maroon", "mediumaquamarine", "mediumblue", "mediumorchid", "mediumpurple",
    "mediumseagreen", "mediumslateblue", "mediumspringgreen", "mediumturquoise",
    "mediumvioletred", "midnightblue", "mintcream", "mistyrose", "moccasin", "navajowhite",
    "navy", "oldlace", "olive", "olivedrab", "orange", "orangered", "orchid", "palegoldenrod",
    "palegreen", "paleturquoise", "palevioletred", "papayawhip", "peachpuff", "peru", "pink",
    "plum", "powderblue", "purple", "rebeccapurple", "red", "rosybrown", "royalblue",
    "saddlebrown", "salmon", "sandybrown", "seagreen", "seashell", "sienna", "silver",
    "skyblue", "slateblue", "slategray", "slategrey", "snow", "springgreen", "steelblue", "tan",
    "teal", "thistle", "tomato", "turquoise", "violet", "wheat", "white", "whitesmoke",
    "yellow", "yellowgreen"
})
# fmt: on


def colour(value: str) -> str | None:
    """#rrggbb, #rgb or a CSS colour name: what every mail client's CSS understands."""
    ok = re.fullmatch(r"#[0-9A-Fa-f]{6}|#[0-9A-Fa-f]{3}", value) or value.lower() in CSS_COLOURS
    return None if ok else f"must be a colour such as '#1a5276' or 'navy', not {value!r}"


def name(value: str) -> str | None:
    if value and not value.strip():  # "" is reported as missing
        return "is blank: write the newsletter's name (From, List-Id and every page show it)"
    return _header_text(value)


def link_text(value: str) -> str | None:
    ok = value.strip()
    return None if ok else "is blank: every copy's unsubscribe link would have no visible text"


def label(value: str) -> str | None:
    """A short text shown as a link (a social network's name): not blank, one line."""
    if not value.strip():
        return "is blank: write the network's name, e.g. 'Flickr'"
    return _header_text(value)


def language(value: str) -> str | None:
    ok = re.fullmatch(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*", value)
    return None if ok else f"must be a language tag such as 'en' or 'pt-BR', not {value!r}"


def list_names(value: tuple[str, ...]) -> str | None:
    """Names of lists in subscribers/ (`news` or `news.csv`), each at most once."""
    for item in value:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", item) or item.endswith("."):
            return f"must be list names such as 'news' (a file in subscribers/), not {item!r}"
    if len({item.removesuffix(".csv") for item in value}) != len(value):
        return "names a list twice"
    return None


def networks(value: tuple[str, ...]) -> str | None:
    """IP addresses or networks (`10.0.0.0/8`, `::1`)."""
    import ipaddress

    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"must be IP addresses or networks such as '10.0.0.0/8', not {item!r}"
    return None


def sentence(value: str) -> str | None:
    if not value.strip():
        return "is blank: the form must show what the person agrees to"
    return _header_text(value)


def days(value: int) -> str | None:
    # a link that lives longer than a month is a standing invitation, not a confirmation
    return None if 1 <= value <= 30 else "must be from 1 to 30 days"


def at_least(least: int) -> Check:
    def check(value: int) -> str | None:
        return None if value >= least else f"must be {least} or more"

    return check

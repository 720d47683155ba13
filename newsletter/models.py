"""Frozen data shared by every stage: issue file -> Issue -> Rendered -> message per Subscriber."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Characters no mail header value may carry: a CR or LF would start a new header (injection),
# the others corrupt it. One rule for every check of text bound for a header (config, issue,
# addresses, message building), so `check` refuses exactly what building a message would.
HEADER_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# ---------------------------------------------------------------------------------------------
# The issue, as the author wrote it (issue.py builds it; render.py reads it)


@dataclass(frozen=True)
class Image:
    src: str  # absolute https URL; nothing is embedded in the message
    alt: str
    width: int  # CSS pixels at desktop width
    href: str = ""


@dataclass(frozen=True)
class Link:
    text: str
    url: str
    label: str = ""  # shown before the link, e.g. the region of a good practice
    note: str = ""  # Markdown, shown after the link


@dataclass(frozen=True)
class Booking:
    """How to book an event: a button; without `text`, a default in the issue's language."""

    url: str
    text: str = ""


@dataclass(frozen=True)
class Article:
    heading: str
    body: str  # Markdown
    image: Image | None = None
    cta: Link | None = None
    button: bool = False  # show the call to action as a button rather than a link
    id: str = ""  # the HTML id of the block, for `#id` links within the issue
    kind: Literal["article"] = "article"


@dataclass(frozen=True)
class Links:
    heading: str
    items: tuple[Link, ...]
    intro: str = ""  # Markdown
    outro: str = ""  # Markdown
    id: str = ""  # the HTML id of the block, for `#id` links within the issue
    kind: Literal["links"] = "links"


@dataclass(frozen=True)
class Event:
    title: str
    date: dt.date
    start: dt.time | None = None  # None: a whole day (or a deadline) without a time
    timezones: tuple[str, ...] = ()  # IANA names; the first is the one the author thinks in
    deadline: bool = False  # the date is a deadline ("Deadline: 6 October 2021")
    description: str = ""  # Markdown
    online: bool = False
    place: str = ""
    booking: Booking | None = None
    heading: str = ""  # a section heading above the event, e.g. "Date for your diary"
    id: str = ""  # the HTML id of the block, for `#id` links within the issue
    kind: Literal["event"] = "event"


@dataclass(frozen=True)
class Text:
    body: str  # Markdown
    heading: str = ""
    id: str = ""  # the HTML id of the block, for `#id` links within the issue
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ImageRow:
    """Two or more images side by side on desktop, stacked on a phone."""

    images: tuple[Image, ...]
    captions: tuple[str, ...] = ()
    heading: str = ""
    id: str = ""  # the HTML id of the block, for `#id` links within the issue
    kind: Literal["images"] = "images"


@dataclass(frozen=True)
class Heading:
    """A heading over the blocks that follow it, e.g. "Events": it separates groups of blocks."""

    heading: str
    id: str = ""
    kind: Literal["heading"] = "heading"


@dataclass(frozen=True)
class Divider:
    """A rule between groups of blocks."""

    id: str = ""
    kind: Literal["divider"] = "divider"


Block = Article | Links | Event | Text | ImageRow | Heading | Divider


@dataclass(frozen=True)
class Issue:
    path: Path
    slug: str
    title: str
    subject: str
    date: dt.date
    blocks: tuple[Block, ...]
    preheader: str = ""
    draft: bool = False  # never sent to a list, never in the archive (`new` writes it)
    publish: bool = False  # in the archive before (or without) a send to a list
    allow_html: bool = False  # raw HTML in Markdown passes only when the author turns this on


# ---------------------------------------------------------------------------------------------
# The rendered issue: rendered once, filled per recipient without rendering again.


@dataclass(frozen=True)
class Field:
    """A value left open in rendered output, filled per recipient.

    source "subscriber": a subscriber column (name, email, any other column);
    source "message": a value the message builder knows (unsubscribe_url).
    """

    name: str
    default: str | None = None
    source: Literal["subscriber", "message"] = "subscriber"


# Literal text and open fields, in order. Literal text in `html` is already HTML; a filled value
# must be HTML-escaped there. Lines of literal text, joined with "\n", are at most 998 octets
# wherever the HTML has a place to break (markup.py); message.py sends a longer one base64.
Template = tuple[str | Field, ...]


@dataclass(frozen=True)
class Rendered:
    slug: str
    subject: Template
    preheader: Template
    html: Template
    text: Template
    digest: str  # sha256 over everything above: binds a send's ledger to this exact content
    content: str = ""  # sha256 of the issue as written, without its slug or file name
    draft: bool = False  # the issue says `draft = true`: a send to a list refuses it

    def fields(self) -> frozenset[Field]:
        parts = (self.subject, self.preheader, self.html, self.text)
        return frozenset(p for t in parts for p in t if isinstance(p, Field))


# ---------------------------------------------------------------------------------------------
# Subscribers (subscribers/)

Status = Literal["subscribed", "unsubscribed", "bounced", "complained", "pending"]
STATUSES: tuple[Status, ...] = ("subscribed", "unsubscribed", "bounced", "complained", "pending")
SUPPRESSING: tuple[Status, ...] = ("unsubscribed", "bounced", "complained")  # never mailed again


@dataclass(frozen=True)
class Subscriber:
    email: str  # NFC, domain lowercased
    name: str = ""
    status: Status = "subscribed"
    tags: frozenset[str] = frozenset()
    fields: Mapping[str, str] = field(default_factory=dict)  # every column, as read
    list_path: Path | None = None
    smtputf8: bool = False  # non-ASCII local part: the server must offer SMTPUTF8


def nodes(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(TOML path, value) of every part of an issue: its dataclasses, tuples and leaves."""
    yield where, value
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from nodes(item, f"{where}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for fld in dataclasses.fields(value):
            if fld.name not in ("path", "kind"):
                yield from nodes(getattr(value, fld.name), f"{where}.{fld.name}".lstrip("."))


def walk(value: Any) -> Iterator[tuple[str, str, str]]:
    """(path, field name, text) of every string in an issue, with TOML paths."""
    for where, node in nodes(value):
        if isinstance(node, str):
            yield where, where.rpartition(".")[2].split("[")[0], node

"""Rendered issue + Subscriber -> the bytes of one MIME message, fast.

A `MessageFactory` is built once per issue. For each way the bytes may travel (8-bit bodies
dot-stuffed for the SMTP wire or not; base64 when the server lacks 8BITMIME) it compiles each
part once into a plan: the headers and literal text as bytes, already CRLF and dot-stuffed, with
empty places for the fields. Per recipient, values of one line each (nearly all) are escaped for
their part (HTML-escaped in the HTML part, as they are in the text part), encoded and dropped
into their places; a value with line breaks goes through a general join that makes them CRLF,
doubles leading dots and tracks line lengths. Quoted-printable is never used: its soft line
breaks would split the places. Header values are checked for control characters first.

A message falls back to base64 bodies for one recipient when a filled value would make a line
longer than 998 octets or carries a NUL, which 8-bit MIME may not. tests/message_reference.py
builds the same message the slow, obvious way with `email.message.EmailMessage`; the tests prove
the two parse to the same headers and decoded parts.
"""

from __future__ import annotations

import binascii
import datetime as dt
import html
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime

from newsletter.config import LIST_ID, Config
from newsletter.errors import ConfigError, MessageError
from newsletter.headers import check_header_value, header_text, mailbox, phrase, tidy_header_text
from newsletter.models import HEADER_CONTROL, Field, Rendered, Subscriber, Template
from newsletter.tokens import TokenMaker

MAX_LINE = 998  # octets per line, CRLF excluded (RFC 5322 2.1.1)
MESSAGE_FIELDS = frozenset({"unsubscribe_url"})  # values of source "message" this module knows

_NEWLINES = re.compile(r"\r\n|\r|\n")
_MULTILINE = re.compile(r"[\r\n\x00]")  # values the plan cannot take: the general join
_ADDRESS_BAD = re.compile(r"[\s<>(),;:\"\[\]\\]")


# ---------------------------------------------------------------------------------------------
# Body chunks. A chunk is (bytes, bytes at line start, first, last, breaks): the bytes when it
# follows text on the same line and when it begins a line (dot-stuffed variant: a leading '.'
# doubled), the octets before its first line break and after its last, whether it has one.

Chunk = tuple[bytes, bytes, int, int, bool]
Slot = Chunk | int  # a literal chunk, or the index of a value in the part's value list


def _crlf(text: str) -> str:
    return _NEWLINES.sub("\r\n", text) if ("\n" in text or "\r" in text) else text


def _chunk(data: bytes, stuffed: bool) -> Chunk | None:
    """A chunk of CRLF text, or None when one of its inner lines is too long for 8-bit."""
    if b"\r\n" not in data:
        start = b"." + data if stuffed and data[:1] == b"." else data
        return (data, start, len(data), 0, False)
    lines = data.split(b"\r\n")
    if any(len(line) > MAX_LINE for line in lines[1:-1]):
        return None
    if stuffed:
        data = data.replace(b"\r\n.", b"\r\n..")
    start = b"." + data if stuffed and data[:1] == b"." else data
    return (data, start, len(lines[0]), len(lines[-1]), True)


def _join_8bit(
    part_head: bytes, slots: tuple[Slot, ...], values: list[Chunk | None], out: list[bytes]
) -> bool:
    """Append a part's head and content to `out`; False when a line would exceed 998 octets."""
    out.append(part_head)
    at_start = True
    line = 0
    for slot in slots:
        chunk = values[slot] if isinstance(slot, int) else slot
        if chunk is None:
            return False
        data, start, first, last, breaks = chunk
        if not data:
            continue
        out.append(start if at_start else data)
        if breaks:
            if line + first > MAX_LINE:
                return False
            line = last
            at_start = last == 0
        else:
            line += first
            at_start = False
    if line > MAX_LINE:
        return False
    if not at_start or out[-1] is part_head:  # nothing written: still one line break
        out.append(b"\r\n")  # a part ends with a line break, as EmailMessage.set_content does
    return True


@dataclass(frozen=True)
class _Plan:
    """A part laid out for values of one line each (nearly all): per recipient, only put the
    encoded values into their places and join."""

    pieces: tuple[bytes, ...]  # part head, literal bytes, b"" where values go, final CRLF
    places: tuple[tuple[int, int], ...]  # (index in pieces, index in the part's values)
    longest: int  # octets a value may have without any line passing 998
    dotted: tuple[int, ...]  # values that may begin a line: a leading '.' needs the general join

    @classmethod
    def make(cls, head: bytes, literal: tuple[bytes | int, ...], stuffed: bool) -> _Plan | None:
        """None when the layout depends on the values (then the general join is used)."""
        pieces, places, limits, dotted = [head], [], [], []
        at_start, line, on_line = True, 0, 0
        run_start: bool | None = None  # line start before the values just seen; None: no values
        for item in literal:
            if isinstance(item, int):
                run_start = at_start if run_start is None else run_start
                if stuffed and run_start:
                    dotted.append(item)
                places.append((len(pieces), item))
                pieces.append(b"")
                at_start, on_line = False, on_line + 1
                continue
            chunk = _chunk(item, stuffed)
            if chunk is None or (run_start and stuffed and item[:1] == b"."):
                return None  # too long a line; or a dot whose stuffing depends on the values
            data, start, first, last, breaks = chunk
            pieces.append(start if at_start else data)
            if breaks and line + first > MAX_LINE:
                return None
            if breaks and on_line:
                limits.append((MAX_LINE - line - first) // on_line)
            line, on_line = (last, 0) if breaks else (line + first, on_line)
            at_start, run_start = breaks and last == 0, None
        if run_start or line > MAX_LINE:
            return None  # the final line break depends on the values; or a line too long
        if on_line:
            limits.append((MAX_LINE - line) // on_line)
        if not at_start or len(pieces) == 1:
            pieces.append(b"\r\n")
        longest = min(limits, default=MAX_LINE)
        return cls(tuple(pieces), tuple(places), longest, tuple(dict.fromkeys(dotted)))

    def fill(self, values: list[bytes], out: list[bytes]) -> bool:
        """Append the filled part to `out`; False (nothing appended) when the plan cannot take
        these values: one too long, or a leading '.' where a line may begin."""
        if values and max(map(len, values)) > self.longest:
            return False
        if any(values[i][:1] == b"." for i in self.dotted):
            return False
        pieces = list(self.pieces)
        for index, value in self.places:
            pieces[index] = values[value]
        out += pieces
        return True


def _base64_body(content: bytes) -> bytes:
    encoded = binascii.b2a_base64(content, newline=False)
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


@dataclass(frozen=True)
class _Part:
    """One body part compiled: its slots per variant, and how values are escaped."""

    fields: tuple[int, ...]  # the factory's indexes of this part's fields, in slot index order
    literal: tuple[bytes | int, ...]  # unstuffed CRLF bytes and value indexes (base64 path)
    slots: dict[bool, tuple[Slot, ...] | None]  # by dot_stuffed; None: needs base64 always
    plans: dict[bool, _Plan | None]  # by dot_stuffed; None: always the general join
    head: bytes  # the part's headers for 8-bit
    escape: Callable[[str], str] | None  # None: values go in as they are

    @classmethod
    def compile(
        cls,
        template: Template,
        escape: Callable[[str], str] | None,
        known: tuple[Field, ...],
        head: bytes,
    ) -> _Part:
        own = _distinct_fields(template)
        merged: list[str | int] = []
        for piece in template:
            if isinstance(piece, Field):
                merged.append(own.index(piece))
            elif merged and isinstance(merged[-1], str):
                merged[-1] += piece
            elif piece:
                merged.append(piece)
        literal = tuple(_crlf(p).encode() if isinstance(p, str) else p for p in merged)
        slots = {stuffed: cls._slots(literal, stuffed) for stuffed in (False, True)}
        plans = {stuffed: _Plan.make(head, literal, stuffed) for stuffed in (False, True)}
        indexes = tuple(known.index(f) for f in own)
        return cls(indexes, literal, slots, plans, head, escape)

    @staticmethod
    def _slots(literal: tuple[bytes | int, ...], stuffed: bool) -> tuple[Slot, ...] | None:
        slots: list[Slot] = []
        for piece in literal:
            chunk = piece if isinstance(piece, int) else _chunk(piece, stuffed)
            if chunk is None:
                return None
            slots.append(chunk)
        return tuple(slots)

    def values(self, raw: list[str]) -> list[str]:
        escape = self.escape
        return [escape(raw[i]) for i in self.fields] if escape else [raw[i] for i in self.fields]

    def content(self, raw: list[str]) -> bytes:
        """The part's unstuffed content, filled, ending with CRLF (for base64)."""
        values = [_crlf(value).encode() for value in self.values(raw)]
        data = b"".join(values[p] if isinstance(p, int) else p for p in self.literal)
        return data if data.endswith(b"\r\n") else data + b"\r\n"


def _html_escape(value: str) -> str:
    return html.escape(value, quote=True)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    """The header bytes that are the same for every recipient of an issue."""

    from_to: bytes  # "From: ...\r\nTo: "
    lists: bytes  # "MIME-Version ... List-Unsubscribe: <"
    mailto: str  # ", <mailto:...>" or ""
    tail: bytes  # "List-Unsubscribe-Post ... Content-Type ...\r\n\r\n"

    @classmethod
    def make(cls, config: Config, boundary: str) -> _Head:
        name = tidy_header_text(check_header_value(config.from_name, field="newsletter.from"))
        sender = check_header_value(config.from_address, field="newsletter.from")
        from_to = f"From: {mailbox(name, sender)}\r\nTo: ".encode()
        lists = f"MIME-Version: 1.0\r\nList-Id: {_list_id(config)}\r\nList-Unsubscribe: <"
        mailto = config.unsubscribe_mailto
        if mailto:
            check_header_value(mailto, field="newsletter.unsubscribe_mailto")
        tail = ["List-Unsubscribe-Post: List-Unsubscribe=One-Click"]
        if config.reply_to is not None:
            reply_name, reply_address = config.reply_to  # parsed strictly by load_config
            reply_to = mailbox(tidy_header_text(reply_name), reply_address)
            tail.append(f"Reply-To: {check_header_value(reply_to, field='newsletter.reply_to')}")
        tail.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
        return cls(
            from_to=from_to,
            lists=lists.encode(),
            mailto=f", <mailto:{mailto}>" if mailto else "",
            tail=("\r\n".join(tail) + "\r\n\r\n").encode(),
        )


def _list_id(config: Config) -> str:
    """RFC 2919: `Name <list.id>`."""
    list_id = config.list_id
    if not LIST_ID.fullmatch(list_id):
        raise MessageError(
            f"{list_id!r} is not a list id such as news.example.org", field="newsletter.list_id"
        )
    name = tidy_header_text(check_header_value(config.newsletter.name, field="newsletter.name"))
    return f"{phrase(name)} <{list_id}>" if name else f"<{list_id}>"


class MessageFactory:
    """Builds one issue's message for any recipient; compile once, then `build` per recipient."""

    def __init__(
        self,
        rendered: Rendered,
        config: Config,
        secret: bytes,
        *,
        subject_prefix: str = "",
        now: dt.datetime | None = None,
    ) -> None:
        _check_message_fields(rendered)
        if not config.newsletter.base_url:
            raise ConfigError.one(
                config.path,
                "missing: the https URL of the unsubscribe endpoint, needed in every message",
                field="newsletter.base_url",
            )
        self.rendered = rendered
        self.config = config
        self.domain = _sender_domain(config)
        self.boundary = f"=_nl_{secrets.token_hex(16)}"
        self._tokens = TokenMaker(secret, config.list_id)
        self._unsubscribe_base = f"{config.newsletter.base_url}/unsubscribe/"
        self._prefix = check_header_value(subject_prefix, field="subject prefix")
        self._fixed_date = _format_date(_aware(now)) if now is not None else None
        self._date_cache: tuple[int, bytes] = (-1, b"")
        self._fields = _distinct_fields(rendered.subject + rendered.text + rendered.html)
        self._getters = tuple(_getter(f) for f in self._fields)
        self._subject = tuple(
            self._fields.index(p) if isinstance(p, Field) else p for p in rendered.subject
        )
        for piece in rendered.subject:
            if isinstance(piece, str):
                check_header_value(piece, field=f"{rendered.slug}: subject")
        self._static_subject = None
        if not any(isinstance(piece, Field) for piece in rendered.subject):
            self._static_subject = self._subject_header([])
        self._part_heads = {
            (kind, cte): (
                f'--{self.boundary}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
                f"Content-Transfer-Encoding: {cte}\r\n\r\n"
            ).encode()
            for kind in ("plain", "html")
            for cte in ("8bit", "base64")
        }
        heads = self._part_heads
        self._text = _Part.compile(rendered.text, None, self._fields, heads[("plain", "8bit")])
        self._html = _Part.compile(
            rendered.html, _html_escape, self._fields, heads[("html", "8bit")]
        )
        self._head = _Head.make(config, self.boundary)
        self._end = f"\r\n--{self.boundary}--\r\n".encode()

    def new_message_id(self) -> str:
        """A fresh Message-ID on the sender's domain. Reuse it when retrying the same message."""
        return f"<{secrets.token_urlsafe(18)}@{self.domain}>"

    def unsubscribe_url(self, address: str) -> str:
        return self._unsubscribe_base + self._tokens.make(address)

    def build(
        self,
        subscriber: Subscriber,
        *,
        to: str | None = None,
        eight_bit: bool = True,
        dot_stuffed: bool = False,
        message_id: str | None = None,
    ) -> bytes:
        """The whole message for `subscriber` (or sent to `to`, with the subscriber's merge
        fields): CRLF line endings, dot-stuffed when asked, 8-bit or base64 bodies."""
        address = recipient_address(subscriber, to)
        url = self.unsubscribe_url(address)
        raw = self._values(subscriber, url)
        name = "" if to is not None else recipient_name(subscriber)
        head = self._head
        chunks = [
            head.from_to,
            mailbox(name, address).encode(),
            self._static_subject or self._subject_header(raw, address),
            b"\r\nDate: ",
            self._date(),
            b"\r\nMessage-ID: ",
            (message_id or self.new_message_id()).encode(),
            b"\r\n",
            head.lists,
            self._list_unsubscribe(url),
            head.tail,
        ]
        self._body(raw, eight_bit, dot_stuffed, chunks)
        return b"".join(chunks)

    def _values(self, subscriber: Subscriber, url: str) -> list[str]:
        """Each field's value for this message, in `self._fields` order: the column unless
        missing or blank, else the field's default, else "" (as the tests' field_value)."""
        columns = subscriber.fields
        raw = []
        for kind, name, default in self._getters:
            if kind == _COLUMN:
                value = columns.get(name, "")
            elif kind == _NAME:
                value = subscriber.name
            elif kind == _EMAIL:
                value = subscriber.email
            else:
                value = url
            raw.append(value if value and not value.isspace() else default)
        return raw

    def _subject_header(self, raw: list[str], recipient: str = "") -> bytes:
        """Prefix + the filled subject, every value checked before it nears a header."""
        parts = [self._prefix]
        for piece in self._subject:
            if isinstance(piece, int):
                value = raw[piece]
                if HEADER_CONTROL.search(value):
                    name = f"subject field {self._fields[piece].name!r}"
                    check_header_value(value, field=name, recipient=recipient)
                parts.append(value)
            else:
                parts.append(piece)
        subject = header_text(tidy_header_text("".join(parts)))
        return f"\r\nSubject: {subject}".encode()

    def _list_unsubscribe(self, url: str) -> bytes:
        """The rest of List-Unsubscribe; the mailto goes on a continuation line when long."""
        mailto = self._head.mailto
        if mailto and len(url) + len(mailto) + 20 > MAX_LINE:
            return f"{url}>,\r\n {mailto[2:]}\r\n".encode()
        return f"{url}>{mailto}\r\n".encode()

    def _date(self) -> bytes:
        if self._fixed_date is not None:
            return self._fixed_date
        second = int(time.time())
        if self._date_cache[0] != second:
            now = dt.datetime.fromtimestamp(second, dt.UTC)
            self._date_cache = (second, _format_date(now))
        return self._date_cache[1]

    def _body(self, raw: list[str], eight_bit: bool, stuffed: bool, out: list[bytes]) -> None:
        for kind, part in (("plain", self._text), ("html", self._html)):
            if kind == "html":
                out.append(b"\r\n")
            if not (eight_bit and self._join(part, raw, stuffed, out)):
                out.append(self._part_heads[(kind, "base64")])
                out.append(_base64_body(part.content(raw)))
        out.append(self._end)

    def _join(self, part: _Part, raw: list[str], stuffed: bool, out: list[bytes]) -> bool:
        """Append the 8-bit part; False (and nothing appended) when it must be base64."""
        values = part.values(raw)
        plan = part.plans[stuffed]
        encoded = [v.encode() for v in values] if self._one_line_each(values) else None
        if plan is not None and encoded is not None and plan.fill(encoded, out):
            return True
        slots = part.slots[stuffed]
        if slots is None:
            return False
        chunks = [self._value_chunk(value, stuffed) for value in values]
        mark = len(out)
        if _join_8bit(part.head, slots, chunks, out):
            return True
        del out[mark:]
        return False

    def _one_line_each(self, values: list[str]) -> bool:
        """Values a plan may take: one line each, no NUL, no boundary inside."""
        return not any(map(_MULTILINE.search, values)) and self.boundary not in "".join(values)

    def _value_chunk(self, value: str, stuffed: bool) -> Chunk | None:
        if "\x00" in value or self.boundary in value:
            return None  # 8-bit MIME may not carry NUL; a boundary inside would end the part
        if "\n" in value or "\r" in value or value[:1] == ".":
            return _chunk(_crlf(value).encode(), stuffed)
        data = value.encode()  # the common case: one line, no leading dot
        return (data, data, len(data), 0, False)


def recipient_address(subscriber: Subscriber, to: str | None) -> str:
    """The address the message goes to (and the token is for): `to` when given."""
    address = subscriber.email if to is None else to
    field = "to" if to is not None else "email"
    check_header_value(address, field=field, recipient=address)
    if "@" not in address or _ADDRESS_BAD.search(address):
        raise MessageError("not a plain email address", recipient=address, field=field)
    return address


def recipient_name(subscriber: Subscriber) -> str:
    name = check_header_value(subscriber.name, field="name", recipient=subscriber.email)
    return tidy_header_text(name)


_NAME, _EMAIL, _COLUMN, _MESSAGE = range(4)


def _getter(fld: Field) -> tuple[int, str, str]:
    """(kind, column, default) for the fast lookup in `MessageFactory._values`."""
    if fld.source == "message":
        kind = _MESSAGE  # only unsubscribe_url exists (checked in _check_message_fields)
    else:
        kind = {"name": _NAME, "email": _EMAIL}.get(fld.name, _COLUMN)
    return (kind, fld.name, fld.default or "")


def _distinct_fields(template: Template) -> tuple[Field, ...]:
    return tuple(dict.fromkeys(p for p in template if isinstance(p, Field)))


def _format_date(moment: dt.datetime) -> bytes:
    return format_datetime(moment).encode()


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _sender_domain(config: Config) -> str:
    domain = config.from_address.rpartition("@")[2]
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise MessageError(
            f"domain {domain!r} cannot be encoded", field="newsletter.from"
        ) from None


def _check_message_fields(rendered: Rendered) -> None:
    for fld in rendered.fields():
        if fld.source == "message" and fld.name not in MESSAGE_FIELDS:
            known = ", ".join(sorted(MESSAGE_FIELDS))
            raise MessageError(
                f"unknown message field {fld.name!r} (known: {known})", field=rendered.slug
            )

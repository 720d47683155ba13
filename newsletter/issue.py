"""An issue file (TOML) -> Issue, with errors that name the file, the key path and its line.

The block classes in models.py are the schema: a table's keys must be fields of its class
(unknown keys are errors, so a typo cannot vanish), and values are checked against the types.
What cannot be read is reported and left blank, so `check` still lints the rest in the same pass.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter import models
from newsletter.errors import InvalidInput, Problem
from newsletter.tomlsource import KeyLines, load, unknown_key
from newsletter.urls import split, url_problem

BLOCK_KINDS: dict[str, type[Any]] = {
    "article": models.Article,
    "links": models.Links,
    "event": models.Event,
    "text": models.Text,
    "images": models.ImageRow,
    "heading": models.Heading,
    "divider": models.Divider,
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab, LF and CR are text
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # usable as written after '#' in a link
_HEAD = ("title", "subject", "preheader", "date", "draft", "publish", "allow_html")  # Issue fields
_TOP_KEYS = {*_HEAD, "slug", "blocks"}
# What a required key is for, so "missing" says what to write (by key name, in any table).
_MISSING = {
    "alt": "alt text describes the image for screen readers and shows where images are "
    "blocked: write what the image shows",
    "src": "the image's https:// URL",
    "width": "the image's width in CSS pixels",
    "text": "the link's text, the words readers click",
    "url": "the link's target, an https:// or mailto: URL",
    "heading": "the block's heading",
    "body": "the block's text (Markdown)",
    "items": "the links of the list, as [[blocks.items]] tables",
    "images": "the images, as a list of { src, alt, width } tables",
    "title": "the title",
    "subject": "the subject line of the email",
    "date": "the date, such as 2021-10-06",
    "start": "the start time, such as 09:30",
    "timezones": 'the time zones, such as ["Europe/London"]',
}


def read_issue(path: Path) -> tuple[models.Issue, KeyLines]:
    """Parse and validate `path`; raise InvalidInput listing every problem found."""
    issue, lines, problems = read_partial(path)
    if problems:
        raise InvalidInput(problems)
    return issue, lines


def read_partial(path: Path) -> tuple[models.Issue, KeyLines, list[Problem]]:
    """What of `path` could be read, and its problems: a part that could not be read is blank
    (a block of unknown kind is None), so lint can still check the rest. Only a file that is not
    TOML at all raises InvalidInput."""
    data, lines = load(path)
    reader = _Reader(path, lines)
    return reader.issue(data), lines, reader.problems


def load_issue(path: Path) -> models.Issue:
    return read_issue(path)[0]


class _Reader:
    def __init__(self, path: Path, lines: KeyLines) -> None:
        self.path = path
        self.lines = lines
        self.problems: list[Problem] = []

    def fail(self, where: str, message: str) -> None:
        """Report a problem at `where`: the first one there only (a blank left for a missing or
        bad value must not be reported again by a later check)."""
        if any(p.field == where for p in self.problems):
            return
        self.problems.append(Problem(self.path, message, field=where, line=self.lines.line(where)))

    def issue(self, data: dict[str, Any]) -> models.Issue:
        for key in data:
            if key not in _TOP_KEYS:
                self.fail(key, _unknown(key, sorted(_TOP_KEYS)))
        slug = self.slug(data)
        blocks = self.blocks(data.get("blocks"))
        head: dict[str, Any] = {k: data[k] for k in _HEAD if k in data}
        if data.get("draft") is True and data.get("publish") is True:
            self.fail("publish", "a draft is never published: remove `draft = true` or this key")
        head["blocks"], head["path"], head["slug"] = (), self.path, slug
        issue: models.Issue = self.build(models.Issue, head, "", skip=("blocks", "path", "slug"))
        # a block of unknown kind stays as None, so later blocks keep their paths; only a
        # partial issue (read_partial, with its problems) can hold one
        return dataclasses.replace(issue, blocks=blocks or ())  # type: ignore[arg-type]

    def slug(self, data: dict[str, Any]) -> str:
        slug = data.get("slug", self.path.stem)
        if not isinstance(slug, str) or not _SLUG.match(slug):
            where = "slug" if "slug" in data else "file name"
            self.fail(where, f"slug {slug!r} must be lowercase letters, digits and '-'")
            return "issue"
        return slug

    def blocks(self, value: Any) -> tuple[models.Block | None, ...] | None:
        if value is None:
            self.fail("blocks", "missing: an issue needs at least one [[blocks]] table")
            return None
        if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
            self.fail("blocks", "must be an array of tables ([[blocks]])")
            return None
        if not value:
            self.fail("blocks", "empty: an issue needs at least one [[blocks]] table")
            return None
        built = tuple(self.block(b, f"blocks[{i}]") for i, b in enumerate(value))  # keep places
        self.check_ids(value)
        return built

    def check_ids(self, blocks: list[dict[str, Any]]) -> None:
        """Block ids are link targets (`#id`): each one well formed and used once."""
        seen: dict[str, str] = {}
        for i, data in enumerate(blocks):
            ident, where = data.get("id"), f"blocks[{i}].id"
            if not isinstance(ident, str):
                continue  # missing, or not a string: build() reports the type
            if not _ID.match(ident):
                rule = "ASCII letters, digits, '-' and '_', and start with a letter or digit"
                self.fail(where, f"id {ident!r} must be {rule}")
            elif ident in seen:
                self.fail(where, f"id {ident!r} is already the id of {seen[ident]}")
            else:
                seen[ident] = f"blocks[{i}]"

    def block(self, data: dict[str, Any], where: str) -> models.Block | None:
        kind = data.get("kind")
        if kind not in BLOCK_KINDS:
            self.fail(f"{where}.kind", f"kind must be one of: {', '.join(BLOCK_KINDS)}")
            return None
        fields = {k: v for k, v in data.items() if k != "kind"}
        block = self.build(BLOCK_KINDS[kind], fields, where)
        if isinstance(block, models.Event):
            self.check_timezones(block, where, start_given="start" in fields)
        if isinstance(block, models.ImageRow):
            self.check_captions(block, where)
        return block  # type: ignore[no-any-return]  # build returns an instance of the block class

    def build(
        self, cls: type[Any], data: dict[str, Any], where: str, skip: tuple[str, ...] = ()
    ) -> Any:
        """Turn a TOML table into `cls`, checking keys and value types against its fields.

        Always an instance: an unknown key is left out, and a value missing or wrong is
        reported and left blank, so the rest can still be checked."""
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "kind"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            path = f"{where}.{key}" if where else key
            if key not in fields:
                self.fail(path, _unknown(key, list(fields)))
            elif key in skip:
                values[key] = value
            elif (converted := self.value(value, hints[key], path)) is not _BAD:
                values[key] = converted
        for name, fld in fields.items():
            path = f"{where}.{name}" if where else name
            if name not in data and required(fld):
                self.fail(path, f"missing: {_MISSING[name]}" if name in _MISSING else "missing")
            elif required(fld) and name not in skip and values.get(name) == ():
                self.fail(path, "empty: give at least one (or remove the block)")
            if name not in values and required(fld):
                values[name] = _blank(hints[name])
        return cls(**values)

    def value(self, value: Any, hint: Any, path: str) -> Any:
        origin = get_origin(hint)
        if origin in (Union, types.UnionType):
            inner = next(a for a in get_args(hint) if a is not type(None))
            return self.value(value, inner, path)
        if origin is tuple:
            return self.sequence(value, get_args(hint)[0], path)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                self.fail(path, 'must be a table, e.g. { text = "...", url = "https://..." }')
                return _BAD
            built = self.build(hint, value, path)  # type: ignore[arg-type]  # hint is a dataclass
            return self.checked(built, path)
        return self.scalar(value, hint, path)

    def sequence(self, value: Any, item: Any, path: str) -> Any:
        if not isinstance(value, list):
            self.fail(path, "must be an array")
            return _BAD
        items = [self.value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(_blank(item) if v is _BAD else v for v in items)  # later items keep places

    def scalar(self, value: Any, hint: Any, path: str) -> Any:
        if hint is dt.time and isinstance(value, str):
            return self.time(value, path)
        if hint is dt.date and isinstance(value, dt.datetime):
            self.fail(path, "must be a date such as 2021-10-06 (no time)")
            return _BAD
        if isinstance(value, str) and (bad := _CONTROL.search(value)):
            self.fail(path, f"contains a control character (U+{ord(bad.group()):04X})")
            return _BAD
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        self.fail(path, f"must be {_describe(hint)}, not {_toml_type(value)}")
        return _BAD

    def time(self, value: str, path: str) -> Any:
        """A time written as a string ("09:30"): a local time, its zone given by timezones."""
        try:
            parsed = dt.time.fromisoformat(value)
        except ValueError:
            self.fail(path, f"{value!r} is not a time: write it as 09:30 (24-hour)")
            return _BAD
        if parsed.tzinfo is not None:
            local = parsed.replace(tzinfo=None).isoformat("minutes")
            self.fail(
                path,
                f"{value!r} has an offset: give the local time ({local}) and its zone first in "
                "timezones",
            )
            return _BAD
        return parsed

    def checked(self, obj: Any, path: str) -> Any:
        if isinstance(obj, models.Image):
            parts = split(obj.src)
            if url_problem(obj.src) or parts is None or parts.scheme != "https":
                self.fail(f"{path}.src", "images must be absolute https:// URLs")
            if obj.width <= 0 or obj.width > 1200:
                self.fail(f"{path}.width", "must be between 1 and 1200 (CSS pixels)")
        return obj

    def check_timezones(self, event: models.Event, where: str, *, start_given: bool) -> None:
        if event.start is None and event.timezones and not start_given:
            self.fail(
                f"{where}.timezones", "time zones without a start time: give start, or remove them"
            )
        if event.start is not None and not event.timezones:
            self.fail(
                f"{where}.timezones",
                'no time zone for the start time: give timezones = ["Europe/London"] (IANA names)',
            )
        zones = []
        for i, name in enumerate(event.timezones):
            try:
                zones.append(ZoneInfo(name))
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder: OSError
                self.fail(
                    f"{where}.timezones[{i}]",
                    f"unknown time zone {name!r}: use an IANA name such as 'Europe/London'",
                )
        start = event.start
        readable = isinstance(event.date, dt.date) and isinstance(start, dt.time)
        if zones and len(zones) == len(event.timezones) and readable and start is not None:
            self.check_calendar(event, start, zones, where)

    def check_calendar(
        self, event: models.Event, time: dt.time, zones: list[ZoneInfo], where: str
    ) -> None:
        """The start, shown in each zone, must be a date Python can hold (years 1 to 9999)."""
        start = dt.datetime.combine(event.date, time, tzinfo=zones[0])
        try:
            for zone in zones:
                start.astimezone(zone)
        except OverflowError:
            self.fail(
                f"{where}.date",
                "in another of its time zones the start falls outside the years 1 to 9999",
            )

    def check_captions(self, row: models.ImageRow, where: str) -> None:
        if row.captions and len(row.captions) != len(row.images):
            self.fail(
                f"{where}.captions",
                f"{len(row.captions)} caption(s) for {len(row.images)} image(s): "
                'give one per image, in order ("" for none), or leave captions out',
            )


_BAD = object()


def _unknown(key: str, known: list[str]) -> str:
    return f"{unknown_key(key, known)} (expected one of: {', '.join(known)})"


def _blank(hint: Any) -> Any:
    """What stands in for a value that is missing or could not be read: nothing lint flags
    beyond the problem already reported (an empty text, no items, no date)."""
    if get_origin(hint) in (Union, types.UnionType):
        return None
    if get_origin(hint) is tuple:
        return ()
    return {str: "", int: 0, bool: False}.get(hint)


def required(fld: dataclasses.Field[Any]) -> bool:
    return fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING


def _describe(hint: Any) -> str:
    words = {
        str: "a string",
        int: "a whole number",
        bool: "true or false",
        dt.date: "a date such as 2021-10-06",
        dt.time: "a time such as 09:30",
    }
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _toml_type(value: Any) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a decimal number",
        list: "an array",
        dict: "a table",
        dt.date: "a date",
        dt.datetime: "a date-time",
        dt.time: "a time",
    }
    return names.get(type(value), type(value).__name__)

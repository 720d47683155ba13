"""Subscriber lists: CSV files in subscribers/, read as streams, changed atomically under a lock.

A list is a UTF-8 CSV file with a header row (docs/subscribers.md). Reading accepts what real
files look like (BOM, CRLF, `;` from European Excel, quoted newlines); writing is always UTF-8,
comma-delimited, CRLF (RFC 4180), keeping the column order, unknown columns and row order.

Consent rules live here: only `subscribed` rows get mail; any other status of an address in any
list suppresses it everywhere (unless that row's `scope` is `list`); nothing but `purge` deletes
a row, and `purge` leaves a hashed entry in .newsletter/suppressed so the person cannot come back
through an import.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import itertools
import json
import math
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from newsletter.addresses import (
    BadAddress,
    address_key,
    digest_hash,
    key_digest,
    key_hash,
    normalise_address,
)
from newsletter.errors import (
    InvalidInput,
    LockBusy,
    NewsletterError,
    Problem,
    Severity,
    StorageError,
)
from newsletter.fileio import atomic_write_text, locked, make_folder
from newsletter.models import STATUSES, Status, Subscriber

COLUMNS = ("email", "name", "status", "tags", "subscribed_at", "unsubscribed_at", "source")
SCOPE = "scope"  # optional column: `list` keeps a row's non-subscribed status to its own list
KNOWN = (*COLUMNS, SCOPE)
DEFAULT_LIST = "subscribers.csv"  # where `add` writes when no list is named
EXAMPLE_LIST = "example.csv"  # shipped sample: never selected for a send unless named
SUPPRESSED_FILE = "suppressed"  # in the state folder (.newsletter/)
LIST_MODE = 0o600  # lists hold personal data: new ones are readable by their owner only
SUPPRESSING: tuple[Status, ...] = ("unsubscribed", "bounced", "complained")
_RANK = {"subscribed": 0, "pending": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}
Format = Literal["csv", "mailchimp", "listmonk"]
FORMATS: tuple[Format, ...] = ("csv", "mailchimp", "listmonk")
LEFT_OUT_REASONS = (
    "unsubscribed",
    "bounced",
    "complained",
    "pending",
    "suppressed",
    "tag",
    "duplicate",
    "invalid",
)


class Refused(NewsletterError):
    """A change that would break a consent rule (re-adding someone who unsubscribed)."""


def now() -> str:
    """The time written into subscribed_at / unsubscribed_at: UTC, ISO 8601, to the second."""
    return stamp(dt.datetime.now(dt.UTC))


def stamp(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Where lists live


def lists_folder(folder: Path) -> Path:
    return folder / "subscribers"


def list_files(folder: Path, *, include_example: bool = True) -> list[Path]:
    """The lists of a newsletter folder: every *.csv in subscribers/, by name."""
    found = sorted(lists_folder(folder).glob("*.csv"))
    return [p for p in found if include_example or p.name != EXAMPLE_LIST]


def _absent(path: Path) -> bool:
    """No list there yet. A link to a missing file is not that: it is a list that cannot be
    read (a disk not mounted), never skipped, nor replaced by a new file."""
    return not path.exists() and not path.is_symlink()


def suppressed_path(folder: Path) -> Path:
    return folder / ".newsletter" / SUPPRESSED_FILE


GITIGNORE = "# Lists hold personal data: keep them out of git (see docs/subscribers.md)\n*\n"
GITIGNORE += "!.gitignore\n!example.csv\n"


def ensure_lists_folder(path: Path) -> None:
    """Create a list's folder; a new subscribers/ gets a .gitignore keeping lists out of git."""
    folder = path.parent
    if folder.is_dir():
        return
    make_folder(folder)
    if folder.name == "subscribers":
        atomic_write_text(folder / ".gitignore", lambda out: out.write(GITIGNORE))


# ---------------------------------------------------------------------------------------------
# Reading: one list file as a header and a stream of (line, cells)

FIELD_LIMIT_KIB = csv.field_size_limit() // 1024  # the csv module's limit: 128 KiB per field
_QUOTE_HINT = 'check the quotes of this row (a quote inside a quoted field is written "")'


class UnreadableList(InvalidInput):
    """A list that cannot be read to its end (missing, empty, not UTF-8, a quote left open, a
    stray line break, a field over 128 KiB): `path` and `line` say where. Nothing may rewrite
    such a list; the serve endpoint and unsubscribe still record the address as suppressed."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        super().__init__([Problem(path, message, line=line)])
        self.path = path
        self.line = line


class ListReader:
    """An open list: `names` (the header as written), `index` (known column -> position), rows.

    Strict: a quoted field left open (it would swallow every later row), text after a closing
    quote and a field over 128 KiB raise UnreadableList naming the line where the field opened.
    Lines end at LF or CRLF; in a file whose first line ends with a lone CR (old Mac exports),
    at CR. A line break of the other kind outside quotes is refused, never guessed at.
    """

    def __init__(self, path: Path, handle: IO[bytes], required: str = "email") -> None:
        self.path = path
        self._handle = handle
        self._end_of_line = _line_end(handle)
        self._text = _lines_of(handle, self._end_of_line)
        try:
            first = self._text.readline().removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise self._not_utf8() from None
        if not first:
            raise UnreadableList(path, "empty file: the first line must be the header", line=1)
        self.delimiter = _delimiter(first)
        self._ended = False
        lines = itertools.chain([first], self._text, self._end())
        self._reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        try:
            header = next(self._reader, [])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise self._failure(exc, 1) from None
        self.names = [name.strip() for name in header]
        self.lowered = _header_index(path, self.names, required)
        self.index = {name: self.lowered[name] for name in KNOWN if name in self.lowered}

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line where the row starts, its cells) for every non-blank row, in file order.

        A row shorter than the header is padded with empty cells (spreadsheets drop trailing
        empty ones), so every header position can be indexed.
        """
        reader = self._reader
        width = len(self.names)
        start = reader.line_num + 1
        try:
            for cells in reader:
                if cells and (cells[0] or "".join(cells).strip()):
                    if len(cells) < width:
                        cells += [""] * (width - len(cells))
                    yield start, cells
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise self._failure(exc, start) from None

    def _failure(self, exc: csv.Error | UnicodeDecodeError, start: int) -> UnreadableList:
        """The error of a record starting at line `start` that could not be read."""
        if isinstance(exc, UnicodeDecodeError):
            return self._not_utf8()
        return self._unreadable(exc, start)

    def _unreadable(self, exc: csv.Error, start: int) -> UnreadableList:
        """Name the line where the trouble began: for a quote left open, where it opened."""
        now = max(self._reader.line_num, start)
        if "new-line" in str(exc):  # a CR in a LF/CRLF file, a LF in a CR file, unquoted
            return UnreadableList(self.path, self._other_line_end(), line=now)
        opened = self._open_quote(start, now)
        if self._ended:  # only a quoted field still open reaches the end of the file inside a row
            message = f"a quoted field opens here and is never closed: {_QUOTE_HINT}"
            return UnreadableList(self.path, message, line=opened or start)
        too_long = "field limit" in str(exc)
        if opened is not None and opened < now:
            if too_long:
                what = f"is still open at line {now}, past the {FIELD_LIMIT_KIB} KiB field limit"
            else:
                what = f"closes on line {now} with text after the closing quote"
            message = f"a quoted field opens here and {what}: {_QUOTE_HINT}"
            return UnreadableList(self.path, message, line=opened)
        if too_long:
            message = f"a field longer than {FIELD_LIMIT_KIB} KiB (the limit for one field)"
        else:
            message = f"text after the closing quote of a field: {_QUOTE_HINT}"
        return UnreadableList(self.path, message, line=now)

    def _other_line_end(self) -> str:
        """A line break of the kind this file does not end its lines with, outside quotes."""
        kind = "line feed (LF)" if self._end_of_line == "\r" else "carriage return (CR)"
        return f"a {kind} inside a field that is not quoted: quote the field, or remove it"

    def _end(self) -> Iterator[str]:
        """Yields no line: records that the csv module asked for one past the last."""
        self._ended = True
        yield from ()

    def _open_quote(self, start: int, end: int) -> int | None:
        """Re-read lines start..end of the record that failed: where its open quote opened."""
        self._handle.seek(0)
        text = _lines_of(self._handle, self._end_of_line)
        lines = list(itertools.islice(text, start - 1, end))
        text.detach()
        if start == 1 and lines:
            lines[0] = lines[0].removeprefix("\ufeff")
        return _open_quote(lines, start, self.delimiter)

    def _not_utf8(self) -> UnreadableList:
        """The first line that is not UTF-8 (lines split as when reading; latin-1 maps bytes)."""
        self._handle.seek(0)
        text = _lines_of(self._handle, self._end_of_line, "latin-1")
        bad = next((n for n, line in enumerate(text, 1) if not _is_utf8(line)), None)
        text.detach()
        return UnreadableList(self.path, "not UTF-8 text: save the file as CSV UTF-8", line=bad)


def _is_utf8(latin1: str) -> bool:
    try:
        latin1.encode("latin-1").decode()
    except UnicodeDecodeError:
        return False
    return True


def _lines_of(handle: IO[bytes], end: str, encoding: str = "utf-8") -> io.TextIOWrapper:
    """The file's physical lines as text, split at `end` only ("\n" also ends CRLF lines), each
    keeping its end, so that the csv module keeps line breaks inside quoted fields as written."""
    return io.TextIOWrapper(handle, encoding=encoding, newline=end)


_HEAD = 64 * 1024  # bytes looked at to find how the first line ends


def _line_end(handle: IO[bytes]) -> str:
    """ "\r" when the first line ends with a lone CR (old Mac exports), else "\n" (LF, CRLF)."""
    head = handle.read(_HEAD)
    handle.seek(0)
    found = re.search(rb"\r\n?|\n", head)
    lone_cr = found is not None and found.group() == b"\r" and found.end() < len(head)
    return "\r" if lone_cr else "\n"


def _open_quote(lines: Iterable[str], first: int, delimiter: str) -> int | None:
    """The line where the last quoted field of one record opened when it is still open at the
    end of `lines`, or closes with text after its quote; None when every quote closed cleanly.

    The csv module's rules (strict): a field is quoted only when its first character is `"`;
    inside it, `""` is a quote; after the closing quote comes the delimiter or the line end.
    """
    opened: int | None = None
    quoted = False
    for number, line in enumerate(lines, first):
        at = 0
        while at < len(line):
            if quoted:
                close = line.find('"', at)
                if close < 0:
                    break  # the field goes on to the next line
                if line.startswith('"', close + 1):
                    at = close + 2
                    continue
                quoted, at = False, close + 1
                if at < len(line) and line[at] not in (delimiter, "\r", "\n"):
                    return opened
                at += 1
            elif line.startswith('"', at):
                quoted, opened, at = True, number, at + 1
            else:
                comma = line.find(delimiter, at)
                at = len(line) if comma < 0 else comma + 1
    return opened if quoted else None


@contextlib.contextmanager
def open_list(path: Path, required: str = "email") -> Iterator[ListReader]:
    """Open a list for reading; UnreadableList or InvalidInput (naming the file and line) when
    it cannot be read to its end or its header is wrong."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise UnreadableList(path, "no such file") from None
    except OSError as exc:
        raise UnreadableList(path, exc.strerror or "cannot read") from None
    with handle:
        yield ListReader(path, handle, required)


def _delimiter(header: str) -> str:
    """`;` when the header has more semicolons than commas (European Excel), else `,`.

    Quoted names do not count: a column named "a;b" does not make a list `;`-delimited.
    """
    header = _QUOTED.sub("", header)
    counts = {d: header.count(d) for d in ",;\t"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def _header_index(path: Path, names: list[str], required: str) -> dict[str, int]:
    """Lowercased column name -> position; InvalidInput for a nameless, repeated or missing one."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        lowered = name.lower()
        if not name:
            problems.append(Problem(path, f"column {position} has no name", line=1))
        elif lowered in seen:
            message = f"column {name!r} appears twice (columns {seen[lowered]} and {position})"
            problems.append(Problem(path, message, line=1))
        else:
            seen[lowered] = position
    if required not in seen:
        problems.append(Problem(path, f"no {required!r} column in the header", line=1))
    if problems:
        raise InvalidInput(problems)
    return {name: position - 1 for name, position in seen.items()}


# ---------------------------------------------------------------------------------------------
# Rows -> Subscriber


class RowParser:
    """Turns the cells of one list's rows into Subscribers, or the problems of a bad row."""

    def __init__(self, reader: ListReader) -> None:
        self.path = reader.path
        self.names = reader.names
        self.width = len(reader.names)
        index = reader.index
        self.email = index["email"]
        self.name = index.get("name")
        self.status = index.get("status")
        self.tags = index.get("tags")
        self.scope = index.get(SCOPE)
        self.dates = [index[c] for c in ("subscribed_at", "unsubscribed_at") if c in index]

    def cell(self, cells: list[str], position: int | None) -> str:
        if position is None or position >= len(cells):
            return ""
        return cells[position].strip()

    def parse(self, line: int, cells: list[str]) -> Subscriber | list[Problem]:
        problems = self.problems(line, cells)
        try:
            email, smtputf8 = normalise_address(cells[self.email])
        except BadAddress as exc:
            problems.append(Problem(self.path, exc.reason, field="email", line=line))
        if problems:
            return problems
        return self.subscriber(cells, email, smtputf8)

    def subscriber(self, cells: list[str], email: str, smtputf8: bool) -> Subscriber:
        if len(cells) < self.width:
            cells = cells + [""] * (self.width - len(cells))
        return Subscriber(
            email=email,
            name=self.cell(cells, self.name),
            status=cast(Status, self.cell(cells, self.status).lower() or "subscribed"),
            tags=split_tags(self.cell(cells, self.tags)),
            fields=dict(zip(self.names, cells, strict=False)),
            list_path=self.path,
            smtputf8=smtputf8,
        )

    def problems(self, line: int, cells: list[str]) -> list[Problem]:
        """Everything wrong with a row except its address (checked by the caller)."""
        problems: list[Problem] = []
        name = _name_problem(self.cell(cells, self.name))
        if name:
            problems.append(Problem(self.path, name, field="name", line=line))
        if len(cells) > self.width and "".join(cells[self.width :]).strip():
            message = f"{len(cells)} fields, but the header has {self.width}"
            problems.append(Problem(self.path, message, line=line))
        status = self.cell(cells, self.status).lower()
        if status and status not in STATUSES:
            message = f"unknown status {status!r} (one of: {', '.join(STATUSES)})"
            problems.append(Problem(self.path, message, field="status", line=line))
        scope = self.cell(cells, self.scope).lower()
        if scope not in ("", "all", "list"):
            message = f"scope must be 'list' or 'all', not {scope!r}"
            problems.append(Problem(self.path, message, field=SCOPE, line=line))
        for position in self.dates:
            problem = _date_problem(self.cell(cells, position))
            if problem:
                problems.append(Problem(self.path, problem, field=self.names[position], line=line))
        return problems


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _name_problem(name: str) -> str | None:
    """Why a name (already stripped) cannot be stored: a line break, tab, NUL or other control
    character would break `subscribers list`, headers and greetings. None when it can."""
    found = _CONTROL.search(name)
    if found is None:
        return None
    return f"a name cannot hold a line break or control character ({found.group()!r})"


def _date_problem(text: str) -> str | None:
    if not text:
        return None
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return f"not an ISO 8601 date or time: {text!r}"
    return None


def split_tags(cell: str) -> frozenset[str]:
    if not cell:
        return frozenset()
    return frozenset(t for t in (part.strip() for part in cell.split(";")) if t)


def join_tags(tags: Iterable[str]) -> str:
    return ";".join(sorted(tags))


def read_list(path: Path) -> Iterator[Subscriber]:
    """Every row of a list as a Subscriber, streaming; InvalidInput at the first bad row.

    Use `check_lists` to report every problem of a file at once.
    """
    with open_list(path) as reader:
        parser = RowParser(reader)
        for line, cells in reader.rows():
            parsed = parser.parse(line, cells)
            if isinstance(parsed, list):
                raise InvalidInput(parsed)
            yield parsed


def read_loosely(path: Path) -> Iterator[Subscriber]:
    """Every row as a Subscriber without checking it (for `list` and `stats`): fast, forgiving."""
    with open_list(path) as reader:
        parser = RowParser(reader)
        for _line, cells in reader.rows():
            yield parser.subscriber(cells, cells[parser.email].strip(), False)


# ---------------------------------------------------------------------------------------------
# check


@dataclass
class CheckReport:
    files: list[Path]
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]


def check_lists(paths: Sequence[Path]) -> CheckReport:
    """Every problem of every row of each list (errors), and repeated addresses (warnings)."""
    report = CheckReport(files=list(paths))
    for path in paths:
        try:
            report.rows += _check_one(path, report.problems)
        except InvalidInput as exc:
            report.problems.extend(exc.problems)
    return report


def _check_one(path: Path, problems: list[Problem]) -> int:
    seen: set[int] = set()
    repeated: dict[int, int] = {}  # hash -> line, for the (few) repeated addresses
    rows = 0
    with open_list(path) as reader:
        parser = RowParser(reader)
        for line, cells in reader.rows():
            rows += 1
            parsed = parser.parse(line, cells)
            if isinstance(parsed, list):
                problems.extend(parsed)
                continue
            compact = key_hash(address_key(parsed.email))
            if compact in seen:
                repeated[compact] = line
            seen.add(compact)
    if repeated:
        problems.extend(_repeats(path, repeated))
    return rows


def _repeats(path: Path, repeated: dict[int, int]) -> list[Problem]:
    """Warnings for addresses on more than one row: a second pass finds the first line."""
    first: dict[int, int] = {}
    found: list[Problem] = []
    with open_list(path) as reader:
        email = reader.index["email"]
        for line, cells in reader.rows():
            compact = key_hash(address_key(cells[email]))
            if compact not in repeated:
                continue
            if compact in first:
                message = f"same address as line {first[compact]}: only one gets mail"
                found.append(
                    Problem(path, message, field="email", line=line, severity=Severity.WARNING)
                )
            else:
                first[compact] = line
    return found


# ---------------------------------------------------------------------------------------------
# Who is blocked: any non-subscribed row (unless scoped to its list), and the suppression file


@dataclass
class Blocks:
    everywhere: set[int] = field(default_factory=set)
    by_list: dict[Path, set[int]] = field(default_factory=dict)  # rows with scope = list

    def blocks(self, compact: int, path: Path | None) -> bool:
        if compact in self.everywhere:
            return True
        scoped = self.by_list.get(path) if path is not None else None
        return scoped is not None and compact in scoped


def _blocked_in(path: Path) -> tuple[set[int], set[int]]:
    """(blocked everywhere, blocked in this list only) by one list's non-subscribed rows."""
    everywhere: set[int] = set()
    here: set[int] = set()
    with open_list(path) as reader:
        email = reader.index["email"]
        status = reader.index.get("status")
        scope = reader.index.get(SCOPE)
        if status is None:
            return everywhere, here
        for _line, cells in reader.rows():
            value = cells[status].strip().lower() if status < len(cells) else ""
            if not value or value == "subscribed":
                continue
            scoped = scope is not None and scope < len(cells) and cells[scope].strip() == "list"
            (here if scoped else everywhere).add(key_hash(address_key(cells[email])))
    return everywhere, here


def read_suppressed(folder: Path) -> set[int]:
    """The compact keys of the suppression file's entries; InvalidInput at a line that is not one.

    A damaged file stops a send rather than let it mail someone whose entry cannot be read.
    """
    path = suppressed_path(folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    except UnicodeDecodeError:
        raise InvalidInput.one(path, "not UTF-8 text") from None
    lines = enumerate(text.splitlines(), 1)
    return {_entry_hash(path, number, line) for number, line in lines if _is_entry(line)}


def _entry_hash(path: Path, number: int, line: str) -> int:
    digest = line.split()[0]
    if not _DIGEST.fullmatch(digest):
        message = "not an entry: a sha256 digest (64 hex digits) starts each line"
        raise InvalidInput.one(path, message, line=number)
    return digest_hash(digest)


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _is_entry(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def is_suppressed(folder: Path, email: str) -> bool:
    return key_hash(address_key(email)) in read_suppressed(folder)


def suppress(folder: Path, email: str, reason: str) -> bool:
    """Record sha256(address key) in .newsletter/suppressed; False if it was already there."""
    path = suppressed_path(folder)
    digest = key_digest(address_key(email))
    with locked(path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = "# sha256 of an address key, then why: never mail, never import again\n"
        except UnicodeDecodeError:
            raise InvalidInput.one(path, "not UTF-8 text") from None
        # A damaged line elsewhere must not stop this entry from being written.
        if any(line.split()[:1] == [digest] for line in text.splitlines()):
            return False
        if text and not text.endswith("\n"):  # a hand edit without a final newline
            text += "\n"
        atomic_write_text(path, lambda out: out.write(f"{text}{digest} {reason}\n"), mode=0o600)
    return True


class Blocklist:
    """Who must not get mail now; `refresh()` between batches re-reads only lists that changed.

    A list counts as changed when its size or mtime (ns) changed; the suppression file likewise.
    A list that cannot be read raises InvalidInput (stop sending rather than miss an unsubscribe).
    """

    def __init__(self, folder: Path, lists: Sequence[Path] = ()) -> None:
        self.folder = folder
        self.extra = list(lists)
        self._seen: dict[Path, tuple[int, int]] = {}
        self._by_file: dict[Path, tuple[set[int], set[int]]] = {}
        self.refresh()

    def refresh(self) -> bool:
        """Re-read what changed since the last call; True when anything did."""
        paths = [*list_files(self.folder), *self.extra, suppressed_path(self.folder)]
        changed = False
        for path in dict.fromkeys(paths):
            signature = _signature(path)
            if self._seen.get(path) == signature:
                continue
            self._seen[path] = signature
            self._by_file[path] = self._read(path)
            changed = True
        return changed

    def _read(self, path: Path) -> tuple[set[int], set[int]]:
        if path == suppressed_path(self.folder):
            return read_suppressed(self.folder), set()
        return _blocked_in(path)  # a broken list raises: its unsubscribes must not be missed

    def blocks(self) -> Blocks:
        merged = Blocks()
        for path, (everywhere, here) in self._by_file.items():
            merged.everywhere |= everywhere
            if here:
                merged.by_list[path] = here
        return merged

    def is_blocked(self, email: str, list_path: Path | None = None) -> bool:
        """True when the address must not get mail (from `list_path`, for list-scoped rows)."""
        compact = key_hash(address_key(email))
        for path, (everywhere, here) in self._by_file.items():
            if compact in everywhere or (path == list_path and compact in here):
                return True
        return False


def _signature(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return (-1, -1)
    return (info.st_mtime_ns, info.st_size)


# ---------------------------------------------------------------------------------------------
# The selection used by sending


class Selection:
    """The recipients of a send: iterate for deduplicated, suppressed Subscribers in stable order.

    Order: the lists in the order given (by default every list but example.csv, by file name),
    rows in file order; an address gets its first subscribed row that passes the tag filter.
    After iteration `left_out` counts the rows left out, by reason.
    """

    def __init__(self, folder: Path, lists: Sequence[Path] | None, tags: Sequence[str]) -> None:
        self.folder = folder
        self.default = lists is None  # no --list: every list (resolved anew by a resume)
        chosen = list_files(folder, include_example=False) if lists is None else list(lists)
        self.lists = list(dict.fromkeys(chosen))
        self.tags = frozenset(t.strip().casefold() for t in tags if t.strip())
        self.left_out: dict[str, int] = {}
        self.count = 0
        self.subscribed = 0  # rows with status subscribed, selected or not
        self.empty_lists: list[Path] = []  # lists that gave nobody to the selection

    def __iter__(self) -> Iterator[Subscriber]:
        blocks = Blocklist(self.folder, self.lists).blocks()
        left_out: Counter[str] = Counter()
        seen: set[int] = set()
        self.count = self.subscribed = 0
        self.empty_lists = []
        for path in self.lists:
            before = self.count
            for subscriber in self._from(path, blocks, seen, left_out):
                self.count += 1
                yield subscriber
            if self.count == before:
                self.empty_lists.append(path)
        self.left_out = {
            reason: left_out[reason] for reason in LEFT_OUT_REASONS if left_out[reason]
        }

    def _from(
        self, path: Path, blocks: Blocks, seen: set[int], left_out: Counter[str]
    ) -> Iterator[Subscriber]:
        with open_list(path) as reader:
            parser = RowParser(reader)
            for _line, cells in reader.rows():
                status = parser.cell(cells, parser.status).lower() or "subscribed"
                if status != "subscribed":
                    left_out[status if status in _RANK else "invalid"] += 1
                    continue
                self.subscribed += 1
                compact = key_hash(address_key(cells[parser.email]))
                reason = self._reason(parser, cells, compact, blocks, seen)
                if reason:
                    left_out[reason] += 1
                    continue
                try:
                    email, smtputf8 = normalise_address(cells[parser.email])
                except BadAddress:
                    left_out["invalid"] += 1
                    continue
                seen.add(compact)
                yield parser.subscriber(cells, email, smtputf8)

    def _reason(
        self, parser: RowParser, cells: list[str], compact: int, blocks: Blocks, seen: set[int]
    ) -> str:
        if blocks.blocks(compact, parser.path):
            return "suppressed"
        if self.tags and not self.tags & _folded_tags(parser.cell(cells, parser.tags)):
            return "tag"
        return "duplicate" if compact in seen else ""

    def spec(self) -> dict[str, Any]:
        """What was asked, resolved: a ledger keeps it so that a resume can be compared."""
        lists = [shown(self.folder, p) for p in self.lists]
        return {"default": self.default, "lists": lists, "tags": sorted(self.tags)}

    def why_empty(self) -> str:
        """Why nobody was selected (after iterating), in the user's terms."""
        if not self.lists:
            return (
                "no list to send to: subscribers/ has no .csv list (example.csv is sent to "
                "only when named with --list)"
            )
        names = ", ".join(shown(self.folder, p) for p in self.lists)
        why = ", ".join(f"{n} {reason}" for reason, n in self.left_out.items())
        if not self.subscribed:
            have = "has" if len(self.lists) == 1 else "have"
            return f"{names} {have} no subscribed reader" + (f" ({why})" if why else "")
        if self.tags and self.left_out.get("tag"):
            wanted = " or ".join(repr(t) for t in sorted(self.tags))
            tag = "tag" if len(self.tags) == 1 else "any of the tags"
            return f"no subscribed reader of {names} has {tag} {wanted} (left out: {why})"
        return f"every subscribed reader of {names} is left out ({why})"


def shown(folder: Path, path: Path) -> str:
    """A list as the user knows it: relative to the newsletter folder when inside it."""
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def _folded_tags(cell: str) -> set[str]:
    return {tag.casefold() for tag in split_tags(cell)}


def select(
    folder: Path, lists: Sequence[Path] | None = None, tags: Sequence[str] = ()
) -> Selection:
    """The recipients of a send to `lists` (default: every list but example.csv) and `tags`.

    A subscriber matches the tags when they have at least one of them (no tags: everyone).
    """
    return Selection(folder, lists, tags)


# ---------------------------------------------------------------------------------------------
# Changing a list: stream it through an Edit into a new file, atomically, under its lock


class _Unchanged(Exception):
    """Raised inside a rewrite that changed nothing: the temp file is dropped, the list kept."""


class Edit:
    """What one rewrite does to a list. Hooks: header, row (None deletes it), tail (appended)."""

    def __init__(self) -> None:
        self.changed = False
        self.names: list[str] = []
        self.lowered: dict[str, int] = {}

    def header(self, names: list[str]) -> list[str]:
        self.names = list(names)
        self.lowered = {name.lower(): i for i, name in enumerate(self.names)}
        return self.names

    def column(self, name: str) -> int:
        """The position of a column, appending it when the list lacks it (only in `header`)."""
        key = name.lower()
        if key not in self.lowered:
            self.lowered[key] = len(self.names)
            self.names.append(name)
        return self.lowered[key]

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        return cells

    def tail(self) -> Iterable[list[str]]:
        return ()


def rewrite(path: Path, edit: Edit, *, new: Sequence[str] | None = None) -> bool:
    """Apply `edit` to the list at `path` under its lock; True when the file was replaced.

    `new` is the header of a list that does not exist yet (else a missing list is an error).
    """
    ensure_lists_folder(path)
    with locked(path):
        return rewrite_locked(path, edit, new=new)


def rewrite_locked(path: Path, edit: Edit, *, new: Sequence[str] | None = None) -> bool:
    """`rewrite` for a caller already holding the list's lock.

    The new file is written beside the old one while the old one is read to its end, and renamed
    over it only then: a list that cannot be read completely (UnreadableList) is never replaced.
    """

    def write(out: IO[str]) -> None:
        if new is not None and _absent(path):
            _write_rows(out, edit.header(list(new)), [], edit)
        else:
            with open_list(path) as reader:  # a row it cannot read aborts before the rename
                _write_rows(out, edit.header(reader.names), reader.rows(), edit)
        if not edit.changed:
            raise _Unchanged

    try:
        atomic_write_text(path, write, mode=LIST_MODE)
    except _Unchanged:
        return False
    return True


def _write_rows(
    out: IO[str], names: list[str], rows: Iterable[tuple[int, list[str]]], edit: Edit
) -> None:
    _write_header(out, names)
    writer = csv.writer(out, lineterminator="\r\n")
    for line, cells in rows:
        kept = edit.row(line, cells)
        if kept is not None:
            writer.writerow(_fit(kept, len(edit.names)))
    for cells in edit.tail():
        writer.writerow(_fit(cells, len(edit.names)))


def _write_header(out: IO[str], names: list[str]) -> None:
    """The header row; every name quoted when one holds `;` or a tab, so that the list still
    reads as comma-delimited (the delimiter is guessed from the header's unquoted text)."""
    if any(";" in name or "\t" in name for name in names):
        csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL).writerow(names)
    else:
        csv.writer(out, lineterminator="\r\n").writerow(names)


def _fit(cells: list[str], width: int) -> list[str]:
    if len(cells) < width:
        return cells + [""] * (width - len(cells))
    if len(cells) > width and not "".join(cells[width:]).strip():
        return cells[:width]
    return cells


def _holds(path: Path, key: str) -> bool:
    """Does the list have a row for this address key? (A read without the lock, to skip lists.)"""
    with open_list(path) as reader:
        email = reader.index["email"]
        return any(address_key(cells[email]) == key for _line, cells in reader.rows())


class StatusEdit(Edit):
    """Set the status of every row of one address, never weakening a stronger suppression."""

    def __init__(self, key: str, status: Status, when: str, *, scope_list: bool = False) -> None:
        super().__init__()
        self.key, self.status, self.when, self.scope_list = key, status, when, scope_list
        self.held = False

    def header(self, names: list[str]) -> list[str]:
        super().header(names)
        self.email = self.column("email")
        self.status_at = self.column("status")
        stamp_column = "subscribed_at" if self.status == "subscribed" else "unsubscribed_at"
        self.stamp_at = self.column(stamp_column)
        self.scope_at = self.column(SCOPE) if self.scope_list or self.status == "subscribed" else -1
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        if address_key(cells[self.email]) != self.key:
            return cells
        self.held = True
        cells = _fit(cells, len(self.names))
        current = cells[self.status_at].strip().lower() or "subscribed"
        if not _should_change(current, self.status):
            return cells
        cells[self.status_at] = self.status
        cells[self.stamp_at] = self.when
        if self.scope_at >= 0:
            cells[self.scope_at] = "list" if self.scope_list else ""
        if self.status == "subscribed" and "unsubscribed_at" in self.lowered:
            cells[self.lowered["unsubscribed_at"]] = ""
        self.changed = True
        return cells


def _should_change(current: str, new: Status) -> bool:
    if new in SUPPRESSING:
        return _RANK.get(current, 0) < _RANK[new]
    if new == "pending":
        return current == "subscribed"
    return current != "subscribed"


@dataclass(frozen=True)
class StatusChange:
    email: str
    status: Status
    changed: list[Path]  # lists rewritten
    held: list[Path]  # lists holding the address (changed or already so)
    suppressed: bool  # a new entry in the suppression file
    broken: list[Problem] = field(default_factory=list)  # lists that could not be read or written


def change_status(
    folder: Path,
    email: str,
    status: Status,
    *,
    lists: Sequence[Path] | None = None,
    when: dt.datetime | None = None,
    scope_list: bool = False,
) -> StatusChange:
    """Set `status` in every list holding the address (default: every list in subscribers/).

    No list holds it and the status suppresses: an entry in the suppression file instead. A list
    that cannot be read or written is reported (InvalidInput) after the others are done, with a
    suppression entry written, so an unsubscribe is never lost to a broken file.
    """
    change = apply_status(folder, email, status, lists=lists, when=when, scope_list=scope_list)
    if change.broken:
        recorded = status in SUPPRESSING  # the suppression file has the address now
        done = [Problem(None, f"{email}: recorded as {status} anyway")] if recorded else []
        raise InvalidInput([*change.broken, *done])
    return change


def apply_status(
    folder: Path,
    email: str,
    status: Status,
    *,
    lists: Sequence[Path] | None = None,
    when: dt.datetime | None = None,
    scope_list: bool = False,
) -> StatusChange:
    """`change_status` that returns the lists it could not change in `.broken` instead of raising.

    With a suppressing status and a broken list, the suppression file records the address (a
    failure to write that file raises: the change is then not recorded anywhere).
    """
    if status not in _RANK:
        raise InvalidInput.one(None, f"unknown status {status!r} (one of: {', '.join(STATUSES)})")
    key = address_key(email)
    moment = stamp(when) if when is not None else now()
    paths = list_files(folder) if lists is None else list(lists)
    changed: list[Path] = []
    held: list[Path] = []
    broken: list[Problem] = []
    for path in paths:
        try:
            if _absent(path) or not _holds(path, key):
                continue
            edit = StatusEdit(key, status, moment, scope_list=scope_list)
            if rewrite(path, edit):
                changed.append(path)
            if edit.held:
                held.append(path)
        except (NewsletterError, OSError, csv.Error) as exc:
            broken.extend(_problems(path, exc))
    suppressed = False
    if status in SUPPRESSING and (broken or not held):
        suppressed = suppress(folder, email, status)
    return StatusChange(email, status, changed, held, suppressed, broken)


def _problems(path: Path, exc: NewsletterError | OSError | csv.Error) -> list[Problem]:
    """Why a list could not be changed, as located problems (no file contents beyond the error)."""
    if isinstance(exc, InvalidInput):
        return exc.problems
    if isinstance(exc, LockBusy):
        return [Problem(path, "another process holds its lock")]
    if isinstance(exc, StorageError):  # names the file it failed on: the list, its lock or a temp
        where = "" if exc.path == path else f"{exc.path}: "
        return [Problem(path, f"{where}{exc.action}: {exc.reason}")]
    if isinstance(exc, OSError):
        return [Problem(path, exc.strerror or type(exc).__name__)]
    if isinstance(exc, csv.Error):
        return [Problem(path, f"unreadable CSV: {exc}")]
    return [Problem(path, str(exc))]


def set_status(
    folder: Path,
    email: str,
    status: str,
    *,
    lists: Sequence[Path] | None = None,
    when: dt.datetime | None = None,
) -> list[Path]:
    """Set `status` for an address in every list holding it; the lists changed.

    For the dispatcher (5.1.x bounces: "bounced") and the unsubscribe endpoint ("unsubscribed").
    When no list holds the address and the status suppresses, the suppression file records it.
    """
    return change_status(folder, email, cast(Status, status), lists=lists, when=when).changed


def bounces_to_apply(folder: Path, refusals: Iterable[tuple[str, float]]) -> list[str]:
    """The addresses of 5.1.x refusals (address, unix time) that the lists do not show yet.

    Decided by reading every list of subscribers/ once (where `set_status` marks a bounce):
    shown means every row of the address is bounced or stronger, or no row holds it and the
    suppression file does. A row subscribed again after the refusal (a later subscribed_at)
    means the person came back since: their address is left alone.
    """
    wanted = {key_hash(address_key(email)): (email, at) for email, at in refusals}
    rows: dict[int, list[tuple[str, str]]] = {}
    unreadable = False
    for path in list_files(folder) if wanted else []:
        try:
            _bounce_rows(path, wanted, rows)
        except (NewsletterError, OSError, csv.Error):
            unreadable = True  # it may hold any of them: only the suppression file shows those
    suppressed = read_suppressed(folder) if wanted else set()
    return [
        email
        for compact, (email, at) in wanted.items()
        if _bounce_missing(rows.get(compact, []), at, compact in suppressed, unreadable)
    ]


def _bounce_rows(
    path: Path, wanted: Collection[int], rows: dict[int, list[tuple[str, str]]]
) -> None:
    """Add the (status, subscribed_at) of each row of `path` whose address is `wanted`."""
    with open_list(path) as reader:
        parser = RowParser(reader)
        for _line, cells in reader.rows():
            compact = key_hash(address_key(cells[parser.email]))
            if compact in wanted:
                status = parser.cell(cells, parser.status).lower() or "subscribed"
                since = parser.cell(cells, reader.index.get("subscribed_at"))
                rows.setdefault(compact, []).append((status, since))


def _bounce_missing(
    rows: list[tuple[str, str]], at: float, suppressed: bool, unreadable: bool
) -> bool:
    if any(_after(since, at) for _status, since in rows):
        return False
    weaker = any(_should_change(status, "bounced") for status, _since in rows)
    if not rows or unreadable:  # then the suppression file is where the bounce shows
        return weaker or not suppressed
    return weaker


def subscribed_since(subscriber: Subscriber, at: float) -> bool:
    """Does the subscriber's row say they subscribed at or after the unix time `at`?"""
    return _after(subscriber.fields.get("subscribed_at", "").strip(), at)


def _after(when: str, at: float) -> bool:
    """Is the ISO 8601 time `when` at or after the unix time `at`? (A date alone: its start.)"""
    if not when or _date_problem(when):
        return False
    moment = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp() >= math.floor(at)  # lists keep seconds: the same second counts


# ---------------------------------------------------------------------------------------------
# add


@dataclass(frozen=True)
class Found:
    path: Path
    line: int
    status: str
    scope: str
    since: str  # unsubscribed_at of a non-subscribed row


def find(folder: Path, email: str, lists: Sequence[Path] | None = None) -> list[Found]:
    """Every row of an address in the lists (default: all in subscribers/)."""
    key = address_key(email)
    found: list[Found] = []
    for path in list_files(folder) if lists is None else lists:
        if _absent(path):
            continue
        with open_list(path) as reader:
            parser = RowParser(reader)
            for line, cells in reader.rows():
                if address_key(cells[parser.email]) == key:
                    status = parser.cell(cells, parser.status).lower() or "subscribed"
                    scope = parser.cell(cells, parser.scope).lower()
                    since = parser.cell(cells, reader.index.get("unsubscribed_at"))
                    found.append(Found(path, line, status, scope, since))
    return found


class AddEdit(Edit):
    """Append a subscriber, or complete the row the list already has for them."""

    def __init__(self, email: str, name: str, tags: Sequence[str], when: str, source: str) -> None:
        super().__init__()
        self.email, self.key, self.name = email, address_key(email), name
        self.tags, self.when, self.source = [t.strip() for t in tags if t.strip()], when, source
        self.found = False

    def header(self, names: list[str]) -> list[str]:
        super().header(names)
        self.at = {c: self.column(c) for c in ("email", "status", "subscribed_at", "source")}
        if self.name:
            self.at["name"] = self.column("name")
        if self.tags:
            self.at["tags"] = self.column("tags")
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        if self.found or address_key(cells[self.at["email"]]) != self.key:
            return cells
        self.found = True
        cells = _fit(cells, len(self.names))
        if self.name and not cells[self.at["name"]].strip():
            cells[self.at["name"]] = self.name
            self.changed = True
        if self.tags:
            tags = split_tags(cells[self.at["tags"]].strip())
            if not tags.issuperset(self.tags):
                cells[self.at["tags"]] = join_tags(tags.union(self.tags))
                self.changed = True
        return cells

    def tail(self) -> Iterable[list[str]]:
        if self.found:
            return ()
        cells = [""] * len(self.names)
        values = {"email": self.email, "status": "subscribed", "subscribed_at": self.when}
        values |= {"source": self.source, "name": self.name, "tags": join_tags(self.tags)}
        for column, position in self.at.items():
            cells[position] = values[column]
        self.changed = True
        return [cells]


@dataclass(frozen=True)
class Added:
    email: str
    path: Path
    created: bool  # a new row (False: the list had them; empty fields were filled)
    changed: bool


def add(
    folder: Path,
    email: str,
    *,
    name: str = "",
    tags: Sequence[str] = (),
    list_path: Path | None = None,
    source: str = "cli",
    resubscribe: bool = False,
    when: dt.datetime | None = None,
) -> Added:
    """Subscribe an address to a list (default subscribers/subscribers.csv).

    Refused when the address is unsubscribed, bounced or complained anywhere, or suppressed,
    unless `resubscribe` (the person asked again): then their row in this list becomes subscribed
    and their other non-subscribed rows are scoped to their own lists.
    """
    stored, _smtputf8 = normalise_address(email)
    name = name.strip()  # Unicode whitespace too (a no-break space from a web form)
    problem = _name_problem(name)
    if problem:
        raise InvalidInput.one(None, problem, field="name")
    path = list_path or lists_folder(folder) / DEFAULT_LIST
    moment = stamp(when) if when is not None else now()
    blocking = [f for f in find(folder, stored, _with(folder, path)) if _blocks_here(f, path)]
    if not resubscribe:
        _refuse_blocked(folder, stored, blocking)
    edit = AddEdit(stored, name, tags, moment, source)
    changed = rewrite(path, edit, new=COLUMNS)
    if resubscribe:
        changed = _resubscribe(folder, stored, path, blocking, moment) or changed
    return Added(stored, path, created=not edit.found, changed=changed)


def _with(folder: Path, path: Path) -> list[Path]:
    return list(dict.fromkeys([*list_files(folder), path]))


def _blocks_here(found: Found, path: Path) -> bool:
    return found.status != "subscribed" and (found.scope != "list" or found.path == path)


def _refuse_blocked(folder: Path, email: str, blocking: list[Found]) -> None:
    hint = "use --resubscribe only if they asked to be subscribed again"
    if blocking:
        first = blocking[0]
        since = f" since {first.since}" if first.since else ""
        where = f"{first.path}:{first.line}"
        raise Refused(f"{email} is {first.status}{since} ({where}): {hint}")
    if is_suppressed(folder, email):
        raise Refused(f"{email} is in the suppression file (erased or unsubscribed): {hint}")


def _resubscribe(folder: Path, email: str, path: Path, blocking: list[Found], moment: str) -> bool:
    key = address_key(email)
    changed = rewrite(path, StatusEdit(key, "subscribed", moment))
    for other in dict.fromkeys(f.path for f in blocking if f.path != path):
        changed = rewrite(other, ScopeEdit(key)) or changed
    return unsuppress(folder, email) or changed


class ScopeEdit(Edit):
    """Keep an address's non-subscribed rows to their own list (scope = list)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def header(self, names: list[str]) -> list[str]:
        super().header(names)
        self.email, self.status, self.scope = (self.column(c) for c in ("email", "status", SCOPE))
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        if address_key(cells[self.email]) != self.key:
            return cells
        cells = _fit(cells, len(self.names))
        if (cells[self.status].strip() or "subscribed") != "subscribed" and cells[
            self.scope
        ] != "list":
            cells[self.scope] = "list"
            self.changed = True
        return cells


def unsuppress(folder: Path, email: str) -> bool:
    """Remove an address's entry from the suppression file; True if there was one."""
    path = suppressed_path(folder)
    digest = key_digest(address_key(email))
    with locked(path):
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return False
        kept = [line for line in lines if not (_is_entry(line) and line.split()[0] == digest)]
        if len(kept) == len(lines):
            return False
        atomic_write_text(path, lambda out: out.writelines(kept), mode=0o600)
    return True


# ---------------------------------------------------------------------------------------------
# purge: erasure on request


class PurgeEdit(Edit):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.deleted = 0

    def header(self, names: list[str]) -> list[str]:
        super().header(names)
        self.email = self.column("email")
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        if address_key(cells[self.email]) != self.key:
            return cells
        self.deleted += 1
        self.changed = True
        return None


@dataclass(frozen=True)
class Purged:
    email: str
    rows: int
    files: list[Path]


def purge(folder: Path, email: str) -> Purged:
    """Delete every row of an address from every list, after recording it as suppressed.

    The suppression entry is written first: a crash between the two steps leaves the person
    blocked, never re-importable. Other copies (git history, backups, a send's ledger) are not
    reached from here: docs/subscribers.md says so.
    """
    suppress(folder, email, "purged")
    key = address_key(email)
    rows = 0
    files: list[Path] = []
    broken: list[Problem] = []
    for path in list_files(folder):
        try:
            if not _holds(path, key):
                continue
            edit = PurgeEdit(key)
            if rewrite(path, edit):
                rows += edit.deleted
                files.append(path)
        except InvalidInput as exc:  # one broken list must not keep the others unerased
            broken.extend(exc.problems)
    if broken:
        done = f"; erased from {', '.join(map(str, files))}" if files else ""
        note = f"{email}: suppressed{done}; fix the lists above, then purge again"
        raise InvalidInput([*broken, Problem(None, note)])
    return Purged(email, rows, files)


# ---------------------------------------------------------------------------------------------
# import: csv, Mailchimp and listmonk exports


@dataclass(frozen=True)
class Record:
    """One row of an import source, mapped to list columns (empty values left out)."""

    line: int
    email: str
    values: dict[str, str]


RecordParser = Callable[[int, list[str]], "Record | list[Problem]"]


def _csv_records(reader: ListReader) -> RecordParser:
    parser = RowParser(reader)
    extras = [(i, n) for i, n in enumerate(reader.names) if n.lower() not in KNOWN]

    def parse(line: int, cells: list[str]) -> Record | list[Problem]:
        parsed = parser.parse(line, cells)
        if isinstance(parsed, list):
            return parsed
        values = {c: parser.cell(cells, reader.index.get(c)) for c in KNOWN}
        status = parser.cell(cells, parser.status).lower()  # empty: the list's own rule
        values |= {"email": parsed.email, "status": status, "tags": join_tags(parsed.tags)}
        values |= {name: parser.cell(cells, i) for i, name in extras}
        return Record(line, parsed.email, {k: v for k, v in values.items() if v})

    return parse


def snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


_MAILCHIMP_OWN = {"email address", "unsub_time", "clean_time", "confirm_time", "tags"}


def _mailchimp_records(reader: ListReader) -> RecordParser:
    at = reader.lowered
    extras = [
        (i, snake_case(n)) for i, n in enumerate(reader.names) if n.lower() not in _MAILCHIMP_OWN
    ]

    def get(cells: list[str], column: str) -> str:
        position = at.get(column)
        return cells[position].strip() if position is not None and position < len(cells) else ""

    def parse(line: int, cells: list[str]) -> Record | list[Problem]:
        unsub, clean = get(cells, "unsub_time"), get(cells, "clean_time")
        name = " ".join(p for p in (get(cells, "first name"), get(cells, "last name")) if p)
        values = {
            "name": name,
            "status": "bounced" if clean else "unsubscribed" if unsub else "subscribed",
            "tags": join_tags(_mailchimp_tags(get(cells, "tags"))),
            "subscribed_at": get(cells, "confirm_time") or get(cells, "optin_time"),
            "unsubscribed_at": clean or unsub,
            "source": "mailchimp",
        }
        values |= {name: cells[i].strip() for i, name in extras if i < len(cells)}
        return _record(reader.path, line, get(cells, "email address"), values)

    return parse


def _mailchimp_tags(cell: str) -> list[str]:
    """Mailchimp writes tags as `"Tag A","Tag B"` inside one cell."""
    if not cell:
        return []
    return [t.strip() for t in next(csv.reader([cell])) if t.strip()]


_LISTMONK_STATUS = {"enabled": "subscribed", "disabled": "unsubscribed"}
_LISTMONK_STATUS |= {"blocklisted": "unsubscribed", "": "subscribed"}


def _listmonk_records(reader: ListReader) -> RecordParser:
    at = reader.lowered

    def get(cells: list[str], column: str) -> str:
        position = at.get(column)
        return cells[position].strip() if position is not None and position < len(cells) else ""

    def parse(line: int, cells: list[str]) -> Record | list[Problem]:
        raw_status = get(cells, "status").lower()
        attributes, problem = _attributes(get(cells, "attributes"))
        problems = [Problem(reader.path, problem, field="attributes", line=line)] if problem else []
        if raw_status not in _LISTMONK_STATUS:
            message = f"unknown listmonk status {raw_status!r} (enabled, disabled, blocklisted)"
            problems.append(Problem(reader.path, message, field="status", line=line))
        values = {
            "name": get(cells, "name"),
            "status": _LISTMONK_STATUS.get(raw_status, ""),
            "subscribed_at": get(cells, "created_at"),
            "source": "listmonk",
        }
        record = _record(reader.path, line, get(cells, "email"), values | attributes)
        if problems:
            return problems + (record if isinstance(record, list) else [])
        return record

    return parse


def _attributes(text: str) -> tuple[dict[str, str], str | None]:
    """listmonk's `attributes` JSON object -> columns (its keys; known names get `attr_`)."""
    if not text:
        return {}, None
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, f"attributes is not JSON: {exc}"
    if not isinstance(data, dict):
        return {}, "attributes must be a JSON object"
    columns: dict[str, str] = {}
    for name, value in data.items():
        column = f"attr_{name}" if name.lower() in KNOWN else name
        columns[column] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return columns, None


def _record(
    path: Path, line: int, raw_email: str, values: dict[str, str]
) -> Record | list[Problem]:
    problems = []
    try:
        email, _smtputf8 = normalise_address(raw_email)
    except BadAddress as exc:
        problems.append(Problem(path, exc.reason, field="email", line=line))
    name = _name_problem(values.get("name", ""))
    if name:
        problems.append(Problem(path, name, field="name", line=line))
    for column in ("subscribed_at", "unsubscribed_at"):
        problem = _date_problem(values.get(column, ""))
        if problem:
            problems.append(Problem(path, problem, field=column, line=line))
    if problems:
        return problems
    values["email"] = email
    return Record(line, email, {k: v for k, v in values.items() if v})


_PARSERS: dict[str, tuple[str, Callable[[ListReader], RecordParser]]] = {
    "csv": ("email", _csv_records),
    "mailchimp": ("email address", _mailchimp_records),
    "listmonk": ("email", _listmonk_records),
}


def read_records(path: Path, fmt: str) -> Iterator[Record | list[Problem]]:
    """The rows of an import source, as Records or the problems of each bad row."""
    required, make = _PARSERS[fmt]
    with open_list(path, required) as reader:
        parse = make(reader)
        for line, cells in reader.rows():
            yield parse(line, cells)


@dataclass
class ImportReport:
    source: Path
    into: Path
    added: int = 0
    updated: int = 0  # rows the list had, with empty fields filled or a stronger status
    unchanged: int = 0
    merged: list[Problem] = field(default_factory=list)  # repeated addresses in the source
    skipped: list[Problem] = field(default_factory=list)  # bad rows left out (--skip-invalid)
    suppressed: list[Problem] = field(default_factory=list)  # in the suppression file


def import_list(
    folder: Path, source: Path, into: Path, *, fmt: str = "csv", skip_invalid: bool = False
) -> ImportReport:
    """Import `source` into the list `into` (created if missing): nothing written if a row is bad.

    Two passes over the source keep memory small: the first checks every row (InvalidInput
    with all bad rows at once), the second, under the list's lock, merges. An address the list
    has keeps its values; only its empty fields are filled, and its status only ever gets
    stronger (a subscriber can become unsubscribed, never the other way round).
    """
    if fmt not in _PARSERS:
        raise InvalidInput.one(None, f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    report = ImportReport(source, into)
    columns, repeated = _check_source(source, fmt, report, skip_invalid)
    suppressed = read_suppressed(folder)
    ensure_lists_folder(into)
    with locked(into):
        names = _names(into) or list(COLUMNS)
        header = names + [c for c in columns if c.lower() not in {n.lower() for n in names}]
        known = _keys(into)
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="", dir=into.parent) as spool:
            overlap = _spool_new(source, fmt, header, known, suppressed, repeated, spool, report)
            spool.seek(0)
            edit = ImportEdit(header, overlap, csv.reader(spool), report)
            rewrite_locked(into, edit, new=header)
    return report


def _check_source(
    source: Path, fmt: str, report: ImportReport, skip_invalid: bool
) -> tuple[list[str], set[int]]:
    """First pass: every bad row, the columns the rows fill, the addresses on several rows."""
    bad: list[Problem] = []
    seen: set[int] = set()
    repeated: set[int] = set()
    columns: dict[str, None] = {}
    for item in read_records(source, fmt):
        if isinstance(item, list):
            bad.extend(item)
            continue
        compact = key_hash(address_key(item.email))
        if compact in seen:
            repeated.add(compact)
        seen.add(compact)
        columns.update(dict.fromkeys(item.values))
    if bad and not skip_invalid:
        raise InvalidInput(bad)
    report.skipped = bad
    ordered = [c for c in COLUMNS if c in columns] + [c for c in columns if c not in COLUMNS]
    return ordered, repeated


def _names(path: Path) -> list[str] | None:
    if _absent(path):
        return None
    with open_list(path) as reader:
        return reader.names


def _keys(path: Path) -> set[int]:
    if _absent(path):
        return set()
    with open_list(path) as reader:
        email = reader.index["email"]
        return {key_hash(address_key(cells[email])) for _line, cells in reader.rows()}


def _spool_new(
    source: Path,
    fmt: str,
    header: list[str],
    known: set[int],
    suppressed: set[int],
    repeated: set[int],
    spool: IO[str],
    report: ImportReport,
) -> dict[int, Record]:
    """Second pass: rows for new addresses go to `spool`; those the list has are returned."""
    writer = csv.writer(spool, lineterminator="\r\n")
    first: dict[int, int] = {}
    overlap: dict[int, Record] = {}
    for item in read_records(source, fmt):
        if isinstance(item, list):
            continue
        compact = key_hash(address_key(item.email))
        if compact in repeated:
            if compact in first:
                message = f"same address as line {first[compact]}: merged into it (first kept)"
                report.merged.append(
                    Problem(source, message, line=item.line, severity=Severity.WARNING)
                )
                continue
            first[compact] = item.line
        if compact in suppressed:
            message = (
                f"{item.email} is in the suppression file (erased or unsubscribed): not imported"
            )
            report.suppressed.append(
                Problem(source, message, line=item.line, severity=Severity.WARNING)
            )
        elif compact in known:
            overlap[compact] = item
        else:
            values = {column.lower(): value for column, value in item.values.items()}
            writer.writerow([values.get(name.lower(), "") for name in header])
            report.added += 1
    return overlap


class ImportEdit(Edit):
    """Fill empty fields of rows the list has, strengthen statuses, append the spooled rows."""

    def __init__(
        self,
        header: list[str],
        overlap: dict[int, Record],
        new_rows: Iterator[list[str]],
        report: ImportReport,
    ) -> None:
        super().__init__()
        self.wanted, self.overlap, self.new_rows, self.report = header, overlap, new_rows, report
        self.changed = report.added > 0

    def header(self, names: list[str]) -> list[str]:
        super().header(names)
        for name in self.wanted:
            self.column(name)
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        email = self.lowered["email"]
        record = self.overlap.pop(key_hash(address_key(cells[email])), None)
        if record is None:
            return cells
        merged = _merge(_fit(cells, len(self.names)), record, self.names)
        if merged != cells[: len(merged)] or len(merged) != len(cells):
            self.changed = True
            self.report.updated += 1
        else:
            self.report.unchanged += 1
        return merged

    def tail(self) -> Iterable[list[str]]:
        return self.new_rows


def _merge(cells: list[str], record: Record, names: list[str]) -> list[str]:
    merged = list(cells)
    values = {column.lower(): value for column, value in record.values.items()}
    for position, name in enumerate(names):
        column = name.lower()
        incoming = values.get(column, "")
        if column == "status":
            current = merged[position].strip().lower() or "subscribed"
            if incoming and _RANK.get(incoming, 0) > _RANK.get(current, 0):
                merged[position] = incoming
        elif incoming and not merged[position].strip():
            merged[position] = incoming
    return merged


# ---------------------------------------------------------------------------------------------
# list and stats


def browse(
    folder: Path, *, status: str | None = None, tag: str | None = None
) -> Iterator[Subscriber]:
    """Every row of every list in subscribers/, unchecked, filtered by status and tag."""
    wanted = tag.casefold() if tag else None
    for path in list_files(folder):
        for subscriber in read_loosely(path):
            if status and subscriber.status != status:
                continue
            if wanted and wanted not in {t.casefold() for t in subscriber.tags}:
                continue
            yield subscriber


@dataclass
class Stats:
    by_list: dict[str, Counter[str]] = field(default_factory=dict)  # list file -> status -> rows
    by_tag: Counter[str] = field(default_factory=Counter)  # tag -> subscribed rows
    recipients: int = 0  # distinct addresses a send to every list (not example.csv) reaches
    suppressed_entries: int = 0
    held_back: int = 0  # subscribed rows whose address is in the suppression file


def stats(folder: Path) -> Stats:
    """Rows per list and status, subscribed rows per tag, and the distinct recipients."""
    result = Stats()
    blocks = Blocklist(folder).blocks()
    suppressed = read_suppressed(folder)
    seen: set[int] = set()
    for path in list_files(folder):
        counts: Counter[str] = Counter()
        for subscriber in read_loosely(path):
            counts[subscriber.status] += 1
            if subscriber.status != "subscribed":
                continue
            result.by_tag.update(subscriber.tags)
            compact = key_hash(address_key(subscriber.email))
            result.held_back += compact in suppressed
            if path.name != EXAMPLE_LIST and not blocks.blocks(compact, path):
                seen.add(compact)
        result.by_list[path.name] = counts
    result.recipients = len(seen)
    result.suppressed_entries = len(suppressed)
    return result


def lookup(folder: Path, email: str) -> Subscriber | None:
    """The first row of `email` in any list (example.csv included), for its merge fields.

    Every list is read to its end, so that a list that cannot be read is reported as by a send.
    """
    key = address_key(email)
    found = None
    for path in list_files(folder):
        for subscriber in read_loosely(path):
            if found is None and address_key(subscriber.email) == key:
                found = subscriber
    return found

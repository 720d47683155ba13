"""The CSV format of a list: where lists live, reading one as a header and rows, rows ->
Subscriber.

Reading accepts what real files look like (BOM, CRLF, `;` from European Excel, quoted newlines)
and refuses what it cannot read to the end (UnreadableList), naming the line.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol, cast

from newsletter.addresses import normalise_address
from newsletter.errors import BadAddress, InvalidInput, Problem, UnreadableList
from newsletter.fileio import atomic_write_text, make_folder
from newsletter.models import STATUSES, Status, Subscriber

COLUMNS = ("email", "name", "status", "tags", "subscribed_at", "unsubscribed_at", "source")
SCOPE = "scope"  # optional column: `list` keeps a row's non-subscribed status to its own list
KNOWN = (*COLUMNS, SCOPE)
DEFAULT_LIST = "subscribers.csv"  # where `add` writes when no list is named
EXAMPLE_LIST = "example.csv"  # shipped sample: never selected for a send unless named
SUPPRESSED_FILE = "suppressed"  # in the state folder (.newsletter/)
LIST_MODE = 0o600  # lists hold personal data: new ones are readable by their owner only
# How strong a status is: a change or an import only ever makes a row's status stronger
RANK = {"subscribed": 0, "pending": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}


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
    """The lists of a newsletter folder: every *.csv in subscribers/, by name. Hidden files
    are not lists (`._news.csv` from macOS, an editor's `.#news.csv`), as the shell's `*.csv`
    leaves them out."""
    found = sorted(p for p in lists_folder(folder).glob("*.csv") if not p.name.startswith("."))
    return [p for p in found if include_example or p.name != EXAMPLE_LIST]


def absent(path: Path) -> bool:
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


class RowEdit(Protocol):
    """What a reader applies to the rows it reads (edits.Chain: a list's pending journal)."""

    def header(self, names: list[str]) -> list[str]: ...
    def row(self, line: int, cells: list[str]) -> list[str] | None: ...
    def tail(self) -> Iterable[list[str]]: ...


class ListReader:
    """An open list: `names` (the header as written), `index` (known column -> position), rows.

    With `edit` (a list's pending journal), the header and rows are those after it: columns it
    adds, rows it changes, deletes or appends (numbered after the file's last line).

    Strict: a quoted field left open (it would swallow every later row), text after a closing
    quote and a field over 128 KiB raise UnreadableList naming the line where the field opened.
    Lines end at LF or CRLF; in a file whose first line ends with a lone CR (old Mac exports),
    at CR. A line break of the other kind outside quotes is refused, never guessed at.
    """

    def __init__(
        self, path: Path, handle: IO[bytes], required: str = "email", edit: RowEdit | None = None
    ) -> None:
        self.path = path
        self._edit = edit
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
        self._width = len(self.names)  # of the file's own rows
        if edit is not None:
            self.names = edit.header(self.names)
            self.lowered = {name.lower(): i for i, name in enumerate(self.names)}
        self.index = {name: self.lowered[name] for name in KNOWN if name in self.lowered}

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line where the row starts, its cells) for every non-blank row, in file order.

        A row shorter than the header is padded with empty cells (spreadsheets drop trailing
        empty ones), so every header position can be indexed.
        """
        reader = self._reader
        width = self._width
        start = reader.line_num + 1
        try:
            for cells in reader:
                if cells and (cells[0] or "".join(cells).strip()):
                    if len(cells) < width:
                        cells += [""] * (width - len(cells))
                    edited = cells if self._edit is None else self._edited(start, cells)
                    if edited is not None:
                        yield start, edited
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise self._failure(exc, start) from None
        if self._edit is not None:
            for line, cells in enumerate(self._edit.tail(), start):
                yield line, self._padded(cells)

    def _edited(self, line: int, cells: list[str]) -> list[str] | None:
        edited = cast(RowEdit, self._edit).row(line, cells)
        return None if edited is None else self._padded(edited)

    def _padded(self, cells: list[str]) -> list[str]:
        width = len(self.names)
        return cells + [""] * (width - len(cells)) if len(cells) < width else cells

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
def open_file(path: Path, required: str = "email") -> Iterator[ListReader]:
    """Open a list file as it is on disk, without its journal (journal.open_list applies it);
    UnreadableList or InvalidInput (naming the file and line) when it cannot be read to its
    end or its header is wrong."""
    with open_bytes(path) as handle:
        yield ListReader(path, handle, required)


def open_bytes(path: Path) -> IO[bytes]:
    """The list file opened for reading, or UnreadableList saying why not."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise UnreadableList(path, "no such file") from None
    except OSError as exc:
        raise UnreadableList(path, exc.strerror or "cannot read") from None


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

    def __init__(self, reader: ListReader, *, allow_reserved: bool = False) -> None:
        self.allow_reserved = allow_reserved  # addresses at reserved names are good rows
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
            email, smtputf8 = normalise_address(
                cells[self.email], allow_reserved=self.allow_reserved
            )
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
        name = name_problem(self.cell(cells, self.name))
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
            problem = date_problem(self.cell(cells, position))
            if problem:
                problems.append(Problem(self.path, problem, field=self.names[position], line=line))
        return problems


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def name_problem(name: str) -> str | None:
    """Why a name (already stripped) cannot be stored: a line break, tab, NUL or other control
    character would break `subscribers list`, headers and greetings. None when it can."""
    found = _CONTROL.search(name)
    if found is None:
        return None
    return f"a name cannot hold a line break or control character ({found.group()!r})"


def date_problem(text: str) -> str | None:
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

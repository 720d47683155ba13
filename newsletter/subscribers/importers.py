"""`subscribers import`: csv, Mailchimp and listmonk exports merged into a list."""

from __future__ import annotations

import csv
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from newsletter.addresses import address_key, key_hash, normalise_address
from newsletter.errors import BadAddress, InvalidInput, Problem, Severity, StorageError
from newsletter.fileio import locked
from newsletter.subscribers.csvfile import (
    COLUMNS,
    KNOWN,
    RANK,
    ListReader,
    RowParser,
    absent,
    date_problem,
    ensure_lists_folder,
    join_tags,
    name_problem,
    now,
    open_file,
)
from newsletter.subscribers.edits import Edit, fit
from newsletter.subscribers.journal import open_list
from newsletter.subscribers.people import People
from newsletter.subscribers.rewrite import rewrite_locked
from newsletter.subscribers.suppression import read_suppressed

Format = Literal["csv", "mailchimp", "listmonk"]
FORMATS: tuple[Format, ...] = ("csv", "mailchimp", "listmonk")


# import: csv, Mailchimp and listmonk exports


@dataclass(frozen=True)
class Record:
    """One row of an import source, mapped to list columns (empty values left out)."""

    line: int
    email: str
    values: dict[str, str]


RecordParser = Callable[[int, list[str]], "Record | list[Problem]"]


def _csv_records(reader: ListReader, allow_reserved: bool) -> RecordParser:
    parser = RowParser(reader, allow_reserved=allow_reserved)
    # (column, position): the known columns the file has, in KNOWN's order, then the others;
    # rows() pads every row to the header's width, so each position can be read
    known = [(c, reader.index[c]) for c in KNOWN if c in reader.index]
    columns = known + [(n, i) for i, n in enumerate(reader.names) if n.lower() not in KNOWN]

    def parse(line: int, cells: list[str]) -> Record | list[Problem]:
        parsed = parser.parse(line, cells)
        if isinstance(parsed, list):
            return parsed
        values = {column: cells[i].strip() for column, i in columns}
        status = parser.cell(cells, parser.status).lower()  # empty: the list's own rule
        values |= {"email": parsed.email, "status": status, "tags": join_tags(parsed.tags)}
        return Record(line, parsed.email, {k: v for k, v in values.items() if v})

    return parse


def snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


_MAILCHIMP_OWN = {"email address", "unsub_time", "clean_time", "confirm_time", "tags"}


def _mailchimp_records(reader: ListReader, allow_reserved: bool) -> RecordParser:
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
        return _record(reader.path, line, get(cells, "email address"), values, allow_reserved)

    return parse


def _mailchimp_tags(cell: str) -> list[str]:
    """Mailchimp writes tags as `"Tag A","Tag B"` inside one cell."""
    if not cell:
        return []
    return [t.strip() for t in next(csv.reader([cell])) if t.strip()]


_LISTMONK_STATUS = {"enabled": "subscribed", "disabled": "unsubscribed"}
_LISTMONK_STATUS |= {"blocklisted": "unsubscribed", "": "subscribed"}


def _listmonk_records(reader: ListReader, allow_reserved: bool) -> RecordParser:
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
        values |= attributes
        record = _record(reader.path, line, get(cells, "email"), values, allow_reserved)
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
    path: Path, line: int, raw_email: str, values: dict[str, str], allow_reserved: bool
) -> Record | list[Problem]:
    problems = []
    try:
        email, _smtputf8 = normalise_address(raw_email, allow_reserved=allow_reserved)
    except BadAddress as exc:
        problems.append(Problem(path, exc.reason, field="email", line=line))
    name = name_problem(values.get("name", ""))
    if name:
        problems.append(Problem(path, name, field="name", line=line))
    for column in ("subscribed_at", "unsubscribed_at"):
        problem = date_problem(values.get(column, ""))
        if problem:
            problems.append(Problem(path, problem, field=column, line=line))
    if problems:
        return problems
    values["email"] = email
    return Record(line, email, {k: v for k, v in values.items() if v})


_PARSERS: dict[str, tuple[str, Callable[[ListReader, bool], RecordParser]]] = {
    "csv": ("email", _csv_records),
    "mailchimp": ("email address", _mailchimp_records),
    "listmonk": ("email", _listmonk_records),
}


def read_records(
    path: Path, fmt: str, *, allow_reserved: bool = False
) -> Iterator[Record | list[Problem]]:
    """The rows of an import source, as Records or the problems of each bad row (an address
    at a reserved name is one, unless `allow_reserved`)."""
    required, make = _PARSERS[fmt]
    with open_file(path, required) as reader:  # a file to import: no list, no journal
        parse = make(reader, allow_reserved)
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
    unrecorded: list[Problem] = field(default_factory=list)  # history that could not be written
    allow_reserved: bool = False  # addresses at reserved names are rows like any other


def import_list(
    folder: Path,
    source: Path,
    into: Path,
    *,
    fmt: str = "csv",
    skip_invalid: bool = False,
    allow_reserved: bool = False,
) -> ImportReport:
    """Import `source` into the list `into` (created if missing): nothing written if a row is bad.

    Two passes over the source keep memory small: the first checks every row (InvalidInput
    with all bad rows at once), the second, under the list's lock, merges. An address the list
    has keeps its values; only its empty fields are filled, and its status only ever gets
    stronger (a subscriber can become unsubscribed, never the other way round).
    """
    if fmt not in _PARSERS:
        raise InvalidInput.one(None, f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    report = ImportReport(source, into, allow_reserved=allow_reserved)
    columns, repeated = check_source(source, fmt, report, skip_invalid)
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
            spool.seek(0)
            changes = itertools.chain(_new_statuses(spool, header), edit.statuses)
            if report.added or edit.statuses:
                _record_history(folder, into, changes, report)
    return report


def _new_statuses(spool: IO[str], header: list[str]) -> Iterator[tuple[str, str]]:
    """(email, status) of each row the import appended, read back from the spool."""
    lowered = [name.lower() for name in header]
    email = lowered.index("email")
    status = lowered.index("status") if "status" in lowered else None
    for cells in csv.reader(spool):
        value = cells[status].strip().lower() if status is not None else ""
        yield cells[email], value or "subscribed"


def _record_history(
    folder: Path, into: Path, changes: Iterable[tuple[str, str]], report: ImportReport
) -> None:
    """Each new row and each status the import changed, in the people's history (one
    transaction). A failure is a note: the list itself is already written."""
    try:
        with People(folder) as people:
            people.record_statuses(changes, list_name=into.name, source="import", at=now())
    except StorageError as exc:
        why = f"status history not recorded: {exc.action}: {exc.reason}"
        report.unrecorded.append(Problem(exc.path, why, severity=Severity.WARNING))


def check_source(
    source: Path, fmt: str, report: ImportReport, skip_invalid: bool
) -> tuple[list[str], set[int]]:
    """First pass: every bad row, the columns the rows fill, the addresses on several rows."""
    bad: list[Problem] = []
    seen: set[int] = set()
    repeated: set[int] = set()
    columns: dict[str, None] = {}
    for item in read_records(source, fmt, allow_reserved=report.allow_reserved):
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
    if absent(path):
        return None
    with open_list(path) as reader:
        return reader.names


def _keys(path: Path) -> set[int]:
    if absent(path):
        return set()
    with open_list(path) as reader:
        email = reader.index["email"]
        return {key_hash(address_key(cells[email])) for _line, cells in reader.rows()}


def first_records(
    source: Path, fmt: str, report: ImportReport, repeated: Container[int] | None = None
) -> Iterator[tuple[int, Record]]:
    """The readable records of `source` with their address hash, each address once: a later
    row of an address (among `repeated`, when the caller knows which repeat) is reported as
    merged into the first and skipped."""
    first: dict[int, int] = {}
    for item in read_records(source, fmt, allow_reserved=report.allow_reserved):
        if isinstance(item, list):
            continue
        compact = key_hash(address_key(item.email))
        if repeated is None or compact in repeated:
            if compact in first:
                message = f"same address as line {first[compact]}: merged into it (first kept)"
                report.merged.append(
                    Problem(source, message, line=item.line, severity=Severity.WARNING)
                )
                continue
            first[compact] = item.line
        yield compact, item


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
    lowered = [name.lower() for name in header]
    overlap: dict[int, Record] = {}
    for compact, item in first_records(source, fmt, report, repeated):
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
            writer.writerow([values.get(name, "") for name in lowered])
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
        self.statuses: list[tuple[str, str]] = []  # (email, status) of rows it changed

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
        merged = _merge(fit(cells, len(self.names)), record, self.names)
        if merged != cells[: len(merged)] or len(merged) != len(cells):
            self.changed = True
            self.report.updated += 1
            status = self.lowered.get("status")
            if status is not None and _status(merged, status) != _status(cells, status):
                self.statuses.append((cells[email], _status(merged, status)))
        else:
            self.report.unchanged += 1
        return merged

    def tail(self) -> Iterable[list[str]]:
        return self.new_rows


def _status(cells: list[str], position: int) -> str:
    return (cells[position].strip().lower() if position < len(cells) else "") or "subscribed"


def _merge(cells: list[str], record: Record, names: list[str]) -> list[str]:
    merged = list(cells)
    values = {column.lower(): value for column, value in record.values.items()}
    for position, name in enumerate(names):
        column = name.lower()
        incoming = values.get(column, "")
        if column == "status":
            current = merged[position].strip().lower() or "subscribed"
            if incoming and RANK.get(incoming, 0) > RANK.get(current, 0):
                merged[position] = incoming
        elif incoming and not merged[position].strip():
            merged[position] = incoming
    return merged

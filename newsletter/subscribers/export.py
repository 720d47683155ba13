"""`subscribers export`: rows of any store as one list in the CSV format of docs/subscribers.md
(UTF-8, comma-delimited, CRLF; the known columns first, then the others in their order), so a
repository can keep a snapshot and an import into a fresh store gives the same rows."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from newsletter.models import Subscriber
from newsletter.subscribers.csvfile import COLUMNS, KNOWN, SCOPE, list_files
from newsletter.subscribers.journal import open_list, read_loosely


def write_csv(people: Iterable[Subscriber], header: Sequence[str], out: IO[str]) -> int:
    """Write the header and one row per person (their value of each column); how many rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    count = 0
    for person in people:
        values = {(k.lower() if k.lower() in KNOWN else k): v for k, v in person.fields.items()}
        values["email"] = person.email
        writer.writerow([values.get(column, "") for column in header])
        count += 1
    return count


def csv_header(paths: Sequence[Path]) -> list[str]:
    """The export's columns for these CSV lists: the known ones, then each list's others."""
    extras: dict[str, None] = {}
    scoped = False
    for path in paths:
        with open_list(path) as reader:
            scoped = scoped or SCOPE in reader.index
            extras.update(dict.fromkeys(n for n in reader.names if n.lower() not in KNOWN))
    return [*COLUMNS, *([SCOPE] if scoped else []), *extras]


def csv_rows(paths: Sequence[Path], status: str | None) -> Iterable[Subscriber]:
    for path in paths:
        for person in read_loosely(path):
            if status is None or person.status == status:
                yield person


def export_lists(
    folder: Path, out: IO[str], lists: Sequence[Path] | None = None, status: str | None = None
) -> int:
    """The CSV lists (default: every list in subscribers/) as one CSV; how many rows."""
    paths = list_files(folder) if lists is None else list(lists)
    return write_csv(csv_rows(paths, status), csv_header(paths), out)

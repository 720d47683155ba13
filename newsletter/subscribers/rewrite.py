"""Changing a list: stream it through an Edit into a new file, atomically, under its lock.

Writing is always UTF-8, comma-delimited, CRLF (RFC 4180), keeping the column order, unknown
columns and row order.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from newsletter.fileio import atomic_write_text, locked
from newsletter.subscribers.csvfile import LIST_MODE, absent, ensure_lists_folder, open_list

# Changing a list: stream it through an Edit into a new file, atomically, under its lock


# Not a NewsletterError: rewrite() catches it to keep the list as it is; never shown.
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
        if new is not None and absent(path):
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
            writer.writerow(fit(kept, len(edit.names)))
    for cells in edit.tail():
        writer.writerow(fit(cells, len(edit.names)))


def _write_header(out: IO[str], names: list[str]) -> None:
    """The header row; every name quoted when one holds `;` or a tab, so that the list still
    reads as comma-delimited (the delimiter is guessed from the header's unquoted text)."""
    if any(";" in name or "\t" in name for name in names):
        csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL).writerow(names)
    else:
        csv.writer(out, lineterminator="\r\n").writerow(names)


def fit(cells: list[str], width: int) -> list[str]:
    if len(cells) < width:
        return cells + [""] * (width - len(cells))
    if len(cells) > width and not "".join(cells[width:]).strip():
        return cells[:width]
    return cells

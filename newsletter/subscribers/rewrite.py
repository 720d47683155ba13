"""Changing a list: stream it through an Edit into a new file, atomically, under its lock.

Every rewrite is also a fold: the list's pending journal entries (journal.py) are applied
before the edit, the new file replaces the list, then the journal is deleted. The list is
always read anew under the lock (never a copy kept from before), and if the file is replaced
or changed on disk while the new one is written (an editor saving), it is read again.

Writing is always UTF-8, comma-delimited, CRLF (RFC 4180), keeping the column order, unknown
columns and row order.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from newsletter.errors import StorageError, UnreadableList
from newsletter.fileio import atomic_write, locked
from newsletter.models import SUPPRESSING
from newsletter.people_types import StatusEvent
from newsletter.subscribers.csvfile import (
    LIST_MODE,
    ListReader,
    absent,
    ensure_lists_folder,
    open_bytes,
)
from newsletter.subscribers.edits import Chain, Edit, StatusEdit, fit
from newsletter.subscribers.journal import (
    Journal,
    Signature,
    drop_journal_leftovers,
    identity,
    journal_leftovers,
    journal_locked,
    journal_path,
    mark_fold,
    read_journal,
    signature,
    stat_signature,
    trim,
)
from newsletter.subscribers.people import People
from newsletter.subscribers.splice import splice
from newsletter.subscribers.suppression import suppress

log = logging.getLogger(__name__)

# Changing a list: stream it through an Edit into a new file, atomically, under its lock


# Not a NewsletterError: rewrite() catches it to keep the list as it is; never shown.
class _Unchanged(Exception):
    """Raised inside a rewrite that changed nothing: the temp file is dropped, the list kept."""


# Not a NewsletterError either: rewrite_locked() catches it and reads the list again.
class _Moved(Exception):
    """Raised before the rename when the list on disk is not the file that was read."""


ATTEMPTS = 10  # reads of a list that keeps changing under a rewrite before giving up


def rewrite(path: Path, edit: Edit, *, new: Sequence[str] | None = None) -> bool:
    """Apply `edit` (after the list's pending journal) to the list at `path` under its lock;
    True when `edit` changed it.

    `new` is the header of a list that does not exist yet (else a missing list is an error).
    """
    ensure_lists_folder(path)
    with locked(path):
        return rewrite_locked(path, edit, new=new)


def fold(path: Path) -> tuple[Signature, Signature] | None:
    """Fold the list's journal into the file, under its lock. The signature of the file it
    read and of the file after (taken under the lock); None when there was nothing to fold."""
    if not journal_path(path).exists():
        return None
    with locked(path):
        if not journal_path(path).exists():
            return None
        read: list[os.stat_result] = []
        _rewrite_locked(path, None, None, read)
        return (stat_signature(read[-1]) if read else signature(path)), signature(path)


def rewrite_locked(path: Path, edit: Edit, *, new: Sequence[str] | None = None) -> bool:
    """`rewrite` for a caller already holding the list's lock.

    The new file is written beside the old one while the old one is read to its end, and renamed
    over it only then: a list that cannot be read completely (UnreadableList) is never replaced.
    """
    return _rewrite_locked(path, edit, new, [])


def _rewrite_locked(
    path: Path, edit: Edit | None, new: Sequence[str] | None, read: list[os.stat_result]
) -> bool:
    """`rewrite_locked`, or with `edit` None a fold of the journal alone; `read` gets the stat
    of the file read."""
    _drop_leftovers(path)
    for _attempt in range(ATTEMPTS):
        with contextlib.suppress(_Moved):
            read.clear()
            return _fold(path, edit, new, read)
    raise UnreadableList(path, "the file kept changing while it was rewritten: try again")


def _fold(
    path: Path, edit: Edit | None, new: Sequence[str] | None, read: list[os.stat_result]
) -> bool:
    with journal_locked(path):
        pending = read_journal(path)  # entries appended later stay for the next fold

    chains: list[Chain] = []

    def write(out: IO[bytes]) -> None:
        if new is not None and absent(path):
            chain = Chain([*pending.pending(None), *([edit] if edit is not None else [])])
            with _text(out) as text:
                _write_rows(text, chain.header(list(new)), [], chain)
        else:
            chain = _write_list(path, pending, out, edit, read)
        chains.append(chain)
        if not chain.touched():
            raise _Unchanged

    with contextlib.ExitStack() as held:

        def before_rename(new_file: os.stat_result) -> None:
            if read and _moved(path, read[0]):
                raise _Moved
            if pending.entries:  # held until the entries are trimmed, after the rename
                _suppress_unheld(path, [e for e in chains[-1].edits if e is not edit])
                _record_history(path, [e for e in chains[-1].edits if e is not edit])
                held.enter_context(journal_locked(path))
                mark_fold(path, new_file, pending.end)

        try:
            atomic_write(path, write, mode=LIST_MODE, before_rename=before_rename)
        except _Unchanged:
            if read and _moved(path, read[0]):
                raise _Moved from None
            if pending.entries:
                _suppress_unheld(path, [e for e in chains[-1].edits if e is not edit])
                held.enter_context(journal_locked(path))
        if pending.entries:
            trim(path, pending.end)
    return edit is not None and edit.changed


def _suppress_unheld(path: Path, folded: Sequence[Edit]) -> None:
    """The journal's unsubscribes (bounces, complaints) of an address the list no longer holds
    (its row deleted by hand after the 200): in the suppression file, as an unsubscribe of an
    address no list holds is, before the journal that holds them goes."""
    for e in folded:
        if isinstance(e, StatusEdit) and not e.held and e.status in SUPPRESSING:
            suppress(path.parent.parent, e.key, e.status)  # the lists are in <folder>/subscribers/


def _record_history(path: Path, folded: Sequence[Edit]) -> None:
    """Add the status changes this fold puts into the list to the people's history (the
    journal's entries: `serve`'s unsubscribes). Written before the rename: a fold retried after
    a crash records them again, which people.py keeps as one (by the entry's ref). A history
    that cannot be written does not hold the list back (the change itself is what must land):
    it is logged."""
    changes = [e for e in folded if isinstance(e, StatusEdit) and e.changed]
    if not changes:
        return
    events = [(e.key, StatusEvent(path.name, e.status, e.when, e.source)) for e in changes]
    try:
        with People(path.parent.parent) as people:  # the lists are in <folder>/subscribers/
            people.record_events(events, [e.ref or None for e in changes])
    except StorageError as exc:
        log.warning("status history not recorded: %s: %s: %s", exc.path, exc.action, exc.reason)


SPLICE_FROM = 1024 * 1024  # bytes: a smaller list is rewritten row by row (as fast)


def _write_list(
    path: Path, pending: Journal, out: IO[bytes], edit: Edit | None, read: list[os.stat_result]
) -> Chain:
    """The list through its pending entries and `edit` into `out`: spliced when it can be (a
    big list, a few rows changed: splice.py), else streamed row by row. `read` gets the stat
    of the file read."""
    with open_bytes(path) as handle:
        read.append(os.fstat(handle.fileno()))
        chain = Chain([*pending.pending(identity(read[0])), *([edit] if edit is not None else [])])
        if read[0].st_size >= SPLICE_FROM:
            pieces = splice(path, handle.read(), chain)
            if pieces is not None:
                out.writelines(pieces)
                return chain
            handle.seek(0)
        reader = ListReader(path, handle)  # a row it cannot read aborts the rename
        with _text(out) as text:
            _write_rows(text, chain.header(reader.names), reader.rows(), chain)
    return chain


@contextlib.contextmanager
def _text(raw: IO[bytes]) -> Iterator[IO[str]]:
    """`raw` as UTF-8 text for the csv module (newline="": it writes CRLF itself)."""
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    try:
        yield text
        text.flush()
    finally:
        text.detach()  # leave `raw` open: atomic_write fsyncs and closes it


def _moved(path: Path, read: os.stat_result) -> bool:
    """Is the list on disk now another file, or changed, since `read` was taken?"""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    return identity(now) != identity(read) or now.st_ctime_ns != read.st_ctime_ns


def leftovers(path: Path) -> list[Path]:
    """The temp files of rewrites of `path` and of its journal killed before their rename (each
    holds rows or entries)."""
    return [*path.parent.glob(f".{path.name}.*.tmp"), *journal_leftovers(path)]


def drop_stray_temps(folder: Path) -> None:
    """Delete the temp files (`.NAME.XXXXXXXX.tmp`) of journal replacements, and of rewrites of
    lists since deleted, that killed processes left in `folder` (purge: they may hold anyone).
    Under the lock their writer held, so none being written now is touched; the leftovers of
    an existing list go with its next rewrite (`_drop_leftovers`)."""
    for temp in folder.glob(".*.tmp"):
        target = folder / temp.name[1:].rsplit(".", 2)[0]
        if target.name.startswith(".") and target.name.endswith(".journal"):
            lock = journal_locked(target.with_name(target.name[1:].removesuffix(".journal")))
        elif not target.exists():
            lock = locked(target)
        else:
            continue
        with lock, contextlib.suppress(OSError):
            temp.unlink()


def _drop_leftovers(path: Path) -> None:
    """Delete the leftovers of `path` (under its lock, no rewrite of it is running): they hold
    rows, perhaps of someone since purged."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    drop_journal_leftovers(path)


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

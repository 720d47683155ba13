"""`subscribers list` and `stats`, the merge fields of one address (`test --as`), and every row
of one address (`subscribers show`)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.addresses import address_key, key_hash
from newsletter.models import Subscriber
from newsletter.people_types import HeldRow, StatusEvent
from newsletter.subscribers.csvfile import EXAMPLE_LIST, ListReader, list_files
from newsletter.subscribers.edits import Chain, Edit, StatusEdit
from newsletter.subscribers.journal import identity, open_consistent, read_loosely
from newsletter.subscribers.suppression import Blocklist, read_suppressed


def browse(
    folder: Path, *, status: str | None = None, tags: Iterable[str] = ()
) -> Iterator[Subscriber]:
    """Every row of every list in subscribers/, unchecked, filtered by status and by tags
    (a row with any of them, as a send selects)."""
    wanted = {tag.strip().casefold() for tag in tags if tag.strip()}
    for path in list_files(folder):
        for subscriber in read_loosely(path):
            if status and subscriber.status != status:
                continue
            if wanted and not wanted & {t.casefold() for t in subscriber.tags}:
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


def rows_of(folder: Path, email: str) -> tuple[list[HeldRow], list[StatusEvent]]:
    """Every row of the address in every list (example.csv included), all its columns: what a
    data subject access request is answered with; and the status changes of the address still
    waiting in the lists' journals (`serve`'s unsubscribes: the rows show them already, the
    history gets them when they are folded). A list that cannot be read raises."""
    key = address_key(email)
    found: list[HeldRow] = []
    waiting: list[StatusEvent] = []
    for path in list_files(folder):
        journal, handle = open_consistent(path)
        with handle:
            edits = journal.pending(identity(os.fstat(handle.fileno())))
            reader = ListReader(path, handle, "email", Chain(edits) if edits else None)
            at = reader.index["email"]
            for line, cells in reader.rows():
                if address_key(cells[at]) == key:
                    found.append(HeldRow(path, line, _columns(reader.names, cells)))
        waiting.extend(_waiting(path, edits, key))
    return found, waiting


def _waiting(path: Path, edits: list[Edit], key: str) -> list[StatusEvent]:
    """The history a fold of these journal entries will record for `key` (rewrite.py)."""
    changes = [e for e in edits if isinstance(e, StatusEdit) and e.key == key and e.changed]
    return [StatusEvent(path.name, e.status, e.when, e.source) for e in changes]


def _columns(names: list[str], cells: list[str]) -> dict[str, str]:
    """Header name -> cell; a non-empty cell beyond the header is kept as `column N`."""
    columns = dict(zip(names, cells, strict=False))
    for position in range(len(names), len(cells)):
        if cells[position]:
            columns[f"column {position + 1}"] = cells[position]
    return columns

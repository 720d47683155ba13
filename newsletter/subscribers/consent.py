"""Adding and erasing people under the consent rules.

Nobody who unsubscribed, bounced or complained comes back unless they asked (`resubscribe`);
nothing but `purge` deletes a row, and `purge` leaves a hashed entry in .newsletter/suppressed so
the person cannot come back through an import.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter.addresses import address_key, ascii_address, normalise_address
from newsletter.errors import InvalidInput, Problem, Refused
from newsletter.people_types import Purged
from newsletter.store import Added
from newsletter.subscribers.csvfile import (
    COLUMNS,
    DEFAULT_LIST,
    SCOPE,
    ListReader,
    absent,
    list_files,
    lists_folder,
    name_problem,
    now,
    stamp,
)
from newsletter.subscribers.edits import AddEdit, Chain, PurgeEdit, ScopeEdit, StatusEdit
from newsletter.subscribers.journal import (
    holds,
    identity,
    journal_path,
    open_consistent,
    scrub_orphans,
)
from newsletter.subscribers.people import People
from newsletter.subscribers.rewrite import SPLICE_FROM, drop_stray_temps, leftovers, rewrite
from newsletter.subscribers.splice import rows_of
from newsletter.subscribers.status import record_history
from newsletter.subscribers.suppression import is_suppressed, suppress, unsuppress

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
        if not absent(path):
            found.extend(_found_in(path, key))
    return found


def _found_in(path: Path, key: str) -> list[Found]:
    """The rows of `key` in one list, journal applied. A big list with no pending entry about
    the address is searched by its bytes (splice.rows_of), else read row by row."""
    journal, handle = open_consistent(path)
    with handle:
        info = os.fstat(handle.fileno())
        pending = journal.pending(identity(info))
        if info.st_size >= SPLICE_FROM and all(e.key not in (key, None) for e in pending):
            spliced = rows_of(path, handle.read(), key)
            if spliced is not None:
                names, rows = spliced
                return [_found(path, names, line, cells) for line, cells in rows]
            handle.seek(0)
        reader = ListReader(path, handle, "email", Chain(pending) if pending else None)
        email = reader.index["email"]
        rows = [(line, cells) for line, cells in reader.rows() if address_key(cells[email]) == key]
        return [_found(path, reader.names, line, cells) for line, cells in rows]


def _found(path: Path, names: list[str], line: int, cells: list[str]) -> Found:
    at = {name.lower(): position for position, name in enumerate(names)}

    def cell(column: str) -> str:
        position = at.get(column)
        return cells[position].strip() if position is not None and position < len(cells) else ""

    status = cell("status").lower() or "subscribed"
    return Found(path, line, status, cell(SCOPE).lower(), cell("unsubscribed_at"))


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
    allow_reserved: bool = False,
    pending: bool = False,
) -> Added:
    """Subscribe an address to a list (default subscribers/subscribers.csv).

    pending: hold a new person as `pending` instead (a sign-up not yet confirmed); a row the
    list has already is left unchanged.

    Refused when the address is unsubscribed, bounced or complained anywhere, or suppressed,
    unless `resubscribe` (the person asked again): then their row in this list becomes subscribed
    and their other non-subscribed rows are scoped to their own lists. ReservedAddress for an
    address at a reserved name (x@y.test), unless `allow_reserved`.
    """
    stored, _smtputf8 = normalise_address(email, allow_reserved=allow_reserved)
    name = name.strip()  # Unicode whitespace too (a no-break space from a web form)
    problem = name_problem(name)
    if problem:
        raise InvalidInput.one(None, problem, field="name")
    path = list_path or lists_folder(folder) / DEFAULT_LIST
    moment = stamp(when) if when is not None else now()
    blocking = [f for f in find(folder, stored, _with(folder, path)) if _blocks_here(f, path)]
    if not resubscribe:
        _refuse_blocked(folder, stored, blocking)
    edit = AddEdit(stored, name, tags, moment, source, pending=pending)
    changed = rewrite(path, edit, new=COLUMNS)
    if resubscribe:
        changed = _resubscribe(folder, stored, path, blocking, moment) or changed
    if changed:
        status = "pending" if pending else "subscribed"
        problems = record_history(folder, stored, status, [path.name], moment, source)
        if problems:
            raise InvalidInput([*problems, Problem(None, f"{stored}: {status} anyway")])
    return Added(stored, path, created=not edit.found, changed=changed)


def _with(folder: Path, path: Path) -> list[Path]:
    return list(dict.fromkeys([*list_files(folder), path]))


def _blocks_here(found: Found, path: Path) -> bool:
    return found.status != "subscribed" and (found.scope != "list" or found.path == path)


def _refuse_blocked(folder: Path, email: str, blocking: list[Found]) -> None:
    if blocking:
        first = blocking[0]
        raise Refused(email, first.status, first.path, first.line, first.since)
    if is_suppressed(folder, email):
        raise Refused(email, "suppressed")


def _resubscribe(folder: Path, email: str, path: Path, blocking: list[Found], moment: str) -> bool:
    key = address_key(email)
    changed = rewrite(path, StatusEdit(key, "subscribed", moment))
    for other in dict.fromkeys(f.path for f in blocking if f.path != path):
        changed = rewrite(other, ScopeEdit(key)) or changed
    return unsuppress(folder, email) or changed


# purge: erasure on request


def purge(folder: Path, email: str) -> Purged:
    """Delete every row of an address from every list, after recording it as suppressed.

    The suppression entry is written first: a crash between the two steps leaves the person
    blocked, never re-importable. Every journal that may name them is folded (or, for a list
    that is gone, written again without them), and the temp files of rewrites killed midway
    are deleted. The person's history, consent, bounce and sign-up records go too. The sends'
    ledgers are scrubbed by the caller (Newsletter.purge); other copies (git history, backups)
    are not reached at all: docs/subscribers.md says so.
    """
    suppress(folder, email, "purged")
    key = address_key(email)
    rows = 0
    files: list[Path] = []
    broken: list[Problem] = []
    scrub_orphans(lists_folder(folder), key)
    drop_stray_temps(lists_folder(folder))
    for path in list_files(folder):
        try:  # a journal or a leftover may name them where no row does: a rewrite deletes both
            if not journal_path(path).exists() and not leftovers(path) and not holds(path, key):
                continue
            edit = PurgeEdit(key)
            if rewrite(path, edit):
                rows += edit.deleted
                files.append(path)
        except InvalidInput as exc:  # one broken list must not keep the others unerased
            broken.extend(exc.problems)
    with People(folder) as people:  # after the folds: they write the history of what they fold
        people.forget(email)
    elsewhere = _held_elsewhere(folder, key)
    if broken:
        done = f"; erased from {', '.join(map(str, files))}" if files else ""
        note = f"{email}: suppressed{done}; fix the lists above, then purge again"
        raise InvalidInput([*broken, Problem(None, note)])
    return Purged(email, rows, files, elsewhere)


def _held_elsewhere(folder: Path, key: str) -> list[Path]:
    """The files under subscribers/ that are no list, journal or lock (an editor's backup
    `news.csv~`, an export) and hold the address in some spelling: purge cannot edit them."""
    own = {*list_files(folder), *(journal_path(p) for p in list_files(folder))}
    forms = {key, ascii_address(key).casefold()}  # the domain as written or in punycode
    found = []
    for path in sorted(lists_folder(folder).rglob("*")):
        if path in own or path.name.endswith(".lock") or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            text = unicodedata.normalize("NFC", path.read_bytes().decode(errors="replace"))
            if any(form in text.casefold() for form in forms):
                found.append(path)
    return found

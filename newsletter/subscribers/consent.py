"""Adding and erasing people under the consent rules.

Nobody who unsubscribed, bounced or complained comes back unless they asked (`resubscribe`);
nothing but `purge` deletes a row, and `purge` leaves a hashed entry in .newsletter/suppressed so
the person cannot come back through an import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter.addresses import address_key, normalise_address
from newsletter.errors import InvalidInput, Problem, Refused
from newsletter.store import Added, Purged
from newsletter.subscribers.csvfile import (
    COLUMNS,
    DEFAULT_LIST,
    SCOPE,
    RowParser,
    absent,
    holds,
    join_tags,
    list_files,
    lists_folder,
    name_problem,
    now,
    open_list,
    split_tags,
    stamp,
)
from newsletter.subscribers.people import People
from newsletter.subscribers.rewrite import Edit, fit, rewrite
from newsletter.subscribers.status import StatusEdit, record_history
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
        if absent(path):
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
    """Append a subscriber, or complete the row the list already has for them.

    pending: append a `pending` row kept to this list (a sign-up waiting for confirmation must
    not block the person's other lists), and leave a row the list already has as it is."""

    def __init__(
        self,
        email: str,
        name: str,
        tags: Sequence[str],
        when: str,
        source: str,
        *,
        pending: bool = False,
    ) -> None:
        super().__init__()
        self.email, self.key, self.name = email, address_key(email), name
        self.tags, self.when, self.source = [t.strip() for t in tags if t.strip()], when, source
        self.found = False
        self.pending = pending

    def header(self, names: list[str]) -> list[str]:
        super().header(names)
        columns = ("email", "status", "subscribed_at", "source", *([SCOPE] * self.pending))
        self.at = {c: self.column(c) for c in columns}
        if self.name:
            self.at["name"] = self.column("name")
        if self.tags:
            self.at["tags"] = self.column("tags")
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        if self.found or address_key(cells[self.at["email"]]) != self.key:
            return cells
        self.found = True
        if self.pending:
            return cells
        cells = fit(cells, len(self.names))
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
        if self.pending:  # subscribed_at is set when they confirm
            values |= {"status": "pending", "subscribed_at": "", SCOPE: "list"}
        for column, position in self.at.items():
            cells[position] = values[column]
        self.changed = True
        return [cells]


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
        cells = fit(cells, len(self.names))
        if (cells[self.status].strip() or "subscribed") != "subscribed" and cells[
            self.scope
        ] != "list":
            cells[self.scope] = "list"
            self.changed = True
        return cells


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


def purge(folder: Path, email: str) -> Purged:
    """Delete every row of an address from every list, after recording it as suppressed.

    The suppression entry is written first: a crash between the two steps leaves the person
    blocked, never re-importable. The person's history, consent and bounce records go too.
    Other copies (git history, backups, a send's ledger) are not
    reached from here: docs/subscribers.md says so.
    """
    suppress(folder, email, "purged")
    with People(folder) as people:
        people.forget(email)
    key = address_key(email)
    rows = 0
    files: list[Path] = []
    broken: list[Problem] = []
    for path in list_files(folder):
        try:
            if not holds(path, key):
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

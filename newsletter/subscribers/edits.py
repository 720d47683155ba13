"""Edits: what one change does to a list's rows, streamed (rewrite) or applied on reading
(journal): a status change, an add, a scope, a purge.

Each journaled edit is also a journal entry (`entry()`, read back by `from_entry`): the
journal stores what was asked, never a copy of a row, so that it applies to the list as it is
when folded, hand edits included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from newsletter.addresses import address_key
from newsletter.models import SUPPRESSING, Status
from newsletter.subscribers.csvfile import RANK, SCOPE, join_tags, split_tags


class Edit:
    """What one rewrite does to a list. Hooks: header, row (None deletes it), tail (appended).

    `key`: the address key of the only rows it touches (None: any row). `entry()`: the edit as
    a journal entry (None: it is never journaled), made back into an edit by `from_entry`.
    """

    key: str | None = None

    def __init__(self) -> None:
        self.ref = ""  # the journal entry it was made from ("nonce:offset"), "" when none
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

    def entry(self) -> dict[str, Any] | None:
        return None


def fit(cells: list[str], width: int) -> list[str]:
    if len(cells) < width:
        return cells + [""] * (width - len(cells))
    if len(cells) > width and not "".join(cells[width:]).strip():
        return cells[:width]
    return cells


class StatusEdit(Edit):
    """Set the status of every row of one address, never weakening a stronger suppression."""

    key: str

    def __init__(
        self, key: str, status: Status, when: str, *, scope_list: bool = False, source: str = ""
    ) -> None:
        super().__init__()
        self.key, self.status, self.when, self.scope_list = key, status, when, scope_list
        self.source = source  # who asked ("unsubscribe link"): the person's history keeps it
        self.held = False

    def entry(self) -> dict[str, Any]:
        scope = {"scope_list": True} if self.scope_list else {}
        source = {"source": self.source} if self.source else {}
        return {"op": "status", "key": self.key, "status": self.status, "when": self.when} | (
            scope | source
        )

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
        cells = fit(cells, len(self.names))
        current = cells[self.status_at].strip().lower() or "subscribed"
        if not should_change(current, self.status):
            return cells
        cells[self.status_at] = self.status
        cells[self.stamp_at] = self.when
        if self.scope_at >= 0:
            cells[self.scope_at] = "list" if self.scope_list else ""
        if self.status == "subscribed" and "unsubscribed_at" in self.lowered:
            cells[self.lowered["unsubscribed_at"]] = ""
        self.changed = True
        return cells


def should_change(current: str, new: Status) -> bool:
    if new in SUPPRESSING:
        return RANK.get(current, 0) < RANK[new]
    if new == "pending":
        return current == "subscribed"
    return current != "subscribed"


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

    def entry(self) -> dict[str, Any]:
        return {
            "op": "add",
            "email": self.email,
            "name": self.name,
            "tags": self.tags,
            "when": self.when,
            "source": self.source,
            **({"pending": True} if self.pending else {}),
        }

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


class ScopeEdit(Edit):
    """Keep an address's non-subscribed rows to their own list (scope = list)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def entry(self) -> dict[str, Any]:
        return {"op": "scope", "key": self.key}

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


class PurgeEdit(Edit):
    """Delete every row of one address (never journaled: purge rewrites at once)."""

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


class Chain(Edit):
    """Edits applied in order as one. A row goes through the edits of its address and those
    of any address (one key lookup per row, however many edits); a row an edit appends goes
    through the edits after it (an add, then an unsubscribe of the same address)."""

    def __init__(self, edits: Sequence[Edit]) -> None:
        super().__init__()
        self.edits = list(edits)
        self.by_key: dict[str | None, list[int]] = {}
        for position, edit in enumerate(self.edits):
            self.by_key.setdefault(edit.key, []).append(position)
        self.email = 0

    def header(self, names: list[str]) -> list[str]:
        for edit in self.edits:
            names = edit.header(names)
        super().header(names)
        self.email = self.column("email")
        return self.names

    def row(self, line: int, cells: list[str]) -> list[str] | None:
        return self._through(line, cells, -1)

    def tail(self) -> Iterable[list[str]]:
        for position, edit in enumerate(self.edits):
            for cells in edit.tail():
                kept = self._through(0, cells, position)
                if kept is not None:
                    yield kept

    def touched(self) -> bool:
        """Did any of the edits change a row (read after the rows and the tail)?"""
        return any(edit.changed for edit in self.edits)

    def _through(self, line: int, cells: list[str], after: int) -> list[str] | None:
        keyed = self.by_key.get(address_key(cells[self.email]), [])
        anyone = self.by_key.get(None, [])
        for position in sorted(keyed + anyone) if anyone else keyed:
            if position > after:
                kept = self.edits[position].row(line, cells)
                if kept is None:
                    return None
                cells = kept
        return cells


def from_entry(entry: dict[str, Any]) -> Edit:
    """The edit a journal entry records; ValueError (KeyError, TypeError) for one it cannot be."""
    op = entry["op"]
    if op == "status":
        status = cast(Status, entry["status"])
        if status not in RANK:
            raise ValueError(f"unknown status {status!r}")
        return StatusEdit(
            entry["key"],
            status,
            entry["when"],
            scope_list=entry.get("scope_list", False),
            source=str(entry.get("source", "")),
        )
    if op == "add":
        tags = [str(tag) for tag in entry["tags"]]
        pending = entry.get("pending", False) is True
        return AddEdit(
            entry["email"], entry["name"], tags, entry["when"], entry["source"], pending=pending
        )
    if op == "scope":
        return ScopeEdit(entry["key"])
    raise ValueError(f"unknown journal entry {op!r}")

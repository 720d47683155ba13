"""The selection used by sending: the lists' subscribed rows, deduplicated and suppressed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from newsletter.addresses import address_key, key_hash, normalise_address
from newsletter.errors import BadAddress
from newsletter.models import Subscriber
from newsletter.subscribers.csvfile import RANK, RowParser, list_files, split_tags
from newsletter.subscribers.journal import open_list
from newsletter.subscribers.suppression import Blocklist, Blocks

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


class Selection:
    """The recipients of a send: iterate for deduplicated, suppressed Subscribers in stable order.

    Order: the lists in the order given (by default every list but example.csv, by file name),
    rows in file order; an address gets its first subscribed row that passes the tag filter.
    After iteration `left_out` counts the rows left out, by reason.
    """

    def __init__(
        self,
        folder: Path,
        lists: Sequence[Path] | None,
        tags: Sequence[str],
        allow_reserved: bool = False,
    ) -> None:
        self.folder = folder
        self.allow_reserved = allow_reserved  # else an address at a reserved name is `invalid`
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
                    left_out[status if status in RANK else "invalid"] += 1
                    continue
                self.subscribed += 1
                compact = key_hash(address_key(cells[parser.email]))
                reason = self._reason(parser, cells, compact, blocks, seen)
                if reason:
                    left_out[reason] += 1
                    continue
                try:
                    email, smtputf8 = normalise_address(
                        cells[parser.email], allow_reserved=self.allow_reserved
                    )
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
    """A list as the user knows it: relative to the newsletter folder when inside it; a list of
    the store ([store] url) by its name."""
    if store_list(str(path)):
        return str(path)
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def store_list(name: str) -> bool:
    """Is this a list of the store (a bare name), not a CSV file?"""
    return "/" not in name and not name.lower().endswith(".csv")


def _folded_tags(cell: str) -> set[str]:
    return {tag.casefold() for tag in split_tags(cell)}


def select(
    folder: Path,
    lists: Sequence[Path] | None = None,
    tags: Sequence[str] = (),
    *,
    allow_reserved: bool = False,
) -> Selection:
    """The recipients of a send to `lists` (default: every list but example.csv) and `tags`.

    A subscriber matches the tags when they have at least one of them (no tags: everyone).
    An address at a reserved name (addresses.reserved_name) is left out as `invalid` unless
    `allow_reserved`.
    """
    return Selection(folder, lists, tags, allow_reserved)

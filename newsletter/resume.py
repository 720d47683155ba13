"""What a resume checks and adds before it sends (docs/sending.md: "Resume").

- The selection: a resume asks for the lists and tags of the send's first plan (recorded in
  the ledger by `sends.snapshot`), or with `--add-new` a wider one; `add_new_readers` says
  who that adds and why.
- Bounces: 5.1.x refusals the ledger holds and the lists do not show yet (a run killed between
  the two) are applied, decided by reading the lists.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.errors import SelectionChanged
from newsletter.models import Subscriber
from newsletter.sends import entry, record_selection
from newsletter.subscribers import store_list

if TYPE_CHECKING:
    from newsletter.store import Recipients, SendLedger


def check_selection(ledger: SendLedger, selection: Recipients, issue: str, *, add_new: bool) -> str:
    """Refuse a resume that asks for other lists or tags than its snapshot; a note or "".

    With `add_new` the selection may widen the snapshot's (more lists, no or more tags): it
    becomes the send's selection. Ledgers of older versions recorded their lists only.
    """
    if not ledger.fixed():
        return ""
    asked = selection.spec()
    stored = _stored_selection(ledger, asked)
    if stored is None:
        return "this send's ledger does not record its lists or tags: not checked"
    root = selection.folder
    if _same(stored, asked, root) or (add_new and _widens(asked, stored, root)):
        recorded = ledger.get_json("selection", None) is not None
        return "" if recorded else "this send's ledger does not record its tags: not checked"
    raise SelectionChanged(_changed_message(stored, asked, root, issue), stored, asked)


def _stored_selection(ledger: SendLedger, asked: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot's selection; for an older ledger its lists and, unknown, the tags asked."""
    stored: dict[str, Any] | None = ledger.get_json("selection", None)
    if stored is None:
        lists = ledger.get_json("lists", None)
        return None if lists is None else {"default": False, "lists": lists, "tags": asked["tags"]}
    return stored


def _files(spec: dict[str, Any], root: Path) -> set[Path]:
    return {(root / p).resolve() for p in spec["lists"]}


def _same(stored: dict[str, Any], asked: dict[str, Any], root: Path) -> bool:
    both_default = stored["default"] and asked["default"]  # lists added since: --add-new
    same_lists = both_default or _files(stored, root) == _files(asked, root)
    return same_lists and set(stored["tags"]) == set(asked["tags"])


def _widens(asked: dict[str, Any], stored: dict[str, Any], root: Path) -> bool:
    both_default = stored["default"] and asked["default"]
    lists = both_default or _files(asked, root) >= _files(stored, root)
    tags = not asked["tags"] or (bool(stored["tags"]) and set(asked["tags"]) >= set(stored["tags"]))
    return lists and tags


def _changed_message(stored: dict[str, Any], asked: dict[str, Any], root: Path, issue: str) -> str:
    union_lists = list(dict.fromkeys([*stored["lists"], *asked["lists"]]))
    both_tagged = stored["tags"] and asked["tags"]
    union = {
        "default": stored["default"] and asked["default"],
        "lists": union_lists,
        "tags": sorted({*stored["tags"], *asked["tags"]}) if both_tagged else [],
    }
    return (
        f"this send was started with {describe(stored, 'then')}; this command asks for "
        f"{describe(asked, 'now')}. A resume only sends to the readers of its first plan. To go "
        f"on as started: `newsletter send {issue}{selection_args(stored, root)} --yes`; to "
        f"also send to who your selection has and the first plan lacks: "
        f"`newsletter send {issue}{selection_args(union, root)} --add-new --yes`"
    )


def describe(spec: dict[str, Any], when: str) -> str:
    """A selection in words: `every list (then a.csv) and tag 'x'`."""
    lists = ", ".join(spec["lists"]) or "none"
    where = f"every list ({when}: {lists})" if spec["default"] else f"list(s) {lists}"
    tags = ", ".join(repr(t) for t in spec["tags"])
    return f"{where} and " + (f"tag(s) {tags}" if tags else "no tag filter")


def selection_args(spec: dict[str, Any], root: Path) -> str:
    """The --list/--tag options that ask for `spec` again, from any folder."""
    if spec["default"]:
        lists: list[str] = []
    else:
        lists = [_list_arg(root / p, root) for p in spec["lists"]]
    return "".join(f" --list {a}" for a in lists) + "".join(
        f" --tag {shlex.quote(t)}" for t in spec["tags"]
    )


def _list_arg(given: Path, root: Path) -> str:
    if given.parent == root and store_list(given.name):
        return shlex.quote(given.name)  # a list of the store, by its name
    path = given.resolve()
    if path.parent == (root / "subscribers").resolve():
        return shlex.quote(path.name)  # a bare name means subscribers/NAME wherever you are
    return shlex.quote(str(path))


@dataclass(frozen=True)
class Joined:
    """Someone `--add-new` adds to a send, and why they were not in its snapshot."""

    email: str
    why: str


def add_new_readers(
    ledger: SendLedger, selection: Recipients, used: Collection[str]
) -> list[Joined]:
    """`send --add-new` on a started send: add who the selection has and the ledger lacks."""
    from newsletter.addresses import address_key

    stored = _stored_selection(ledger, selection.spec())
    root = selection.folder
    lists = _files(stored, root) if stored else None
    tags = set(stored["tags"]) if stored else set()
    since = float(ledger.get("snapshot_at") or 0.0)
    joined = [s for s in selection if not ledger.contains(address_key(s.email))]
    ledger.add(entry(s, used) for s in joined)
    record_selection(ledger, selection)  # checked: it holds the snapshot's (check_selection)
    return [Joined(s.email, _why_new(s, root, lists, tags, since)) for s in joined]


def _why_new(
    subscriber: Subscriber, root: Path, lists: set[Path] | None, tags: set[str], since: float
) -> str:
    from newsletter.subscribers import shown, subscribed_since

    path = subscriber.list_path or root
    where = shown(root, path)
    if lists is not None and (root / path).resolve() not in lists:
        return f"on {where}, a list the snapshot did not include"
    if tags and not tags & {t.casefold() for t in subscriber.tags}:
        return f"on {where}, without a tag of the snapshot ({', '.join(sorted(tags))})"
    if since and subscribed_since(subscriber, since):
        return f"on {where}, subscribed since the first run"
    return f"on {where}, not in the snapshot (the row was added or changed since)"

"""The CSV lists as the subscriber store (store.SubscriberStore): the embedded default.

What the API, the send loop and the unsubscribe endpoint call; each method is one of the
functions of this package, bound to the newsletter folder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from newsletter.models import Status, Subscriber
from newsletter.store import Added, Blocked, Bounce, Held, Purged, Recipients, StatusChange
from newsletter.subscribers.consent import add, purge
from newsletter.subscribers.listing import lookup, rows_of
from newsletter.subscribers.people import People, people_path
from newsletter.subscribers.selection import select
from newsletter.subscribers.status import apply_status, bounces_to_apply
from newsletter.subscribers.suppression import Blocklist, suppress, suppression_reason


class CsvStore:
    """The CSV lists in subscribers/ and the suppression file in .newsletter/.

    allow_reserved: addresses at reserved names (x@y.test) may be added and selected
    ([newsletter] allow_reserved_domains); else `add` refuses them and `select` leaves them out.
    """

    def __init__(self, folder: Path, *, allow_reserved: bool = False) -> None:
        self.folder = folder
        self.allow_reserved = allow_reserved

    def select(self, lists: Sequence[Path] | None = None, tags: Sequence[str] = ()) -> Recipients:
        return select(self.folder, lists, tags, allow_reserved=self.allow_reserved)

    def lookup(self, email: str) -> Subscriber | None:
        return lookup(self.folder, email)

    def add(
        self,
        email: str,
        *,
        name: str = "",
        tags: Sequence[str] = (),
        list_path: Path | None = None,
        resubscribe: bool = False,
    ) -> Added:
        return add(
            self.folder,
            email,
            name=name,
            tags=tags,
            list_path=list_path,
            resubscribe=resubscribe,
            allow_reserved=self.allow_reserved,
        )

    def set_status(
        self, email: str, status: Status, *, when: dt.datetime | None = None, source: str = ""
    ) -> StatusChange:
        return apply_status(self.folder, email, status, when=when, source=source)

    def suppress(self, email: str, reason: str) -> bool:
        return suppress(self.folder, email, reason)

    def held(self, email: str) -> Held:
        rows = rows_of(self.folder, email)
        reason = suppression_reason(self.folder, email)
        if not people_path(self.folder).is_file():  # looking creates nothing
            return Held(tuple(rows), reason, (), (), ())
        with People(self.folder) as people:
            history, consents = people.history(email), people.consents(email)
            soft = people.soft_bounces(email)
        return Held(tuple(rows), reason, tuple(history), tuple(consents), tuple(soft))

    def purge(self, email: str) -> Purged:
        return purge(self.folder, email)

    def apply_bounces(self, bounces: Sequence[Bounce]) -> list[StatusChange]:
        """Decided by reading the lists (not a mark in a ledger), so it is idempotent and never
        undoes a later re-subscription (bounces_to_apply)."""
        refusals = [(b.email, b.at) for b in bounces]
        when = dict(refusals)  # oldest first: an address's latest refusal wins
        return [
            apply_status(
                self.folder, email, "bounced", when=_utc(when[email]), source="bounce during send"
            )
            for email in bounces_to_apply(self.folder, refusals)
        ]

    def watch(self, recipients: Recipients) -> Blocked:
        """Cheap between batches: re-reads only the lists (and suppressions) that changed."""
        blocklist = Blocklist(self.folder, recipients.lists)
        first = [True]

        def blocked() -> set[tuple[int, str]]:
            if not (blocklist.refresh() or first.pop() if first else blocklist.refresh()):
                return set()
            blocks = blocklist.blocks()
            pairs = {(k, "") for k in blocks.everywhere}
            pairs.update((k, str(p)) for p, keys in blocks.by_list.items() for k in keys)
            return pairs

        return blocked


def _utc(unix: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)

"""The CSV lists as the subscriber store (store.SubscriberStore): the embedded default.

What the API, the send loop and the unsubscribe endpoint call; each method is one of the
functions of this package, bound to the newsletter folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path

from newsletter.models import Status, Subscriber
from newsletter.store import Added, Blocked, Bounce, Recipients, StatusChange
from newsletter.subscribers.batch import Batch
from newsletter.subscribers.consent import add
from newsletter.subscribers.listing import lookup
from newsletter.subscribers.selection import select
from newsletter.subscribers.status import apply_status, bounces_to_apply
from newsletter.subscribers.suppression import Blocklist, suppress


class CsvStore:
    """The CSV lists in subscribers/ and the suppression file in .newsletter/.

    allow_reserved: addresses at reserved names (x@y.test) may be added and selected
    ([newsletter] allow_reserved_domains); else `add` refuses them and `select` leaves them out.
    """

    def __init__(self, folder: Path, *, allow_reserved: bool = False) -> None:
        self.folder = folder
        self.allow_reserved = allow_reserved
        self._batch: Batch | None = None

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
        self, email: str, status: Status, *, when: dt.datetime | None = None
    ) -> StatusChange:
        return apply_status(self.folder, email, status, when=when, batch=self._batch)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Inside: `set_status` appends to the lists' journals (durable when it returns, one
        fsync shared by concurrent calls), folded into the files within batch.FOLD_AFTER
        seconds and before the block ends."""
        batch = self._batch = Batch(self.folder)
        try:
            yield
        finally:
            self._batch = None
            batch.close()

    def suppress(self, email: str, reason: str) -> bool:
        return suppress(self.folder, email, reason)

    def apply_bounces(self, bounces: Sequence[Bounce]) -> list[StatusChange]:
        """Decided by reading the lists (not a mark in a ledger), so it is idempotent and never
        undoes a later re-subscription (bounces_to_apply)."""
        refusals = [(b.email, b.at) for b in bounces]
        when = dict(refusals)  # oldest first: an address's latest refusal wins
        return [
            apply_status(self.folder, email, "bounced", when=_utc(when[email]))
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

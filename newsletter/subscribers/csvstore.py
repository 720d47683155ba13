"""The CSV lists as the subscriber store (store.SubscriberStore): the embedded default.

What the API, the send loop and the web endpoints (unsubscribe, sign-up) call; each method is
one of the functions of this package, bound to the newsletter folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path

from newsletter.errors import Refused
from newsletter.models import Status, Subscriber
from newsletter.people_types import Held, Purged
from newsletter.store import (
    PURGED,
    Added,
    Blocked,
    Bounce,
    Confirmed,
    Recipients,
    Signup,
    StatusChange,
)
from newsletter.subscribers.batch import Batch
from newsletter.subscribers.consent import add, purge
from newsletter.subscribers.csvfile import DEFAULT_LIST, lists_folder, stamp
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
        self, email: str, status: Status, *, when: dt.datetime | None = None, source: str = ""
    ) -> StatusChange:
        return apply_status(self.folder, email, status, when=when, source=source, batch=self._batch)

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

    def held(self, email: str) -> Held:
        rows, waiting = rows_of(self.folder, email)
        reason = suppression_reason(self.folder, email)
        if not people_path(self.folder).is_file():  # looking creates nothing
            return Held(tuple(rows), reason, tuple(waiting), (), ())
        with People(self.folder) as people:
            history, consents = people.history(email), people.consents(email)
            soft, signups = people.soft_bounces(email), people.signups(email)
        history += [e for e in waiting if e not in history]  # folded meanwhile: once
        return Held(
            tuple(rows), reason, tuple(history), tuple(consents), tuple(soft), tuple(signups)
        )

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

    def soft_bounce(
        self, email: str, *, issue: str, status: str, at: dt.datetime, window_days: int
    ) -> int:
        """Counted in the folder's .newsletter/people.sqlite (People)."""
        with People(self.folder) as people:
            return people.soft_bounce(
                email, issue=issue, status=status, at=at, window_days=window_days
            )

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
            pairs.update((k, PURGED) for k in blocks.purged)
            return pairs

        return blocked

    def request_signup(self, signup: Signup, *, since: dt.datetime) -> bool:
        """The request goes into people.sqlite (which also keeps the address from asking
        again too soon), a new person into the list as `pending`."""
        path, asked = self._asked(signup)
        with People(self.folder) as people:
            fresh = people.ask(
                signup.email, name=signup.name, consent=signup.consent, since=stamp(since), **asked
            )
            if not fresh:
                return False
            try:
                self._hold(signup, path)
            except BaseException:
                people.withdraw(signup.email, **asked)  # not held: they may ask again at once
                raise
        return True

    def withdraw_signup(self, signup: Signup) -> None:
        with People(self.folder) as people:
            people.withdraw(signup.email, **self._asked(signup)[1])

    def _asked(self, signup: Signup) -> tuple[Path, dict[str, str]]:
        """The list of a sign-up, and how people.sqlite names the request."""
        path = signup.list_path or lists_folder(self.folder) / DEFAULT_LIST
        return path, {"list_name": path.name, "at": stamp(signup.asked_at)}

    def _hold(self, signup: Signup, path: Path) -> None:
        # Refused: unsubscribed, bounced, complained or suppressed: only confirming brings them
        # back, and a suppressed (purged) address is not written into a list by a mere request
        with contextlib.suppress(Refused):
            add(
                self.folder,
                signup.email,
                name=signup.name,
                list_path=path,
                source="web form",
                when=signup.asked_at,
                allow_reserved=self.allow_reserved,
                pending=True,
            )

    def confirm_signup(
        self, email: str, list_path: Path | None, asked_at: dt.datetime, *, when: dt.datetime
    ) -> Confirmed:
        """Subscribed first (durable in the list), then the consent record: a crash between
        the two leaves the request unconfirmed, and following the link again completes it."""
        path = list_path or lists_folder(self.folder) / DEFAULT_LIST
        with People(self.folder) as people:
            request = people.signup(email, list_name=path.name, at=stamp(asked_at))
            if request is None:
                return Confirmed.UNKNOWN
            if request.confirmed_at:
                return Confirmed.ALREADY
            add(
                self.folder,
                request.email,
                name=request.name,
                list_path=path,
                source="web form",
                resubscribe=True,
                when=when,
                allow_reserved=self.allow_reserved,
            )
            done = people.confirm(request, confirmed_at=stamp(when))
        return Confirmed.SUBSCRIBED if done else Confirmed.ALREADY


def _utc(unix: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)

"""The storage seam: where readers live, and what each send recorded.

Two small protocols: `SubscriberStore` (read a selection as a stream, change a status durably,
add, suppress, look up) and `SendLedger` (snapshot, claim, record, recover, report). The API,
the send loop (dispatch) and the unsubscribe endpoint (serve) reach storage only through them.
The embedded default is `CsvStore` (the CSV lists and the suppression file in the folder,
newsletter.subscribers) with `ledger.Ledger` (one SQLite file per send); a second
implementation (PostgreSQL) plugs in behind the same protocols (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from newsletter.ledger import Entry, Failure, Row
    from newsletter.models import Status, Subscriber
    from newsletter.subscribers import Added, StatusChange

Blocked = Callable[[], set[tuple[int, str]]]  # (address hash, list or "") that must get no mail


class Recipients(Protocol):
    """The readers a send selects: iterating streams them (deduplicated, the unsubscribed,
    suppressed and untagged left out); afterwards `left_out` counts those, by reason."""

    folder: Path
    default: bool  # no lists named: every list (resolved anew by a resume)
    lists: list[Path]
    tags: frozenset[str]
    left_out: dict[str, int]
    empty_lists: list[Path]  # lists that gave nobody

    def __iter__(self) -> Iterator[Subscriber]: ...

    def spec(self) -> dict[str, Any]:
        """What was asked, resolved: the ledger keeps it so a resume can be compared."""
        ...

    def why_empty(self) -> str: ...


class SubscriberStore(Protocol):
    """The readers of a newsletter, their status and consent, and the suppression list."""

    def select(self, lists: Sequence[Path] | None = None, tags: Sequence[str] = ()) -> Recipients:
        """The recipients of a send to `lists` (default: every list) with any of `tags`."""
        ...

    def lookup(self, email: str) -> Subscriber | None: ...

    def add(
        self,
        email: str,
        *,
        name: str = "",
        tags: Sequence[str] = (),
        list_path: Path | None = None,
        resubscribe: bool = False,
    ) -> Added: ...

    def set_status(
        self, email: str, status: Status, *, when: dt.datetime | None = None
    ) -> StatusChange:
        """Durable when it returns. A place that could not be changed is in `.broken`; then
        (for a status that stops mail) the address is suppressed, so no change is lost."""
        ...

    def suppress(self, email: str, reason: str) -> bool:
        """Never mail or import the address again; False if it already was."""
        ...

    def apply_refusals(self, failures: Iterable[Failure]) -> list[StatusChange]:
        """Mark `bounced` the 5.1.x refusals of earlier sends the store does not show yet."""
        ...

    def watch(self, recipients: Recipients) -> Blocked:
        """For the send loop, between batches: who must get no mail now (cheap when nothing
        changed)."""
        ...


class SendLedger(Protocol):
    """One send's record of every recipient (ledger.Ledger). One writer at a time (the send
    lock); a row is durably `sending` before its data goes out, so nobody is mailed twice."""

    # snapshot
    def reset(self) -> None: ...
    def add(self, entries: Iterable[Entry]) -> int: ...
    def put(self, name: str, value: str) -> None: ...
    def put_json(self, name: str, value: Any) -> None: ...
    def get(self, name: str, default: str = "") -> str: ...
    def get_json(self, name: str, default: Any) -> Any: ...
    def save(self) -> None: ...

    # claim
    def pending(self, after_id: int, limit: int) -> list[Row]: ...
    def deferred(self) -> list[tuple[Row, float]]: ...
    def attempt_times(self, since: float) -> list[float]: ...

    # record
    def start(self, row_id: int, now: float | None = None) -> None: ...
    def sent(self, row_id: int, code: int, reply: str, now: float | None = None) -> None: ...
    def failed(
        self, row_id: int, code: int | None, reply: str, now: float | None = None
    ) -> None: ...
    def unknown(self, row_id: int, reason: str, now: float | None = None) -> None: ...
    def defer(
        self, row_id: int, code: int | None, reply: str, retry_at: float, now: float | None = None
    ) -> None: ...
    def release(self, row_id: int) -> None: ...
    def skip(self, blocked: Iterable[tuple[int, str]], reason: str) -> list[int]: ...
    def commit(self) -> None: ...
    def sync(self) -> None: ...

    # recover
    def recover(self) -> int: ...
    def retry_now(self) -> int: ...
    def resend_unknown(self) -> int: ...

    # report
    def attempted(self) -> int: ...
    def counts(self, *, live: bool = False) -> dict[str, int]: ...
    def emails(self, *states: int) -> Iterator[str]: ...
    def failures(self) -> Iterator[Failure]: ...
    def close(self) -> None: ...


class CsvStore:
    """The embedded default: the CSV lists in subscribers/ and the suppression file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def select(self, lists: Sequence[Path] | None = None, tags: Sequence[str] = ()) -> Recipients:
        from newsletter.subscribers import select

        return select(self.folder, lists, tags)

    def lookup(self, email: str) -> Subscriber | None:
        from newsletter.subscribers import lookup

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
        from newsletter.subscribers import add

        return add(
            self.folder, email, name=name, tags=tags, list_path=list_path, resubscribe=resubscribe
        )

    def set_status(
        self, email: str, status: Status, *, when: dt.datetime | None = None
    ) -> StatusChange:
        from newsletter.subscribers import apply_status

        return apply_status(self.folder, email, status, when=when)

    def suppress(self, email: str, reason: str) -> bool:
        from newsletter.subscribers import suppress

        return suppress(self.folder, email, reason)

    def apply_refusals(self, failures: Iterable[Failure]) -> list[StatusChange]:
        from newsletter.resume import apply_refusals

        return apply_refusals(failures, self.folder)

    def watch(self, recipients: Recipients) -> Blocked:
        from newsletter.subscribers import Blocklist

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


def bouncer(store: SubscriberStore) -> Callable[[str], Awaitable[None]]:
    """For the send loop: a 5.1.x refusal marks the address `bounced`, off the event loop."""

    async def bounce(email: str) -> None:
        from newsletter.subscribers import completed

        completed(await asyncio.to_thread(store.set_status, email, "bounced"))

    return bounce

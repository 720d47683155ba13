"""The storage seam: where readers live, and what each send recorded.

Small protocols: `SubscriberStore` (read a selection as a stream, change a status durably, add,
suppress, look up), `SendLedger` (one send: snapshot, claim, record, recover, report) and
`Sends` (every send: open, find, list, lock). The API, the send loop (dispatch) and the
unsubscribe endpoint (serve) reach storage only through them.

The embedded default is `subscribers.CsvStore` (the CSV lists and the suppression file in the
folder) with `sends.LedgerFolder` (one SQLite `ledger.Ledger` file per send); a second
implementation (PostgreSQL) plugs in behind the same protocols (docs/architecture.md). The data
that crosses the seam is defined here too (what is held on one person, in people_types.py), so
callers need nothing from an implementation.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from newsletter.errors import InvalidInput, Problem
from newsletter.models import SUPPRESSING, Status, Subscriber
from newsletter.people_types import Held, Purged, Scrubbed, SendOutcome

# ---------------------------------------------------------------------------------------------
# What crosses the seam


class State(enum.IntEnum):
    """A recipient's state (the module docstring says what each means). The ledger stores the
    integer: these values are the file format, so never renumber them."""

    PENDING = 0
    SENDING = 1
    SENT = 2
    DEFERRED = 3
    FAILED = 4
    UNKNOWN = 5
    SKIPPED = 6

    @property
    def label(self) -> str:
        """The name in `Ledger.counts()` and the JSON report: "pending", "sent", ..."""
        return self.name.lower()


ERASED = "erased on request"  # the reply of a ledger row whose person was purged


@dataclass(frozen=True)
class Entry:
    """One recipient of the plan, as the ledger stores it."""

    key: str  # the address key (subscribers.address_key): one row per person
    email: str
    name: str = ""
    list_path: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    id: int
    email: str
    name: str
    list_path: str
    fields: Mapping[str, str]
    attempts: int = 0


@dataclass(frozen=True)
class Failure:
    email: str
    code: int | None
    reply: str
    at: float = 0.0  # unix time of the refusal


@dataclass(frozen=True)
class SendSummary:
    """One send as the list of sends shows it, read without changing it."""

    path: Path  # its ledger
    slug: str  # the issue's
    destination: str  # "" when an older ledger did not record it (only "outbox" is inferred)
    content: str  # Rendered.content; "" when not recorded
    sent: int
    unknown: int  # in doubt, including attempts a killed process left `sending`
    continued_from: tuple[str, ...]  # ledger file names whose states this one carries
    counts: Mapping[str, int] = field(default_factory=dict)  # by State.label; {} if not read
    last_change: float | None = None  # unix time a recipient's state last changed


@dataclass(frozen=True)
class Bounce:
    """An address refused for good (5.1.x: no such user or domain), and when."""

    email: str
    at: float  # unix time of the refusal


_BOUNCE = re.compile(r"^5\.1\.(?!7\b|8\b)\d{1,3}\b")  # 5.1.7/5.1.8 are about the sender


def is_bounce(reply: str) -> bool:
    """A 5.1.x enhanced status about the recipient (no such user or domain)."""
    return bool(_BOUNCE.match(reply.strip()))


def bounces(failures: Iterable[Failure]) -> list[Bounce]:
    """The failures that are bounces, oldest first (the latest refusal of an address decides
    whether a re-subscription came after it)."""
    found = sorted((f for f in failures if is_bounce(f.reply)), key=lambda f: f.at)
    return [Bounce(f.email, f.at) for f in found]


@dataclass(frozen=True)
class StatusChange:
    email: str
    status: Status
    changed: list[Path]  # lists rewritten
    held: list[Path]  # lists holding the address (changed or already so)
    suppressed: bool  # a new entry in the suppression file
    broken: list[Problem] = field(default_factory=list)  # lists that could not be read or written


def completed(change: StatusChange) -> StatusChange:
    """`change`, or InvalidInput naming the lists it could not change (and saying when the
    suppression file recorded it anyway)."""
    if change.broken:
        recorded = change.status in SUPPRESSING  # the suppression file has the address now
        anyway = f"{change.email}: recorded as {change.status} anyway"
        raise InvalidInput([*change.broken, *([Problem(None, anyway)] if recorded else [])])
    return change


@dataclass(frozen=True)
class Added:
    email: str
    path: Path
    created: bool  # a new row (False: the list had them; empty fields were filled)
    changed: bool


@dataclass(frozen=True)
class Signup:
    """A request to join a list from the web form, waiting for the person to confirm it."""

    email: str
    list_path: Path | None  # None: the list `add` uses by default
    asked_at: dt.datetime  # when the form was sent (whole seconds, UTC): the token carries it
    name: str = ""
    consent: str = ""  # the consent sentence the form showed


class Confirmed(enum.Enum):
    """What confirming a sign-up did."""

    SUBSCRIBED = "subscribed"  # now subscribed, with a consent record
    ALREADY = "already"  # this request was confirmed before: nothing changed
    UNKNOWN = "unknown"  # no such request (erased by purge, or never recorded): nothing changed


@dataclass(frozen=True)
class WorkerShare:
    """One sender's part of a send: who (host:pid:start for a sender of a shared store) and
    the outcomes it recorded. The shares of a send add up to its counts."""

    id: str
    counts: Mapping[str, int]  # by State.label: sent, failed, deferred, unknown, sending
    live: bool = False  # it holds a lease now


@dataclass(frozen=True)
class RunningSend:
    """A send of the shared store with recipients still to go, as `store check` shows it."""

    slug: str
    destination: str
    counts: Mapping[str, int]  # by State.label
    workers: int  # senders holding a lease on it now


@dataclass(frozen=True)
class StoreCheck:
    """What `newsletter store check` shows: where the store is (never its password), its
    schema version against this newsletter's, what it holds, and the sends in progress."""

    where: str  # host:port/dbname
    version: int
    expected: int
    counts: Mapping[str, int]  # what -> how many ("sends", "send recipients", ...)
    running: tuple[RunningSend, ...]


@dataclass(frozen=True)
class Migration:
    """What `newsletter store migrate` did: the schema version before and after."""

    where: str
    before: int
    after: int


# ---------------------------------------------------------------------------------------------
# The protocols


Blocked = Callable[[], set[tuple[int, str]]]  # (address hash, list or "") that must get no mail
# in a Blocked pair instead of a list: erased on request (`purge`) since the snapshot, so the
# send's ledger keeps no address, name or merge fields of theirs either (no path holds NUL)
PURGED = "\0purged"


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
        self, email: str, status: Status, *, when: dt.datetime | None = None, source: str = ""
    ) -> StatusChange:
        """Durable when it returns. A place that could not be changed is in `.broken`; then
        (for a status that stops mail) the address is suppressed, so no change is lost.
        `source` says who made it ("unsubscribe link"); the person's history keeps it."""
        ...

    def suppress(self, email: str, reason: str) -> bool:
        """Never mail or import the address again; False if it already was."""
        ...

    def batched(self) -> AbstractContextManager[None]:
        """For a long-running writer (`serve`): inside, `set_status` stays durable when it
        returns but may be written cheaply first (the CSV store: a journal, group-committed)
        and put in place within seconds; when the block ends, every change is in place."""
        ...

    def apply_bounces(self, bounces: Sequence[Bounce]) -> list[StatusChange]:
        """Mark `bounced` each address refused for good, unless the store shows it subscribed
        again after the refusal; running it twice changes nothing. A place that could not be
        changed is in `.broken` (the address is then suppressed)."""
        ...

    def soft_bounce(
        self, email: str, *, issue: str, status: str, at: dt.datetime, window_days: int
    ) -> int:
        """Record a soft bounce (4.x.x) of `email` for `issue`; how many it had within
        `window_days` up to `at`, this one included."""
        ...

    def watch(self, recipients: Recipients) -> Blocked:
        """For the send loop, between batches: who must get no mail now (cheap when nothing
        changed)."""
        ...

    def request_signup(self, signup: Signup, *, since: dt.datetime) -> bool:
        """Record a sign-up waiting for confirmation, unless the address asked after `since`
        (then False, and nothing changes: one confirmation mail per address per period).

        A person new to the list is held there as `pending` (never mailed); an existing row is
        left as it is (a form must not change anyone's status or name: only confirming does)."""
        ...

    def withdraw_signup(self, signup: Signup) -> None:
        """Forget a sign-up whose confirmation could not be sent, so the person may ask again
        at once (a `pending` row stays: it is never mailed, and confirming later subscribes)."""
        ...

    def confirm_signup(
        self, email: str, list_path: Path | None, asked_at: dt.datetime, *, when: dt.datetime
    ) -> Confirmed:
        """The person confirmed the sign-up they asked for at `asked_at`: subscribed to the list
        even when they had unsubscribed, bounced, complained or been suppressed (they asked
        again), with a consent record (asked, "web form", the sentence shown, confirmed)."""

    def held(self, email: str) -> Held:
        """Everything held on the address (its rows, suppression entry, history, consent
        records, soft bounces), matched as `addresses.address_key` compares."""
        ...

    def purge(self, email: str) -> Purged:
        """Erase the address on request: a suppression entry first, then every row and
        record of it; InvalidInput naming a place that could not be erased."""
        ...


class Lease(Protocol):
    """A sender's part in a send that several senders share (a PostgreSQL store): what it
    claimed is its own while it renews its lease; when a lease expires, the others take back
    its claims (its attempts in flight become `unknown`)."""

    seconds: float  # how long a lease lasts unless renewed

    def renew(self) -> bool:
        """Extend this sender's lease (the send loop calls it every third of `seconds`);
        False when it had expired and the others took back its claims: the sender stops."""
        ...

    def others(self) -> float | None:
        """With nothing left to claim: take back what senders whose lease expired left (their
        attempts in flight become unknown, their claims go back to pending); the seconds to
        wait before asking again while another sender still works, None when none does."""
        ...

    def reserve(
        self, span: float, plan: Callable[[float, list[float]], list[float]]
    ) -> tuple[float, list[float]]:
        """Under a lock every sender of the send shares: `plan(now, granted)` gets the store's
        clock and the send times granted to every sender over the last `span` seconds, and
        returns new ones; they are recorded. Returns (now, the new times); `plan` is not
        called when the lock stays busy (a sender frozen while holding it): ask again."""
        ...


class SendLedger(Protocol):
    """One send's record of every recipient (ledger.Ledger). One writer at a time (the send
    lock), or several senders each with a `lease()` (a shared store); a row is durably
    `sending` before its data goes out, so nobody is mailed twice."""

    # snapshot
    def reset(self) -> None: ...
    def add(self, entries: Iterable[Entry]) -> int: ...
    def put(self, name: str, value: str) -> None: ...
    def put_json(self, name: str, value: Any) -> None: ...
    def get(self, name: str, default: str = "") -> str: ...
    def get_json(self, name: str, default: Any) -> Any: ...
    def save(self) -> None: ...
    def carry_over(self, source: Path, reply: str) -> int:
        """Mark as sent (with `reply`) those another send's ledger sent or may have sent."""
        ...

    def fixed(self) -> bool:
        """The snapshot is taken for good: a plan joins it instead of taking it again (once
        something was attempted; in a shared store, once the first sender saved it)."""
        ...

    # claim
    def pending(self, after_id: int, limit: int) -> list[Row]:
        """Claim the next pending recipients (in plan order, after `after_id`): with several
        senders, each row goes to one of them."""
        ...

    def deferred(self) -> list[tuple[Row, float]]:
        """Claim the deferred recipients no live sender is retrying, with their next time."""
        ...

    def attempt_times(self, since: float) -> list[float]: ...
    def lease(self) -> Lease | None:
        """This sender's lease when several may send at once (None: the only sender)."""
        ...

    # record
    def start(self, row_id: int, now: float | None = None) -> bool:
        """Record an attempt as begun (durable at the next commit, before its data goes out);
        False when the row is no longer this sender's to send (its lease expired and another
        sender took it back, or the reader was left out meanwhile)."""
        ...

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
    def contains(self, key: str) -> bool: ...
    def counts(self, *, live: bool = False) -> dict[str, int]: ...
    def workers(self) -> list[WorkerShare]:
        """Each sender's share of the outcomes (one for a send that had one sender)."""
        ...

    def emails(self, *states: State) -> Iterator[str]: ...
    def failures(self) -> Iterator[Failure]: ...
    def close(self) -> None: ...

    # what came back later (the bounce mailbox)
    def row(self, row_id: int) -> Row | None: ...
    def row_of(self, key: str) -> Row | None: ...
    def record_return(self, row_id: int, kind: str, status: str, at: float) -> bool:
        """A bounce ("hard", "soft") or complaint of that row; False if it had one already."""
        ...

    def returned(self) -> dict[str, int]:
        """{"bounced": n, "complained": m}: recipients of this send with such a return."""
        ...


class Sends(Protocol):
    """Every send of the newsletter, each with its ledger (sends.LedgerFolder: one SQLite file
    per issue and destination in .newsletter/sends/). A send is named by its issue's slug and
    its destination; a copy of the issue under another name is found by its content."""

    def open(
        self, slug: str, destination: str, digest: str, *, on_change: str | None = None
    ) -> tuple[SendLedger, str]:
        """The ledger of this send as a draft bound to `digest` (nothing is written before
        `save()`), and a note when the issue changed since part of it was sent."""
        ...

    def find(self, slug: str, destination: str) -> SendLedger | None:
        """An existing send's ledger, to read and report (None: nothing was sent there)."""
        ...

    def where(self, slug: str, destination: str) -> Path:
        """Where that send's ledger is (or would be), for messages."""
        ...

    def summaries(self, slug: str | None = None) -> list[SendSummary]:
        """Every send (of the issue `slug`), with its counts and last change."""
        ...

    def failures(self) -> list[Failure]:
        """The refusals recorded by every send (their bounces, applied before a send)."""
        ...

    def started(self) -> bool:
        """Whether any send was ever recorded here (only then may a plan take a lock: a plan
        creates nothing)."""
        ...

    def lock(self, name: str) -> AbstractContextManager[object]:
        """Held while a send of `name` (a slug, or a content digest) runs: one at a time."""
        ...

    def running(self, slug: str) -> bool:
        """Is a send of this issue running right now, in another process?"""
        ...

    def others(
        self, slug: str, content: str, destination: str, continue_from: Sequence[Path]
    ) -> list[SendSummary]:
        """The sends of this issue through other servers that this one must continue from;
        OtherSend when one of them is not named in `continue_from` (or recorded)."""
        ...

    def elsewhere(self, slug: str, content: str, destination: str) -> list[SendSummary]:
        """The sends of this issue through other servers that sent or may have sent."""
        ...

    def carry_over(
        self,
        ledger: SendLedger,
        sources: Sequence[SendSummary],
        *,
        slug: str,
        destination: str,
        content: str,
    ) -> list[str]:
        """Label the ledger with its identity and mark as theirs who `sources` sent or may
        have sent (a note for each); after the snapshot, before anything is sent."""
        ...

    def outcomes(self, email: str) -> list[SendOutcome]:
        """What every send recorded for the address (looked up by its key, not read whole)."""
        ...

    def forget(self, email: str) -> list[Scrubbed]:
        """Erase the address, name and merge fields from every send's record of it; its
        rows stay, so a resumed send never mails it (a pending one is skipped)."""
        ...


def bouncer(store: SubscriberStore) -> Callable[[str], Awaitable[None]]:
    """For the send loop: a 5.1.x refusal marks the address `bounced`, off the event loop."""

    import asyncio

    async def bounce(email: str) -> None:
        completed(await asyncio.to_thread(store.set_status, email, "bounced"))

    return bounce

"""What the stores hold on one person, and what erasing them did: the data that crosses the
storage seam (store.py) for `subscribers show` and `subscribers purge`.

`SubscriberStore.held` answers with a `Held` (the list rows, status history, consent records,
soft bounces and sign-ups of an address), `Sends.outcomes` with a `SendOutcome` per send (and
what came back for it later, `Returned`); `SubscriberStore.purge` and `Sends.forget` say what
they erased (`Purged`, `Scrubbed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# What is held on one person (`subscribers show`) and what erasing them did (`purge`)


@dataclass(frozen=True)
class StatusEvent:
    list: str  # the list file's name, "" for the suppression file
    status: str
    at: str  # ISO 8601, UTC
    source: str  # "cli", "import", "unsubscribe link", "bounce during send", ...


@dataclass(frozen=True)
class ConsentRecord:
    list: str
    at: str  # when the person asked (the form was sent)
    source: str  # "web form", "cli", "import"
    text: str  # the consent sentence they were shown
    confirmed_at: str  # when they confirmed ("" without double opt-in)


@dataclass(frozen=True)
class SoftBounce:
    at: str
    issue: str
    status: str  # the enhanced status code, "4.2.2"


@dataclass(frozen=True)
class SignupRecord:
    """A sign-up from the web form, kept until it is a month old (confirmed or not)."""

    list: str
    name: str
    asked_at: str  # when the form was sent
    consent: str  # the sentence the form showed
    confirmed_at: str  # "" while not confirmed


@dataclass(frozen=True)
class HeldRow:
    """One row of a list holding the address, every column as the header names it."""

    path: Path
    line: int  # where the row starts (the header is line 1)
    columns: Mapping[str, str]


@dataclass(frozen=True)
class Held:
    """Everything the subscriber store holds on one address."""

    rows: tuple[HeldRow, ...]
    suppressed: str | None  # the reason of its suppression entry; None: no entry
    history: tuple[StatusEvent, ...]
    consents: tuple[ConsentRecord, ...]
    soft_bounces: tuple[SoftBounce, ...]
    signups: tuple[SignupRecord, ...] = ()


@dataclass(frozen=True)
class SendOutcome:
    """What one send recorded for an address."""

    issue: str  # the issue's slug
    destination: str  # "outbox", "smtp://host:port"; "" when an old ledger did not record it
    outcome: str  # a State label: "sent", "failed", "unknown", "skipped", ...
    at: float | None  # unix time of its last change; None: never attempted
    ledger: str  # where the send's record is (a file)
    returns: tuple[Returned, ...] = ()  # what came back for it later (the bounce mailbox)


@dataclass(frozen=True)
class Returned:
    """A bounce or complaint a ledger recorded for one recipient (`newsletter bounces`)."""

    kind: str  # "hard", "soft" (bounces) or "complaint"
    status: str  # the DSN's status, e.g. 5.1.1; "" for a complaint
    at: float  # unix time of the report


@dataclass(frozen=True)
class Purged:
    email: str
    rows: int
    files: list[Path]
    elsewhere: list[Path] = field(default_factory=list)  # no list, but holding the address


@dataclass(frozen=True)
class Scrubbed:
    """One send's record of an erased person: the row stays (so no resumed send mails them),
    without their address, name or merge fields."""

    ledger: str
    rows: int
    complete: bool  # False: in use (a send held its lock, or a reader), old copies may remain

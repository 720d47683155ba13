"""What the API's send calls answer: `SendReport` (from `Newsletter.send` and `status`, with
its `Counts`, `FailedRecipient` and `WorkerReport`) and `TestResult` (from `test`). Callers
import them from `newsletter.api`; sending.py builds them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Counts:
    """Recipients of a send by state; left_out: not in the plan, or skipped while sending;
    bounced and complained: of those sent, what the bounce mailbox returned later."""

    pending: int
    sent: int
    deferred: int
    failed: int
    unknown: int
    left_out: int
    bounced: int = 0
    complained: int = 0


@dataclass(frozen=True)
class FailedRecipient:
    email: str
    code: int | None
    reply: str


@dataclass(frozen=True)
class WorkerReport:
    """One sender's share of a send (several senders share a send in a PostgreSQL store; the
    embedded ledger has one, "local"). The shares' `sent` add up to the send's."""

    id: str  # host:pid:start time of the sender's process
    sent: int
    failed: int
    deferred: int
    unknown: int
    sending: int  # in flight now (a live sender's)
    live: bool  # it holds a lease now


@dataclass(frozen=True)
class SendReport:
    """Where a send stands: after `Newsletter.send`, or any time from `Newsletter.status`."""

    issue: str  # the issue's slug
    destination: str  # the ledger key: "outbox" or "smtp://host:port"
    counts: Counts
    unknown: tuple[str, ...]  # the connection broke after the data went out: they may have it
    failed: tuple[FailedRecipient, ...]
    deferred: tuple[str, ...]
    duration_s: float  # of the last run
    messages_per_second: float  # of the last run
    live: bool = False  # a send of this issue is running in another process right now
    stopped: str | None = None  # why this run stopped before the end (interrupted, paused)
    again: str = ""  # the issue and the --list/--tag options that continue this send
    workers: tuple[WorkerReport, ...] = ()  # each sender's share

    @property
    def remaining(self) -> int:
        """Recipients a later run would still send to (pending or deferred)."""
        return self.counts.pending + self.counts.deferred

    def to_json(self) -> dict[str, Any]:
        """The object `send --json` and `status --json` print (docs/report.schema.json)."""
        c = self.counts
        return {
            "issue": self.issue,
            "destination": self.destination,
            "counts": {
                "pending": c.pending,
                "sent": c.sent,
                "deferred": c.deferred,
                "failed": c.failed,
                "unknown": c.unknown,
                "left_out": c.left_out,
                "bounced": c.bounced,
                "complained": c.complained,
            },
            "unknown": list(self.unknown),
            "failed": [{"email": f.email, "code": f.code, "reply": f.reply} for f in self.failed],
            "deferred": list(self.deferred),
            "duration_s": self.duration_s,
            "messages_per_second": self.messages_per_second,
            "workers": [dataclasses.asdict(w) for w in self.workers],
        }


@dataclass(frozen=True)
class TestResult:
    """Where a test copy went, and what the server (or the outbox) answered."""

    issue: Path
    to: str
    target: str  # where it went, in words
    code: int
    reply: str

"""Each report of the bounce mailbox -> the recipient of one send it is about -> what changes.

Whom a report is about: the VERP return path it was delivered to (verp.py) when it has one;
that decides, and one that does not verify maps to nobody (never a guess from the text). A
report without one (a send made before bounce_address was set) is matched by its recipient
against the ledgers: by the original's Message-ID when it was returned (it is made from the
send's content and the address), else only when exactly one send holds that address.

What changes: the send's ledger records the return (hard, soft or complaint: `status` counts
it), and the subscriber store is told: a hard bounce (5.x.x) marks `bounced` at once; a soft one
(4.x.x, the relay gave up) is counted, and `soft_bounce_limit` of them within `soft_bounce_days`
mark `bounced`; a complaint marks `complained`. A report read twice changes nothing the second
time (the ledger keeps one return of each kind per recipient, counted once; a status only gets
stronger), except what the first read could not finish (a list that could not be changed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from newsletter.addresses import address_key
from newsletter.bounces.reports import Recipient, Report
from newsletter.errors import BadAddress, LockBusy
from newsletter.models import Status
from newsletter.store import Row, SendLedger, Sends, SendSummary, SubscriberStore, completed
from newsletter.verp import ReturnPaths, send_tag

BOUNCE_SOURCE = "bounce mailbox"
COMPLAINT_SOURCE = "complaint"
RESUBSCRIBED = "left alone: subscribed again since the bounce"
RANK = {"subscribed": 0, "pending": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}  # dry run


@dataclass(frozen=True)
class Outcome:
    """What became of one message of the bounce mailbox."""

    message: str  # its name in the mailbox (a Maildir file, an IMAP UID)
    result: str  # hard, soft, complaint, delayed, delivered, not a bounce, nobody, malformed, later
    email: str = ""  # the recipient it is about
    issue: str = ""  # the slug of the send it came back from
    status: str = ""  # the enhanced status code
    action: str = ""  # what was done (or, with dry_run, would be)
    subject: str = ""

    @property
    def needs_a_person(self) -> bool:
        """Left unread in the mailbox: nobody could be found, or it could not be read."""
        return self.result in ("nobody", "malformed", "not a bounce")

    def to_json(self) -> dict[str, str]:
        return {
            "message": self.message,
            "result": self.result,
            "email": self.email,
            "issue": self.issue,
            "status": self.status,
            "action": self.action,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class Rules:
    soft_limit: int = 3
    soft_days: int = 30
    dry_run: bool = False


@dataclass
class Match:
    summary: SendSummary
    ledger: SendLedger
    row: Row


@dataclass
class Processor:
    """One run over a mailbox: the sends and ledgers are read once, closed by `close`."""

    store: SubscriberStore
    sends: Sends
    paths: ReturnPaths | None
    rules: Rules
    _by_tag: dict[str, list[SendSummary]] = field(default_factory=dict)
    _ledgers: dict[str, SendLedger | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for one in self.sends.summaries():
            self._by_tag.setdefault(send_tag(one.slug, one.destination), []).append(one)

    def close(self) -> None:
        for ledger in self._ledgers.values():
            if ledger is not None:
                ledger.close()

    # -- one message ---------------------------------------------------------------------------

    def process(self, name: str, report: Report) -> Outcome:
        if report.problem:
            return Outcome(name, "malformed", action=report.problem, subject=report.subject)
        if report.kind == "none":
            return Outcome(name, "not a bounce", action="left for a person", subject=report.subject)
        found = self._match(report)
        if isinstance(found, str):
            return Outcome(name, "nobody", action=found, subject=report.subject)
        recipient = _about(report, found.row.email)
        base = Outcome(
            name, _result(recipient), found.row.email, found.summary.slug, recipient.status,
            subject=report.subject,
        )  # fmt: skip
        if base.result not in ("hard", "soft", "complaint"):
            return _with(base, f"nothing to do ({recipient.action})")
        if not found.row.email:  # erased by `subscribers purge`: nobody left to mark or count
            return _with(base, "erased on request: nothing to change")
        at = _when(report)
        if self.rules.dry_run:
            return _with(base, self._would(base, at))
        return self._apply(base, found, at)

    def _apply(self, base: Outcome, found: Match, at: float) -> Outcome:
        """Under the issue's send lock: a send holds its ledger (one writer at a time)."""
        try:
            with self.sends.lock(base.issue):
                kind = base.result
                added = found.ledger.record_return(found.row.id, kind, base.status, at)
                if not added and (kind == "soft" or self._subscribed_since(base.email, at)):
                    return _with(base, "already recorded")  # a soft one counts once per send
                # a status only gets stronger, so telling the store again is harmless (unless
                # they subscribed again since), and it finishes what a run stopped by a broken
                # list left undone
                action = self._tell_store(base, at)
        except LockBusy:
            return _with(base, "a send of this issue is running: left for the next run", "later")
        if added:
            return _with(base, action)
        repaired = action.startswith("marked")
        return _with(base, f"already recorded: {action}" if repaired else "already recorded")

    def _tell_store(self, base: Outcome, at: float) -> str:
        when = dt.datetime.fromtimestamp(at, dt.UTC)
        if base.result == "complaint":
            return self._set(base.email, "complained", COMPLAINT_SOURCE, when)
        if self._subscribed_since(base.email, at):
            return RESUBSCRIBED
        if base.result == "hard":
            return self._set(base.email, "bounced", BOUNCE_SOURCE, when)
        count = self.store.soft_bounce(
            base.email, issue=base.issue, status=base.status, at=when,
            window_days=self.rules.soft_days,
        )  # fmt: skip
        counted = (
            f"soft bounce {count} of {self.rules.soft_limit} within {self.rules.soft_days} days"
        )
        if count < self.rules.soft_limit:
            return counted
        return f"{counted}: {self._set(base.email, 'bounced', BOUNCE_SOURCE, when)}"

    def _set(self, email: str, status: Status, source: str, when: dt.datetime) -> str:
        change = completed(self.store.set_status(email, status, when=when, source=source))
        if change.changed or change.suppressed:
            return f"marked {status}"
        return f"already {status} or stronger" if change.held else f"{status}: in no list"

    def _subscribed_since(self, email: str, at: float) -> bool:
        """Does the reader's row say they subscribed (again) at or after the bounce's time?
        Then the bounce is of an address they have since confirmed: as for a refusal during a
        send (subscribers.bounces_to_apply), it leaves them alone."""
        found = self.store.lookup(email)
        since = found.fields.get("subscribed_at", "").strip() if found is not None else ""
        try:
            moment = dt.datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        except ValueError:
            return False
        if moment is None:
            return False
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        return moment.timestamp() >= math.floor(at)  # lists keep seconds: the same second counts

    def _would(self, base: Outcome, at: float) -> str:
        status: Status = "complained" if base.result == "complaint" else "bounced"
        if status == "bounced" and self._subscribed_since(base.email, at):
            return RESUBSCRIBED
        if base.result == "soft":
            rule = f"{self.rules.soft_limit} within {self.rules.soft_days} days mark bounced"
            return f"would count a soft bounce ({rule})"
        found = self.store.lookup(base.email)
        if found is not None and RANK.get(found.status, 0) >= RANK[status]:
            return f"already {found.status}"
        return f"would mark {status}"

    # -- whom it is about ------------------------------------------------------------------------

    def _match(self, report: Report) -> Match | str:
        """The recipient of one send this report is about, or why it maps to nobody."""
        ours = [v for a in report.return_paths if self.paths and (v := self.paths.read(a))]
        if ours:
            for verp in ours:
                for summary in self._by_tag.get(verp.send, []):
                    ledger = self._ledger(summary)
                    row = ledger.row(verp.row) if ledger is not None else None
                    if row is not None and self.paths and self.paths.verifies(verp, row.email):
                        assert ledger is not None
                        return Match(summary, ledger, row)
            why = "forged, mangled, or of a ledger replaced since"
            return f"maps to nobody: its return path is not one we made ({why})"
        return self._by_recipient(report)

    def _by_recipient(self, report: Report) -> Match | str:
        addresses = {a for r in report.recipients for a in r.addresses}
        if not addresses:
            return "maps to nobody: it names no recipient and has no return path of ours"
        found = list(self._holding(addresses))
        returned = {i.partition("@")[0].lower() for i in report.message_ids}
        by_id = [m for m in found if _message_id_tag(m) in returned]
        if by_id:
            return by_id[0]
        if len(found) == 1:
            return found[0]
        listed = ", ".join(sorted(addresses))
        if not found:
            return f"maps to nobody: {listed} is in no send's ledger"
        return f"maps to nobody: {listed} is in {len(found)} sends' ledgers (ambiguous)"

    def _holding(self, addresses: set[str]) -> Iterator[Match]:
        keys = set()
        for address in addresses:
            with contextlib.suppress(BadAddress):
                keys.add(address_key(address))
        for summaries in self._by_tag.values():
            for summary in summaries:
                ledger = self._ledger(summary)
                for key in keys:
                    row = ledger.row_of(key) if ledger is not None else None
                    if ledger is not None and row is not None:
                        yield Match(summary, ledger, row)

    def _ledger(self, summary: SendSummary) -> SendLedger | None:
        name = str(summary.path)
        if name not in self._ledgers:
            self._ledgers[name] = self.sends.find(summary.slug, summary.destination)
        return self._ledgers[name]


def _message_id_tag(match: Match) -> str:
    """The part before @ of the Message-ID a send gave this recipient (dispatch.composer makes
    it so: the same for every attempt at one recipient of one version of the issue)."""
    digest = match.ledger.get("digest")
    return hashlib.sha256(f"{digest}\0{match.row.email}".encode()).hexdigest()[:32]


def _about(report: Report, email: str) -> Recipient:
    """The report's recipient that is the row's address, else its first failure, else its first."""
    key = email.lower()
    for recipient in report.recipients:
        if key in (a.lower() for a in recipient.addresses):
            return recipient
    failed = [r for r in report.recipients if r.action in ("failed", "complaint")]
    return (failed or list(report.recipients) or [Recipient("", "", "failed", "")])[0]


def _result(recipient: Recipient) -> str:
    if recipient.action == "complaint":
        return "complaint"
    if recipient.action == "delayed":
        return "delayed"
    if recipient.action != "failed":  # delivered, relayed, expanded: a success notice
        return "delivered"
    return "soft" if recipient.status.startswith("4") else "hard"


def _when(report: Report) -> float:
    """The report's date; now when it has none or claims the future."""
    now = time.time()
    return min(report.at, now) if report.at is not None else now


def _with(base: Outcome, action: str, result: str = "") -> Outcome:
    from dataclasses import replace

    return replace(base, action=action, result=result or base.result)

"""Which send this is: the lock, the ledger bound to the content, the other servers' sends,
the snapshot of recipients, and the report that `send --json` and `status --json` share.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from newsletter.errors import (
    BadContinueFrom,
    ContentChanged,
    LockBusy,
    NewsletterError,
    NobodySelected,
    OtherSend,
)
from newsletter.fileio import make_folder, open_private, reporting
from newsletter.ledger import Ledger, failures_in, ledger_files, ledger_path, peek
from newsletter.ledger_people import compact, erase, outcome_in
from newsletter.models import Subscriber
from newsletter.people_types import Scrubbed, SendOutcome
from newsletter.store import Entry, Failure, SendLedger, SendSummary, State, WorkerShare

if TYPE_CHECKING:
    from newsletter.store import Recipients


# ---------------------------------------------------------------------------------------------
# One send of an issue at a time


class SendLock:
    """An advisory flock on `.newsletter/sends/<slug>.lock`, released if the process dies."""

    def __init__(self, state_dir: Path, slug: str) -> None:
        self.path = state_dir / "sends" / f"{slug}.lock"
        self._file: IO[str] | None = None

    def __enter__(self) -> SendLock:
        make_folder(self.path.parent)
        with reporting(self.path, "cannot open the send lock"):
            handle = os.fdopen(open_private(self.path), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockBusy(
                f"another `newsletter send` of this issue is running (pid {holder}); "
                "wait for it to finish, or stop it with Ctrl-C"
            ) from None
        try:
            with reporting(self.path, "cannot write the send lock"):
                handle.seek(0)
                handle.truncate()
                handle.write(str(os.getpid()))
                handle.flush()
        except NewsletterError:
            handle.close()
            raise
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None

    def held_elsewhere(self) -> bool:
        """For `status`: is a send of this issue running right now?"""
        if not self.path.exists():
            return False
        with self.path.open("rb") as handle:  # reading is enough for a shared lock
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False


# ---------------------------------------------------------------------------------------------
# The report: `send --json` and `status --json` share it (docs/sending.md)


def report(
    ledger: SendLedger, *, issue: str, destination: str, live: bool = False
) -> dict[str, Any]:
    counts = ledger.counts(live=live)
    returned = ledger.returned()
    plan_left_out = sum(int(v) for v in ledger.get_json("left_out", {}).values())
    return {
        "issue": issue,
        "destination": destination,
        "counts": {
            "pending": counts["pending"],
            "sent": counts["sent"],
            "deferred": counts["deferred"],
            "failed": counts["failed"],
            "unknown": counts["unknown"],
            "left_out": plan_left_out + counts["skipped"],
            "bounced": returned["bounced"],
            "complained": returned["complained"],
        },
        "unknown": list(ledger.emails(State.UNKNOWN, *(() if live else (State.SENDING,)))),
        "failed": [{"email": f.email, "code": f.code, "reply": f.reply} for f in ledger.failures()],
        "deferred": list(ledger.emails(State.DEFERRED)),
        "duration_s": float(ledger.get("duration_s") or 0.0),
        "messages_per_second": float(ledger.get("messages_per_second") or 0.0),
        "workers": [worker_json(share, live=live) for share in ledger.workers()],
    }


def worker_json(share: WorkerShare, *, live: bool) -> dict[str, Any]:
    """One sender's share: its attempts in flight count as unknown once it holds no lease
    (as the totals count them when no send runs)."""
    c = share.counts
    in_flight = c.get("sending", 0) if share.live and live else 0
    return {
        "id": share.id,
        "sent": c.get("sent", 0),
        "failed": c.get("failed", 0),
        "deferred": c.get("deferred", 0),
        "unknown": c.get("unknown", 0) + c.get("sending", 0) - in_flight,
        "sending": in_flight,
        "live": share.live,
    }


# ---------------------------------------------------------------------------------------------
# Setting up a send: the ledger bound to the content, the other servers' sends, the snapshot


def open_ledger(
    state_dir: Path, slug: str, destination: str, digest: str, *, on_change: str | None = None
) -> tuple[Ledger, str]:
    """The ledger of this issue and destination, bound to `digest`; (ledger, a note or "").

    A draft: nothing is written to it until `ledger.save()`, once the send is confirmed.
    """
    path = ledger_path(state_dir, slug, destination)
    ledger = Ledger(path, draft=True)
    if ledger.digest in ("", digest):
        ledger.put("digest", digest)
        ledger.commit()
        return ledger, ""
    if not ledger.attempted() or on_change == "continue":
        ledger.put("digest", digest)
        ledger.commit()
        return ledger, "the issue changed since the plan was made: the new version is sent"
    if on_change == "restart":
        ledger.close()
        kept = Path(f"{path}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        fresh = Ledger(path, draft=True, replacing=kept)
        fresh.put("digest", digest)
        fresh.commit()
        return fresh, f"the issue changed: a new send; the old ledger is kept aside as {kept}"
    counts = ledger.counts()
    raise ContentChanged(path, counts["sent"], sum(counts.values()))


def sends_elsewhere(state_dir: Path, slug: str, content: str, target: Path) -> list[SendSummary]:
    """The SMTP ledgers of this issue other than `target` that sent or may have sent."""
    return [
        other
        for path in _same_issue(state_dir, target, slug, content)
        if (other := peek(path)).sent or other.unknown
    ]


def other_sends(
    state_dir: Path, slug: str, content: str, destination: str, continue_from: Sequence[Path]
) -> list[SendSummary]:
    """Before a ledger is created or resumed: the other SMTP ledgers of this issue (same slug,
    or same content under another name) that sent or may have sent anything. Each must be one
    this send continues from (each `--continue-from`, or recorded by an earlier run), else
    OtherSend, naming all of them (a third server must be able to continue from two)."""
    if destination == "outbox":
        if continue_from:
            raise BadContinueFrom(None, "is for SMTP sends: this one goes to the outbox")
        return []  # the outbox mails nobody
    target = ledger_path(state_dir, slug, destination)
    recorded = set(peek(target).continued_from) if target.is_file() else set()
    chosen = {path.resolve() for path in continue_from}
    others = sends_elsewhere(state_dir, slug, content, target)
    for path in continue_from:
        if path.resolve() in {o.path.resolve() for o in others}:
            continue
        raise BadContinueFrom(
            path,
            f"not a ledger in {state_dir / 'sends'} of an SMTP send of this issue that sent "
            "anything",
        )
    needed = [o for o in others if o.path.name not in recorded]
    refused = [o for o in needed if o.path.resolve() not in chosen]
    if refused:
        raise OtherSend(destination, refused, needed)
    return others


def _same_issue(state_dir: Path, target: Path, slug: str, content: str) -> list[Path]:
    """The SMTP ledgers other than `target` of the same slug or the same content."""
    found = []
    for path in sorted((state_dir / "sends").glob("*.sqlite")):
        other = peek(path, counts=False) if path != target else None
        if other is None or other.destination == "outbox":
            continue
        if other.slug == slug or (content and other.content == content):
            found.append(path)
    return found


def continue_sends(
    ledger: SendLedger,
    sources: Sequence[SendSummary],
    *,
    slug: str,
    destination: str,
    content: str,
) -> list[str]:
    """Label the ledger (what other_sends reads) and carry over who `sources` sent or may have
    sent; after the snapshot, before anything is sent."""
    ledger.put("slug", slug)
    ledger.put("destination", destination)
    ledger.put("content", content)
    ledger.put_json("continued_from", sorted(s.path.name for s in sources))
    ledger.commit()
    notes = []
    for source in sources:
        reply = f"sent through {source.destination or 'another server'} ({source.path.name})"
        changed = ledger.carry_over(source.path, reply)
        notes.append(f"continuing from {source.path}: {changed} recipient(s) marked as its sends")
    return notes


def snapshot(ledger: SendLedger, selection: Recipients, used: Collection[str]) -> int:
    """Record the recipients of a send that has not started (a plan not sent may be stale):
    them, and what was asked (for resumes to compare). Returns how many."""
    ledger.reset()
    added = ledger.add(entry(s, used) for s in selection)
    if not added:
        raise NobodySelected(selection.why_empty(), selection.lists, selection.tags)
    ledger.put_json("left_out", selection.left_out)
    record_selection(ledger, selection)
    ledger.put("snapshot_at", f"{time.time():.0f}")
    ledger.sync()
    return added


def record_selection(ledger: SendLedger, selection: Recipients) -> None:
    ledger.put_json("selection", selection.spec())
    ledger.put_json("lists", [str(p) for p in selection.lists])


def entry(subscriber: Subscriber, used: Collection[str]) -> Entry:
    from newsletter.addresses import address_key

    fields = {k: v for k, v in subscriber.fields.items() if k in used and v}
    path = str(subscriber.list_path) if subscriber.list_path else ""
    return Entry(address_key(subscriber.email), subscriber.email, subscriber.name, path, fields)


# ---------------------------------------------------------------------------------------------
# All of it as the collection of sends (store.Sends), the embedded default


class LedgerFolder:
    """Every send's ledger: one SQLite file per issue and destination in .newsletter/sends/."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.folder = state_dir / "sends"

    def open(
        self, slug: str, destination: str, digest: str, *, on_change: str | None = None
    ) -> tuple[Ledger, str]:
        return open_ledger(self.state_dir, slug, destination, digest, on_change=on_change)

    def find(self, slug: str, destination: str) -> Ledger | None:
        path = self.where(slug, destination)
        return Ledger(path, create=False) if path.is_file() else None

    def where(self, slug: str, destination: str) -> Path:
        return ledger_path(self.state_dir, slug, destination)

    def summaries(self, slug: str | None = None) -> list[SendSummary]:
        found = [peek(path) for path in self._ledgers()]
        return [one for one in found if slug is None or one.slug == slug]

    def failures(self) -> list[Failure]:
        return [failure for path in self._ledgers() for failure in failures_in(path)]

    def started(self) -> bool:
        return self.folder.is_dir()

    def lock(self, name: str) -> SendLock:
        return SendLock(self.state_dir, name)

    def running(self, slug: str) -> bool:
        return SendLock(self.state_dir, slug).held_elsewhere()

    def others(
        self, slug: str, content: str, destination: str, continue_from: Sequence[Path]
    ) -> list[SendSummary]:
        return other_sends(self.state_dir, slug, content, destination, continue_from)

    def elsewhere(self, slug: str, content: str, destination: str) -> list[SendSummary]:
        return sends_elsewhere(self.state_dir, slug, content, self.where(slug, destination))

    def carry_over(
        self,
        ledger: SendLedger,
        sources: Sequence[SendSummary],
        *,
        slug: str,
        destination: str,
        content: str,
    ) -> list[str]:
        return continue_sends(ledger, sources, slug=slug, destination=destination, content=content)

    def outcomes(self, email: str) -> list[SendOutcome]:
        from newsletter.addresses import address_key

        key = address_key(email)
        found = []
        for path in ledger_files(self.folder):
            held = outcome_in(path, key)
            if held is not None:
                send = peek(path, counts=False)
                state, at, returns = held
                outcome = SendOutcome(send.slug, send.destination, state.label, at, str(path))
                found.append(dataclasses.replace(outcome, returns=tuple(returns)))
        return found

    def forget(self, email: str) -> list[Scrubbed]:
        from newsletter.addresses import address_key

        key = address_key(email)
        held = [path for path in ledger_files(self.folder) if outcome_in(path, key) is not None]
        return [self._forget_in(path, key) for path in held]

    def _forget_in(self, path: Path, key: str) -> Scrubbed:
        """Erase, then rebuild the file while holding the send's lock (no send can overwrite
        or extend it meanwhile); a send holding it now gets only the erasure."""
        try:
            with SendLock(self.state_dir, peek(path, counts=False).slug):
                rows, _ = erase(path, key)
                return Scrubbed(str(path), rows, complete=compact(path))
        except LockBusy:
            rows, _ = erase(path, key)
            return Scrubbed(str(path), rows, complete=False)

    def _ledgers(self) -> list[Path]:
        return sorted(self.folder.glob("*.sqlite"))

"""The core as a library: open a newsletter folder, then render, check, plan, send, test, status,
archive.

The command line is one caller of this module; a cron script or a worker is another
(docs/api.md). Nothing here prints, prompts or exits: notes go to the `notify` callback
(default: the `newsletter` logger), progress to `on_progress`, and every failure is a
NewsletterError carrying its data. Importing this module loads no typer, rich, starlette or
uvicorn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.errors import (
    BadOption,
    DraftIssue,
    InvalidInput,
    LedgerMissing,
    MissingSetting,
    PlanUsed,
    Problem,
    Severity,
)
from newsletter.store import Migration as Migration  # returned by migrate_store
from newsletter.store import SendSummary
from newsletter.store import StoreCheck as StoreCheck  # returned by check_store

if TYPE_CHECKING:
    import asyncio

    from newsletter.archive import Archive
    from newsletter.config import Config
    from newsletter.dispatch import Notice, Progress
    from newsletter.limits import Limits
    from newsletter.models import Rendered
    from newsletter.resume import Joined
    from newsletter.store import Recipients, SendLedger, Sends, StatusChange, SubscriberStore
    from newsletter.transport import Transport

log = logging.getLogger("newsletter")

Finding = Problem  # one finding of `check`: file, line, key, severity, message
Notify = Callable[[str], None]
OnProgress = Callable[["Progress | Notice"], None]
PathLike = str | Path


@dataclass(frozen=True)
class Counts:
    """Recipients of a send by state; left_out: not in the plan, or skipped while sending."""

    pending: int
    sent: int
    deferred: int
    failed: int
    unknown: int
    left_out: int


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


@dataclass(frozen=True)
class Plan:
    """What a send would do; `Newsletter.send(plan)` does exactly that.

    A plan holds the issue's send lock (when a send of the issue exists) and a draft of its
    ledger until it is sent or closed: use it as a context manager, or call close().
    """

    issue: Path
    slug: str
    subject: str  # merge fields shown as {name}
    destination: str
    target: str  # where messages go, in words
    lists: tuple[str, ...]
    recipients: int  # after dedupe and suppression
    left_out: dict[str, int]  # reason -> how many
    done: dict[str, int]  # a resumed send: how many in each state so far; {} for a new one
    joined: tuple[Joined, ...] | None  # with add_new: who is added to the snapshot, and why
    warnings: tuple[Finding, ...]  # lint warnings (a plan has no lint errors)
    waiting: int  # pending or deferred, before `limit`
    to_send: int  # what this run sends: `waiting`, at most `limit`
    message_size: int  # bytes of one message as sent
    connections: int
    rate: float | None  # messages a second; None: the server sets the pace
    estimated_seconds: float | None
    dkim: str | None  # "d=example.org s=news" when messages are signed
    notes: tuple[str, ...]  # what was decided while planning (also passed to notify)
    limit: int | None
    _session: _Session = field(repr=False, compare=False)

    @property
    def nothing_to_send(self) -> bool:
        return self.waiting == 0

    def close(self) -> None:
        """Release the lock and the draft of a plan that will not be sent."""
        self._session.close()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self._session.abandon()


class _Session:
    """What a plan holds for its send: the draft ledger, the transport, the locks."""

    def __init__(self, config: Config, rendered: Rendered, issue: Path) -> None:
        self.config = config
        self.rendered = rendered
        self.issue = issue
        self.stack = contextlib.ExitStack()
        self.ledger: SendLedger | None = None
        self.transport: Transport
        self.selection: Recipients
        self.limits: Limits
        self.continue_from: list[Path] = []
        self.take_lock: Callable[[], None] = lambda: None
        self.used = False
        self.notes: list[str] = []

    def close(self) -> None:
        self.used = True  # a closed plan holds no ledger or lock: it cannot be sent
        ledger, self.ledger = self.ledger, None
        try:
            if ledger is not None:
                ledger.close()
        finally:
            self.stack.close()

    def abandon(self) -> None:
        """Close after an error, never masking it (the ledger may be what failed)."""
        with contextlib.suppress(Exception):
            self.close()
        self.stack.close()


class Newsletter:
    """One newsletter folder (its newsletter.toml, issues, templates and lists)."""

    def __init__(
        self,
        config: Config,
        *,
        notify: Notify | None = None,
        store: SubscriberStore | None = None,
        sends: Sends | None = None,
    ) -> None:
        """`store` (the readers) and `sends` (the ledgers of every send) default to the
        embedded ones: the CSV lists of the folder and SQLite files in .newsletter/sends/
        (with [store] url, the sends are in the PostgreSQL store)."""
        from newsletter.sends import LedgerFolder
        from newsletter.subscribers import CsvStore

        self.config = config
        self.notify: Notify = notify or log.info
        reserved = config.newsletter.allow_reserved_domains
        self.store: SubscriberStore = store or CsvStore(config.root, allow_reserved=reserved)
        embedded = None if config.store.url else LedgerFolder(config.state_dir)
        self._sends: Sends | None = sends or embedded  # the store's: made at the first use

    @property
    def sends(self) -> Sends:
        """Every send's ledger: with [store] url, in the PostgreSQL store (psycopg is loaded
        at the first use, so `check` or `render` never needs it), else .newsletter/sends/."""
        if self._sends is None:
            url = self._store_url()
            from newsletter.pg.sends import PgSends

            self._sends = PgSends(url, lease=self.config.store.lease, notify=self.notify)
        return self._sends

    @classmethod
    def open(
        cls, folder: PathLike = ".", *, config: PathLike | None = None, notify: Notify | None = None
    ) -> Newsletter:
        """The newsletter.toml in `folder` or its parents (or `config`, a file or folder), as
        the command line finds it; NEWSLETTER_* environment variables apply."""
        from newsletter.config import load_config

        explicit = Path(config) if config is not None else None
        return cls(load_config(Path(folder), explicit), notify=notify)

    # -- compose -----------------------------------------------------------------------------

    def render(self, issue: PathLike) -> Rendered:
        """The issue as HTML and text (merge fields left as markers), with its subject."""
        from newsletter.render import render_issue

        return render_issue(Path(issue), self.config)

    def issues(self) -> list[Path]:
        """The issue files in issues/ that are not drafts (sent or not), oldest first (by date,
        then name).

        InvalidInput names every problem when one of them cannot be read."""
        from newsletter.archive import finished_issues

        found = finished_issues(self.config)
        return [i.path for i in sorted(found, key=lambda i: (i.date, i.path.name))]

    def check(self, issue: PathLike) -> list[Finding]:
        """Every problem of the issue (read, render, lint), errors and warnings; none raised."""
        from newsletter.lint import check_issue

        return check_issue(Path(issue), self.config).problems

    def list_path(self, given: PathLike) -> Path:
        """A list as the command line names it: a bare name is subscribers/NAME(.csv)."""
        path = Path(given)
        if path.parent != Path(".") or path.is_absolute():
            return path
        name = path.name if path.suffix else f"{path.name}.csv"
        return self.config.root / "subscribers" / name

    # -- send --------------------------------------------------------------------------------

    def plan(
        self,
        issue: PathLike,
        lists: Sequence[PathLike] | PathLike | None = None,
        tags: Iterable[str] = (),
        limit: int | None = None,
        *,
        add_new: bool = False,
        resend_unknown: bool = False,
        on_change: str | None = None,
        continue_from: Sequence[PathLike] | PathLike = (),
    ) -> Plan:
        """What `send` would do; writes nothing (docs/sending.md: resume, --add-new, ...).

        on_change: when the issue changed after part of the list was sent, "continue" (the new
        version to the rest) or "restart" (a new send, mailing everyone again). One list or one
        tag may be given alone: `lists="members"`, `tags="vip"`.
        """
        from newsletter.lint import refuse_placeholders
        from newsletter.sending import make_plan

        if on_change not in (None, "continue", "restart"):
            reason = f"{on_change!r} is not `continue` or `restart`"
            raise BadOption("on_change", on_change, reason)
        if limit is not None and limit < 1:
            raise BadOption("limit", limit, f"{limit} is not a positive number")
        rendered, warnings = self._sendable(Path(issue))
        if rendered.draft:  # a test copy (`test`) is how a draft is looked at
            raise DraftIssue(Path(issue))
        refuse_placeholders(self.config)  # init's REPLACE values never reach a real server
        if isinstance(lists, str | Path):  # one list, not the letters of its name
            lists = [lists]
        if lists is not None and not lists:  # a selection that came out empty is not "all"
            raise BadOption("lists", lists, "no list given: pass None to send to every list")
        paths = [self.list_path(p) for p in lists] if lists else None
        tags = [tags] if isinstance(tags, str) else list(tags)  # "vip" is one tag, not three
        if isinstance(continue_from, str | Path):
            continue_from = [continue_from]
        return make_plan(
            self, rendered, Path(issue), warnings, paths, tags, limit,
            add_new=add_new, resend_unknown=resend_unknown, on_change=on_change,
            continue_from=[Path(p) for p in continue_from],
        )  # fmt: skip

    def send(self, plan: Plan, on_progress: OnProgress | None = None) -> SendReport:
        """Send what `plan` shows, then report. Ctrl-C or SIGTERM once (in the main thread):
        finish the messages in flight and stop; the report says what remains."""
        from newsletter.sending import run_plan

        session = plan._session
        if session.used:
            raise PlanUsed()
        session.used = True
        try:
            report = run_plan(self, plan, on_progress)
        except BaseException:
            session.abandon()
            raise
        session.close()
        return report

    def status(self, issue: PathLike, destination: str | None = None) -> SendReport:
        """Where the send of `issue` to `destination` stands. Without a destination: the
        configured one when something was sent there, else the only one something was sent
        to (SeveralSends when there are more).

        Raises LedgerMissing when nothing was sent there."""
        from newsletter.sending import send_status

        return send_status(self, Path(issue), destination)

    def history(self) -> list[SendSummary]:
        """Every send of every issue (slug, destination, counts, last change), the most
        recently changed first."""
        found = self.sends.summaries()
        return sorted(found, key=lambda one: one.last_change or 0.0, reverse=True)

    def test(
        self, issue: PathLike, to: str | None = None, as_email: str | None = None
    ) -> TestResult:
        """Send one [TEST] copy to `to` (default: [newsletter] test_to); lint errors do not
        stop it (they go to notify as warnings). as_email: fill merge fields from that
        subscriber."""
        from newsletter.sending import send_test_copy

        return send_test_copy(self, Path(issue), to, as_email)

    # -- the shared store ([store] url) ----------------------------------------------------

    def migrate_store(self) -> Migration:
        """Create or upgrade the schema of the PostgreSQL store (safe to run twice, and on
        several machines at once)."""
        url = self._store_url()  # first: it says how to install the driver
        from newsletter.pg.check import migrate_store

        return migrate_store(url)

    def check_store(self) -> StoreCheck:
        """Connect to the store: its schema version, what it holds, the sends in progress."""
        url = self._store_url()
        from newsletter.pg.check import check_store

        return check_store(url)

    def _store_url(self) -> str:
        """[store] url, with its driver installed; MissingSetting when it is not set."""
        from newsletter.pg import require_driver

        url = self.config.store.url
        if not url:
            hint = "set [store] url in newsletter.toml or NEWSLETTER_STORE_URL (docs/deployment.md)"
            raise MissingSetting("store.url", "store", hint)
        require_driver(url)
        return url

    # -- publish -----------------------------------------------------------------------------

    def archive(self, output: PathLike | None = None) -> Archive:
        """Build the web archive in `output` (default: site/): the issues sent to a list (an
        SMTP send's ledger shows at least one message accepted) or marked `publish = true`;
        never a draft."""
        from newsletter.archive import build_archive

        folder = Path(output) if output is not None else self.config.root / "site"
        # the outbox mails nobody: a send there is a rehearsal, not a publication
        sent = {
            one.slug for one in self.sends.summaries() if one.destination != "outbox" and one.sent
        }
        return build_archive(self.config, folder, sent=sent)

    # -- shared ------------------------------------------------------------------------------

    def _sendable(self, issue: Path) -> tuple[Rendered, tuple[Finding, ...]]:
        """The rendered issue and its warnings; InvalidInput when it has an error."""
        from newsletter.lint import check_issue

        result = check_issue(issue, self.config)
        errors = [p for p in result.problems if p.severity == Severity.ERROR]
        if errors or result.rendered is None:
            raise InvalidInput([*errors, *([] if errors else result.problems)])
        return result.rendered, tuple(p for p in result.problems if p.severity != Severity.ERROR)

    def destination(self) -> str:
        """The ledger key of where `send` delivers (needs no password)."""
        from newsletter.transport import destination

        return destination(self.config.smtp)


@contextlib.contextmanager
def interrupt_on_signals(stop: asyncio.Event, notify: Notify) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) once: finish what is in flight, then stop; twice: stop now. The
    handlers the caller had are theirs again afterwards.

    Only the main thread can take signals; elsewhere the caller sets `stop` itself."""
    import asyncio
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def first(sig: signal.Signals) -> None:
        if stop.is_set():
            loop.remove_signal_handler(sig)
            signal.raise_signal(sig)
            return
        notify("stopping: finishing the messages in flight (Ctrl-C again to stop at once)")
        stop.set()

    for sig in before:
        loop.add_signal_handler(sig, first, sig)
    try:
        yield
    finally:
        for sig, handler in before.items():
            loop.remove_signal_handler(sig)
            if handler is not None:  # None: set outside Python, which cannot be put back
                signal.signal(sig, handler)


def say_bounced(changes: list[StatusChange], notify: Notify) -> None:
    for change in changes:
        places = [str(p) for p in change.changed] + ["the suppression file"] * change.suppressed
        where = ", ".join(places) or "the suppression file"
        notify(f"{change.email}: marked bounced in {where} (its 5.1.x refusal is in a ledger)")
    for problem in dict.fromkeys(str(p) for change in changes for p in change.broken):
        notify(f"warning: {problem} (its bounces are kept in the suppression file meanwhile)")


__all__ = [
    "Counts",
    "FailedRecipient",
    "Finding",
    "LedgerMissing",
    "Newsletter",
    "Plan",
    "SendReport",
    "SendSummary",
    "Severity",
    "TestResult",
]

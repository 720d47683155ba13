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
import datetime as dt
import logging
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from newsletter.errors import (
    BadAddress,
    BadOption,
    DraftIssue,
    InvalidInput,
    LedgerMissing,
    MissingSetting,
    PlanUsed,
    Problem,
    Severity,
)
from newsletter.people_types import (
    ConsentRecord,
    HeldRow,
    Scrubbed,
    SendOutcome,
    SignupRecord,
    SoftBounce,
    StatusEvent,
)
from newsletter.store import Migration as Migration  # returned by migrate_store
from newsletter.store import SendSummary
from newsletter.store import StoreCheck as StoreCheck  # returned by check_store

if TYPE_CHECKING:
    import asyncio

    from newsletter.archive import Archive
    from newsletter.bounces import Outcome
    from newsletter.config import Config
    from newsletter.dispatch import Notice, Progress
    from newsletter.limits import Limits
    from newsletter.models import Rendered, Subscriber
    from newsletter.pg.lists import PgStore
    from newsletter.resume import Joined
    from newsletter.store import Recipients, SendLedger, Sends, StatusChange, SubscriberStore
    from newsletter.subscribers import ImportReport, Stats
    from newsletter.transport import Transport
    from newsletter.verp import ReturnPaths

log = logging.getLogger("newsletter")

Finding = Problem  # one finding of `check`: file, line, key, severity, message
Notify = Callable[[str], None]
OnProgress = Callable[["Progress | Notice"], None]
PathLike = str | Path


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


@dataclass(frozen=True)
class Person:
    """Everything held on one address: what `subscribers show` prints, and what a data subject
    access request asks for. `to_json()` is the object of `subscribers show --json`
    (docs/person.schema.json)."""

    email: str  # as asked
    key: str  # how addresses compare (the lookup key: case and Unicode form do not matter)
    root: Path  # the newsletter folder: paths in `to_json()` are relative to it
    rows: tuple[HeldRow, ...]  # every row in every list, all its columns
    suppressed: str | None  # the reason of its suppression entry; None: no entry
    history: tuple[StatusEvent, ...]
    consents: tuple[ConsentRecord, ...]
    soft_bounces: tuple[SoftBounce, ...]
    sends: tuple[SendOutcome, ...]
    signups: tuple[SignupRecord, ...] = ()  # web-form requests, confirmed or not

    @property
    def held(self) -> bool:
        """Is anything held on the address at all? ("we hold nothing" is an answer too)"""
        places = [self.rows, self.history, self.consents, self.soft_bounces, self.sends]
        return self.suppressed is not None or any([*places, self.signups])

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "key": self.key,
            "held": self.held,
            "rows": [
                {"file": self._shown(r.path), "line": r.line, "columns": dict(r.columns)}
                for r in self.rows
            ],
            "suppressed": None if self.suppressed is None else {"reason": self.suppressed},
            "history": [dataclasses.asdict(event) for event in self.history],
            "consents": [dataclasses.asdict(record) for record in self.consents],
            "soft_bounces": [dataclasses.asdict(bounce) for bounce in self.soft_bounces],
            "signups": [dataclasses.asdict(signup) for signup in self.signups],
            "sends": [
                {
                    "issue": o.issue,
                    "destination": o.destination,
                    "outcome": o.outcome,
                    "at": None if o.at is None else utc_stamp(o.at),
                    "ledger": self._shown(Path(o.ledger)),
                    "returns": [
                        {"kind": r.kind, "status": r.status, "at": utc_stamp(r.at)}
                        for r in o.returns
                    ],
                }
                for o in self.sends
            ],
        }

    def _shown(self, path: Path) -> str:
        """A path in the folder as the folder sees it (`subscribers/news.csv`)."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


@dataclass(frozen=True)
class Erased:
    """What `Newsletter.purge` erased; only the suppression entry (a digest) is left."""

    email: str
    rows: int  # list rows deleted
    files: tuple[Path, ...]  # the lists they were in
    sends: tuple[Scrubbed, ...]  # the sends' records of the person, now without the address
    elsewhere: tuple[Path, ...] = ()  # files under subscribers/ that are no list but hold it

    @property
    def unfinished(self) -> tuple[str, ...]:
        """Ledgers in use (a send of the issue planned or running, or a reader) that may keep
        old copies: purge again once that is done."""
        return tuple(one.ledger for one in self.sends if not one.complete)


def utc_stamp(unix: float) -> str:
    """ISO 8601 UTC to the second, as the lists write times: 2026-01-31T09:00:00Z."""
    moment = dt.datetime.fromtimestamp(unix, dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


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
        if store is None and config.store.url:
            store = self._pg_store()
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
        """A list as the command line names it: a bare name is subscribers/NAME(.csv); with
        [store] url, the store's list NAME (`news`, `news.csv` and `subscribers/news.csv` alike)."""
        path = Path(given)
        if self.config.store.url:
            return Path(path.stem if path.suffix.lower() == ".csv" else path.name)
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

    # -- the bounce mailbox -------------------------------------------------------------------

    def bounces(
        self,
        maildir: PathLike | None = None,
        imap: str | None = None,
        *,
        dry_run: bool = False,
        ca_file: PathLike | None = None,
    ) -> list[Outcome]:
        """Read the bounce mailbox (a Maildir folder, or imaps://user@host[:port]/FOLDER with
        the password in NEWSLETTER_IMAP_PASSWORD; `ca_file` trusts a private CA) and apply
        each bounce and complaint not processed yet (docs/deliverability.md). One Outcome per
        message; a message that maps to nobody is one too, never an error."""
        from newsletter import bounces

        if (maildir is None) == (imap is None):
            raise BadOption("maildir", maildir, "give a Maildir folder or an imaps:// URL (one)")
        ca = Path(ca_file) if ca_file is not None else None
        mailbox: bounces.Mailbox = (
            bounces.Maildir(Path(maildir))
            if maildir is not None
            else bounces.Imap(str(imap), ca_file=ca)
        )
        rules = bounces.Rules(
            self.config.newsletter.soft_bounce_limit,
            self.config.newsletter.soft_bounce_days,
            dry_run,
        )
        processor = bounces.Processor(self.store, self.sends, self._return_paths(), rules)
        try:
            return bounces.run(mailbox, processor)
        finally:
            processor.close()
            mailbox.close()

    def _return_paths(self) -> ReturnPaths | None:
        """What reads our VERP return paths: needs the secret the sends made them with."""
        from newsletter.config import SECRET_ENV, secret
        from newsletter.verp import ReturnPaths

        if not self.config.bounce_address:
            return None
        stored = self.config.state_dir / "secret"  # what an outbox send made, if any
        create = not os.environ.get(SECRET_ENV) and stored.is_file()
        return ReturnPaths(self.config.bounce_address, secret(self.config, create=create))

    # -- people ------------------------------------------------------------------------------

    def person(self, email: str) -> Person:
        """Everything held on `email` (docs/subscribers.md, "What we hold on a person"):
        matched as addresses compare, so any spelling of it finds the same records.
        BadAddress when `email` is not an address and nothing is held on it (a name and
        address pasted from a From line)."""
        person = self._person(email)
        refusal = None if person.held else _not_an_address(email)
        if refusal is not None:  # "nothing is held" would be the answer to a typo
            raise refusal
        return person

    def _person(self, email: str) -> Person:
        from newsletter.addresses import address_key

        held = self.store.held(_given(email))
        return Person(
            email,
            address_key(email),
            self.config.root,
            held.rows,
            held.suppressed,
            held.history,
            held.consents,
            held.soft_bounces,
            tuple(self.sends.outcomes(email)),
            held.signups,
        )

    def purge(self, email: str) -> Erased:
        """Erase `email` on request: a suppression entry (a digest) first, then its rows,
        history, consent records and soft bounces, and the sends' copies of its address, name
        and merge fields. A list that cannot be changed raises InvalidInput after the rest
        is erased. BadAddress, nothing written, when `email` is not an address and nothing
        is held on it."""
        from newsletter.errors import InvalidInput

        refusal = _not_an_address(email, "; nothing was erased")
        if refusal is not None and not self._person(email).held:
            raise refusal
        try:
            purged = self.store.purge(_given(email))
        except InvalidInput:
            self.sends.forget(email)  # a broken list must not keep the ledgers unerased
            raise
        scrubbed = self.sends.forget(email)
        files, elsewhere = tuple(purged.files), tuple(purged.elsewhere)
        return Erased(email, purged.rows, files, tuple(scrubbed), elsewhere)

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

    def _pg_store(self) -> SubscriberStore:
        """The subscriber store in PostgreSQL ([store] url): connects on first use."""
        url = self._store_url()
        from newsletter.pg.lists import PgStore

        reserved = self.config.newsletter.allow_reserved_domains
        return PgStore(url, self.config.root, allow_reserved=reserved)

    def store_ready(self) -> str:
        """Where subscriber changes go, in words, once the store answers at this newsletter's
        schema version (StoreUnavailable, StoreSchemaMismatch otherwise)."""
        store = self._pg()
        if store is None:
            return f"the lists in {self.config.subscribers_dir}"
        store.list_names()  # connects and checks the schema version
        return f"the store at {store.link.place}"

    # -- subscribers ---------------------------------------------------------------------------

    def import_subscribers(
        self, source: PathLike, into: PathLike, *, fmt: str = "csv", skip_invalid: bool = False
    ) -> ImportReport:
        """Import a file (csv, mailchimp, listmonk) into a list: every bad row reported at once
        (InvalidInput) and nothing written while any is bad, unless `skip_invalid`. With the
        store, one transaction."""
        if (store := self._pg()) is not None:
            from newsletter.pg.people import import_into

            return import_into(store, Path(source), str(self.list_path(into)), fmt=fmt,
                               skip_invalid=skip_invalid)  # fmt: skip
        from newsletter.subscribers import import_list

        reserved = self.config.newsletter.allow_reserved_domains
        return import_list(self.config.root, Path(source), self.list_path(into), fmt=fmt,
                           skip_invalid=skip_invalid, allow_reserved=reserved)  # fmt: skip

    def export_subscribers(
        self, out: IO[str], lists: Sequence[PathLike] | None = None, status: str | None = None
    ) -> int:
        """Write the lists (default: all) as one CSV list (docs/subscribers.md) to `out`; how
        many rows. `status`: only rows with it."""
        paths = None if lists is None else [self.list_path(p) for p in lists]
        if (store := self._pg()) is not None:
            from newsletter.pg.people import export

            return export(store, out, None if paths is None else [str(p) for p in paths], status)
        from newsletter.subscribers.export import export_lists

        return export_lists(self.config.root, out, paths, status)

    def unsubscribe(
        self, email: str, lists: Sequence[PathLike] | None = None, *, only_these: bool = False
    ) -> StatusChange:
        """`subscribers unsubscribe`: in every list holding the address (or `lists`; with
        `only_these`, scoped to them); in none, a suppression entry."""
        paths = None if lists is None else [self.list_path(p) for p in lists]
        if (store := self._pg()) is not None:
            from newsletter.store import completed

            return completed(store.set_status(email, "unsubscribed", source="cli",
                                                   lists=paths, scope_list=only_these))  # fmt: skip
        from newsletter.subscribers import change_status

        return change_status(self.config.root, email, "unsubscribed", lists=paths,
                             scope_list=only_these, source="cli")  # fmt: skip

    def subscriber_rows(
        self, status: str | None = None, tags: Iterable[str] = ()
    ) -> tuple[Iterator[Subscriber], set[int]]:
        """`subscribers list`: every row (streamed) with `status` and any of `tags`, and the
        compact keys of the suppression entries."""
        if (store := self._pg()) is not None:
            from newsletter.pg.people import rows, suppressed_hashes

            wanted = {t.strip().casefold() for t in tags if t.strip()}
            found = (
                p for p in rows(store, None, status)
                if not wanted or wanted & {t.casefold() for t in p.tags}
            )  # fmt: skip
            return found, suppressed_hashes(store)
        from newsletter.subscribers import browse, read_suppressed

        root = self.config.root
        return browse(root, status=status, tags=tags), read_suppressed(root)

    def subscriber_stats(self) -> Stats:
        """`subscribers stats`: rows per list and status, per tag, and the recipients."""
        if (store := self._pg()) is not None:
            from newsletter.pg.people import stats

            return stats(store)
        from newsletter.subscribers import stats as list_stats

        return list_stats(self.config.root)

    def _pg(self) -> PgStore | None:
        """The store when it is PostgreSQL's; None for the CSV lists (without loading psycopg)."""
        if not self.config.store.url:
            return None
        from newsletter.pg.lists import PgStore

        return self.store if isinstance(self.store, PgStore) else None

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


def _given(email: str) -> str:
    """An address to look up or erase: anything but nothing (a row with a malformed address
    is still someone's)."""
    if not email.strip():
        from newsletter.errors import BadAddress

        raise BadAddress(email, "no address given")
    return email


def _not_an_address(email: str, then: str = "") -> BadAddress | None:
    """Why `email` is not an address (a name and address pasted from a From line matches no
    row), naming the address inside it when there is one; None for an address."""
    from email.utils import parseaddr

    from newsletter.addresses import normalise_address

    try:
        normalise_address(email, allow_reserved=True)
        return None
    except BadAddress:
        inside = parseaddr(email.strip())[1]
        inside = inside[7:] if inside.lower().startswith("mailto:") else inside
    try:
        inside = inside and normalise_address(inside, allow_reserved=True)[0]
    except BadAddress:
        inside = ""
    hint = f": give the address alone, as in {inside}" if inside else ""
    return BadAddress(email, f"not an address, and nothing is held on it{hint}{then}")


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
    "Erased",
    "FailedRecipient",
    "Finding",
    "LedgerMissing",
    "Newsletter",
    "Person",
    "Plan",
    "SendReport",
    "SendSummary",
    "Severity",
    "TestResult",
]

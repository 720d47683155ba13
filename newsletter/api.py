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
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from newsletter.api_people import Erased, Person, purge_person, read_bounces, show_person
from newsletter.api_reports import Counts, FailedRecipient, SendReport, TestResult
from newsletter.api_reports import WorkerReport as WorkerReport  # in SendReport.workers
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
from newsletter.people_types import ConsentRecord as ConsentRecord  # Person and Erased hold these
from newsletter.people_types import HeldRow as HeldRow
from newsletter.people_types import Scrubbed as Scrubbed
from newsletter.people_types import SendOutcome as SendOutcome
from newsletter.people_types import SignupRecord as SignupRecord
from newsletter.people_types import SoftBounce as SoftBounce
from newsletter.people_types import StatusEvent as StatusEvent
from newsletter.store import Migration as Migration  # returned by migrate_store
from newsletter.store import SendSummary
from newsletter.store import StoreCheck as StoreCheck  # returned by check_store

if TYPE_CHECKING:
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

log = logging.getLogger("newsletter")

Finding = Problem  # one finding of `check`: file, line, key, severity, message
Notify = Callable[[str], None]
OnProgress = Callable[["Progress | Notice"], None]
PathLike = str | Path


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
        name = path.stem if path.suffix.lower() == ".csv" else path.name
        # `--into ""` (an unset shell variable), a folder, or a hidden name, which would clash
        # with the lists' own journals and locks (.NAME.journal): never a list
        explicit = path.parent != Path(".") or path.is_absolute()  # a path, not a bare name
        folder = explicit and path.is_dir() and not self.config.store.url
        if not name or name.startswith(".") or folder:
            raise BadOption("list", given, f"{str(given)!r} is not a list name, such as news")
        if self.config.store.url:
            return Path(name)
        if explicit:
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
        return read_bounces(self, maildir, imap, dry_run=dry_run, ca_file=ca_file)

    # -- people ------------------------------------------------------------------------------

    def person(self, email: str) -> Person:
        """Everything held on `email` (docs/subscribers.md, "What we hold on a person"):
        matched as addresses compare, so any spelling of it finds the same records.
        BadAddress when `email` is not an address and nothing is held on it (a name and
        address pasted from a From line)."""
        return show_person(self, email)

    def purge(self, email: str) -> Erased:
        """Erase `email` on request: a suppression entry (a digest) first, then its rows,
        history, consent records and soft bounces, and the sends' copies of its address, name
        and merge fields. A list that cannot be changed raises InvalidInput after the rest
        is erased. BadAddress, nothing written, when `email` is not an address and nothing
        is held on it."""
        return purge_person(self, email)

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

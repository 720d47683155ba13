"""A send from plan to report, and the test copy: the wiring behind `Newsletter`.

Plan: the lists read (selection), the earlier sends' bounces applied, the ledger opened as a
draft bound to the content and the destination, the snapshot taken (or a resume checked), the
size of one message measured. Send: the locks, the ledger saved, the dispatcher run with the
composer, the DKIM pool and the blocklist, then the report (docs/sending.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.api import Finding, Newsletter, Notify, OnProgress, Plan, _Session
from newsletter.api_reports import Counts, FailedRecipient, SendReport, TestResult, WorkerReport
from newsletter.errors import (
    BadAddress,
    BadOption,
    LedgerMissing,
    MissingSetting,
    NotInList,
    OtherSend,
    SeveralSends,
)

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.dispatch import RunResult
    from newsletter.message import MessageFactory
    from newsletter.models import Rendered, Subscriber
    from newsletter.resume import Joined
    from newsletter.store import SendLedger, StatusChange

Note = Callable[[str], None]


def make_plan(
    nl: Newsletter,
    rendered: Rendered,
    issue: Path,
    warnings: tuple[Finding, ...],
    lists: list[Path] | None,
    tags: list[str],
    limit: int | None,
    *,
    add_new: bool,
    resend_unknown: bool,
    on_change: str | None,
    continue_from: list[Path],
) -> Plan:
    from newsletter.transport import open_transport

    session = _Session(nl.config, rendered, issue)
    try:
        session.transport = open_transport(nl.config)
        session.selection = nl.store.select(lists, tags)
        session.continue_from = continue_from
        session.take_lock = _send_lock(nl, session.stack, rendered)

        def note(text: str) -> None:
            session.notes.append(text)
            nl.notify(text)

        return _plan(nl, session, warnings, limit, note, add_new, resend_unknown, on_change)
    except BaseException:
        session.abandon()
        raise


def _plan(
    nl: Newsletter,
    session: _Session,
    warnings: tuple[Finding, ...],
    limit: int | None,
    note: Note,
    add_new: bool,
    resend_unknown: bool,
    on_change: str | None,
) -> Plan:
    from newsletter.limits import Limits
    from newsletter.message import MessageFactory

    config, rendered, destination = session.config, session.rendered, session.transport.destination
    key = unsubscribe_secret(config, destination, note, create=False)
    sources = nl.sends.others(rendered.slug, rendered.content, destination, session.continue_from)
    _apply_earlier_bounces(nl, note)
    ledger, opened = nl.sends.open(rendered.slug, destination, rendered.digest, on_change=on_change)
    session.ledger = ledger
    if opened:
        note(opened)
    joined = _recipients(session, ledger, note, add_new=add_new)
    for line in nl.sends.carry_over(
        ledger, sources, slug=rendered.slug, destination=destination, content=rendered.content
    ):
        note(line)
    if resend_unknown:
        note(f"{ledger.resend_unknown()} recipient(s) in doubt will be sent again, as asked")
    session.limits = Limits.from_settings(config.smtp)
    if destination == "outbox":  # [smtp]'s pace and quotas are a server's; the outbox is a folder
        session.limits = dataclasses.replace(session.limits, rate=None, hourly=None, daily=None)
    factory = MessageFactory(rendered, config, key)
    return _describe(session, ledger, factory, warnings, joined, limit)


def _send_lock(
    nl: Newsletter, stack: contextlib.ExitStack, rendered: Rendered
) -> Callable[[], None]:
    """Take the issue's send lock now if any send was ever recorded (the plan reads a ledger no
    other send may change meanwhile); returns what takes the rest once the send is confirmed,
    with the lock on the issue's content (a copy under another file name is the same issue).
    So a plan creates nothing."""
    by_slug = nl.sends.lock(rendered.slug)
    by_content = nl.sends.lock(f".content-{rendered.content[:16]}")
    held: list[object] = []

    def take() -> None:
        for lock in (by_slug, by_content):
            if lock not in held:
                stack.enter_context(lock)
                held.append(lock)

    if nl.sends.started():
        held.append(stack.enter_context(by_slug))
    return take


def _recipients(
    session: _Session, ledger: SendLedger, note: Note, *, add_new: bool
) -> list[Joined] | None:
    """A new send: the snapshot of the selection. A resume: the selection must be the
    snapshot's (or, with add_new, a wider one); returns who add_new adds."""
    from newsletter.resume import add_new_readers, check_selection
    from newsletter.sends import snapshot
    from newsletter.subscribers import shown

    selection = session.selection
    used = {f.name for f in session.rendered.fields() if f.source == "subscriber"}
    checked = check_selection(ledger, selection, str(session.issue), add_new=add_new)
    if checked:
        note(checked)
    if not ledger.fixed():
        snapshot(ledger, selection, used)
        for path in [] if selection.default else selection.empty_lists:
            name = shown(selection.folder, path)
            note(f"warning: {name}: nobody from this list is in the plan (see `left out`)")
    elif add_new:
        return add_new_readers(ledger, selection, used)
    return None


def _describe(
    session: _Session,
    ledger: SendLedger,
    factory: MessageFactory,
    warnings: tuple[Finding, ...],
    joined: list[Joined] | None,
    limit: int | None,
) -> Plan:
    from newsletter.limits import estimate_seconds

    rendered, limits = session.rendered, session.limits
    counts = ledger.counts()
    waiting = counts["pending"] + counts["deferred"]
    to_send = waiting if limit is None else min(waiting, limit)
    return Plan(
        issue=session.issue,
        slug=rendered.slug,
        subject="".join(p if isinstance(p, str) else "{" + p.name + "}" for p in rendered.subject),
        destination=session.transport.destination,
        target=session.transport.description,
        lists=tuple(ledger.get_json("lists", [])),
        recipients=sum(counts.values()),
        left_out=dict(ledger.get_json("left_out", {})),
        done=dict(counts) if ledger.attempted() else {},
        joined=None if joined is None else tuple(joined),
        warnings=warnings,
        waiting=waiting,
        to_send=to_send,
        message_size=_message_size(factory) if to_send else 0,
        connections=limits.connections,
        rate=limits.rate or None,
        estimated_seconds=estimate_seconds(to_send, limits),
        dkim=_dkim(session.config),
        notes=tuple(session.notes),
        limit=limit,
        _session=session,
    )


def _message_size(factory: MessageFactory) -> int:
    """One message as sent, for a neutral sample reader (merge fields at their defaults), never
    the first in line: one recipient's bad data must not stop the whole send here; the send
    loop skips that one."""
    from newsletter.models import Subscriber

    sample = Subscriber(email=f"reader@{factory.domain}")
    return len(factory.build(sample, eight_bit=True, dot_stuffed=True))


def _dkim(config: Config) -> str | None:
    """Checks the DKIM settings before anything is sent; how messages are signed, if they are."""
    from newsletter.dkim import DkimSigner

    signer = DkimSigner.from_config(config)
    return None if signer is None else f"d={signer.domain} s={signer.selector}"


def run_plan(nl: Newsletter, plan: Plan, on_progress: OnProgress | None) -> SendReport:
    from newsletter.message import MessageFactory

    session = plan._session
    ledger, config, rendered = session.ledger, nl.config, session.rendered
    assert ledger is not None  # a Plan is made with its ledger
    if plan.nothing_to_send:  # unknown ones wait for resend_unknown
        return _report(session, ledger, None)
    session.take_lock()
    # taken only now when .newsletter/sends/ was missing: a send through another server may
    # have started and sent meanwhile
    destination = session.transport.destination
    nl.sends.others(rendered.slug, rendered.content, destination, session.continue_from)
    key = unsubscribe_secret(config, destination, nl.notify)  # the plan may have had a stand-in
    factory = MessageFactory(rendered, config, key)
    ledger.save()  # the plan was a draft: the ledger file starts here
    paths = _return_paths(config, key, rendered.slug, destination)
    result = _run(nl, session, ledger, factory, plan.limit, on_progress, paths)
    return _report(session, ledger, result)


def _run(
    nl: Newsletter,
    session: _Session,
    ledger: SendLedger,
    factory: MessageFactory,
    limit: int | None,
    on_progress: OnProgress | None,
    return_path: Callable[[int, str], str] | None,
) -> RunResult:
    from newsletter.dispatch import Dispatcher, composer
    from newsletter.dkim import DkimSigner, SigningPool
    from newsletter.store import bouncer

    config = nl.config

    async def run() -> RunResult:
        stop = asyncio.Event()
        dispatcher = Dispatcher(
            ledger,
            session.transport,
            composer(factory, config.envelope_sender, session.rendered.digest, pool, return_path),
            session.limits,
            on_event=on_progress or _ignore,
            on_bounce=bouncer(nl.store),
            blocked=nl.store.watch(session.selection),
            stop=stop,
            limit=limit,
        )
        with interrupt_on_signals(stop, nl.notify):
            return await dispatcher.run()

    signer = DkimSigner.from_config(config)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(SigningPool(signer)) if signer else None
        return asyncio.run(run())


@contextlib.contextmanager
def interrupt_on_signals(stop: asyncio.Event, notify: Notify) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) once: finish what is in flight, then stop; twice: stop now. The
    handlers the caller had are theirs again afterwards.

    Only the main thread can take signals; elsewhere the caller sets `stop` itself."""
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


def _return_paths(
    config: Config, key: bytes, slug: str, destination: str
) -> Callable[[int, str], str] | None:
    """Each message's envelope sender when [newsletter] bounce_address is set (verp.py)."""
    from newsletter.verp import ReturnPaths

    if not config.bounce_address:
        return None
    return ReturnPaths(config.bounce_address, key).for_send(slug, destination)


def _ignore(event: object) -> None:
    pass


def _report(session: _Session, ledger: SendLedger, result: RunResult | None) -> SendReport:
    from newsletter.sends import report

    doc = report(ledger, issue=session.rendered.slug, destination=session.transport.destination)
    again = f"{session.issue}{_selection_args(ledger, session.selection.folder)}"
    session.ledger = None
    ledger.close()
    return report_of(doc, again=again, stopped=(result.stopped or None) if result else None)


def report_of(
    doc: dict[str, Any], *, again: str, live: bool = False, stopped: str | None = None
) -> SendReport:
    return SendReport(
        issue=doc["issue"],
        destination=doc["destination"],
        counts=Counts(**doc["counts"]),
        unknown=tuple(doc["unknown"]),
        failed=tuple(FailedRecipient(**f) for f in doc["failed"]),
        deferred=tuple(doc["deferred"]),
        duration_s=doc["duration_s"],
        messages_per_second=doc["messages_per_second"],
        live=live,
        stopped=stopped,
        again=again,
        workers=tuple(WorkerReport(**w) for w in doc["workers"]),
    )


def _selection_args(ledger: SendLedger, root: Path) -> str:
    """The --list/--tag options of the send's selection, for the commands we suggest."""
    from newsletter.resume import selection_args

    spec = ledger.get_json("selection", None)
    return selection_args(spec, root) if spec else ""


def _apply_earlier_bounces(nl: Newsletter, note: Note) -> None:
    """Before a send reads its ledger and the lists: the 5.1.x refusals of every earlier send,
    of this issue or another (a run killed before marking them, never resumed), so neither a
    resume nor the next issue mails a bounced reader."""
    from newsletter.store import bounces

    say_bounced(nl.store.apply_bounces(bounces(nl.sends.failures())), note)


def say_bounced(changes: list[StatusChange], notify: Notify) -> None:
    for change in changes:
        places = [str(p) for p in change.changed] + ["the suppression file"] * change.suppressed
        where = ", ".join(places) or "the suppression file"
        notify(f"{change.email}: marked bounced in {where} (its 5.1.x refusal is in a ledger)")
    for problem in dict.fromkeys(str(p) for change in changes for p in change.broken):
        notify(f"warning: {problem} (its bounces are kept in the suppression file meanwhile)")


# ---------------------------------------------------------------------------------------------
# status


def send_status(nl: Newsletter, issue: Path, destination: str | None) -> SendReport:
    from newsletter.issue import load_issue
    from newsletter.render import content_digest
    from newsletter.sends import report
    from newsletter.store import bounces

    loaded = load_issue(issue)
    slug = loaded.slug
    destination = _spelled(nl, slug, destination) if destination else _destination_of(nl, slug)
    ledger = nl.sends.find(slug, destination)
    where = _sends_elsewhere(nl, ledger, slug, content_digest(loaded), destination)
    if ledger is None:
        raise LedgerMissing(nl.sends.where(slug, destination), destination, elsewhere=where)
    if where:
        nl.notify(f"warning: {where}; the counts below do not include those")
    try:
        live = nl.sends.running(slug)
        say_bounced(nl.store.apply_bounces(bounces(ledger.failures())), nl.notify)
        doc = report(ledger, issue=slug, destination=destination, live=live)
        again = f"{issue}{_selection_args(ledger, nl.config.root)}"
    finally:
        ledger.close()
    return report_of(doc, again=again, live=live)


def _spelled(nl: Newsletter, slug: str, given: str) -> str:
    """The ledger key of a destination however it is written (`SMTP://Mail.Example.org.`, a
    short IP): the key a send through that server uses. Without a port, the one send of the
    issue through that host, else its default port under [smtp] security. Not an smtp:// URL
    (nor `outbox`): as given, so that LedgerMissing names it and the sends there are."""
    from urllib.parse import urlsplit

    from newsletter.transport import OUTBOX, smtp_destination

    text = given.strip()
    if text.lower() == OUTBOX:
        return OUTBOX
    if text[:7].lower() != "smtp://":
        return given
    where = urlsplit("//" + text[7:])
    try:
        host, port = where.hostname, where.port
    except ValueError as exc:
        reason = f"{given!r} is not outbox or smtp://host:port"
        raise BadOption("destination", given, reason) from exc
    if not host:
        return given
    if port is None:
        prefix = smtp_destination(host, 1, "none").rpartition(":")[0] + ":"
        found = {one.destination for one in nl.sends.summaries(slug)}
        ports = [one for one in found if one.startswith(prefix)]
        if len(ports) == 1:
            return ports[0]
    return smtp_destination(host, port, nl.config.smtp.security)


def _destination_of(nl: Newsletter, slug: str) -> str:
    """Where the send of `slug` to report went, whatever the environment says: the configured
    destination when something was sent there (or nowhere); else the only one that was; else
    SeveralSends, naming them."""
    configured = nl.destination()
    found = [one for one in nl.sends.summaries(slug) if one.destination]
    if not found or configured in {one.destination for one in found}:
        return configured
    if len(found) > 1:
        raise SeveralSends(slug, configured, found)
    nl.notify(
        f"nothing was sent through {configured} (the configured destination): this is the "
        f"send through {found[0].destination}"
    )
    return found[0].destination


def _sends_elsewhere(
    nl: Newsletter, ledger: SendLedger | None, slug: str, content: str, destination: str
) -> str:
    """The sends of this issue through other servers that this ledger does not carry, in
    words ("" for none): without a ledger here, "nothing has been sent" would read as nobody
    having been mailed."""
    known = set(ledger.get_json("continued_from", [])) if ledger is not None else set()
    found = nl.sends.elsewhere(slug, content, destination)
    others = [other for other in found if other.path.name not in known]
    if not others:
        return ""
    return f"this issue was sent in part through another server: {OtherSend.describe(others)}"


# ---------------------------------------------------------------------------------------------
# The unsubscribe secret and the test copy


def unsubscribe_secret(
    config: Config, destination: str, note: Note, *, create: bool = True
) -> bytes:
    """The token secret; an outbox send may create .newsletter/secret once (and says so).

    Not `create` (a plan): where that file would be made, a stand-in of the same length, so
    the plan's size estimate is right and a plan writes nothing."""
    from newsletter.config import SECRET_ENV, secret

    stored = config.state_dir / "secret"
    existed = stored.exists()
    if destination == "outbox" and not create and not existed and not os.environ.get(SECRET_ENV):
        return b"0" * 43  # secrets.token_urlsafe(32), as _stored_secret makes it
    key = secret(config, create=destination == "outbox")
    if not existed and stored.exists():
        note(
            f"created {stored} (mode 0600) to sign unsubscribe links; for real sends set "
            f"{SECRET_ENV} instead"
        )
    return key


def send_test_copy(nl: Newsletter, issue: Path, to: str | None, as_email: str | None) -> TestResult:
    from newsletter.dispatch import send_test
    from newsletter.dkim import DkimSigner, InlineSigner
    from newsletter.lint import check_issue
    from newsletter.message import MessageFactory
    from newsletter.transport import open_transport

    config = nl.config
    address = _recipient(config, to)
    result = check_issue(issue, config)
    if result.rendered is None:
        from newsletter.errors import InvalidInput

        raise InvalidInput(result.problems)
    for problem in result.problems:
        nl.notify(f"warning: {problem}")
    subscriber = _test_subscriber(nl, address, as_email)
    transport = open_transport(config)
    nl.notify(f"to: {transport.description}")
    key = unsubscribe_secret(config, transport.destination, nl.notify)
    factory = MessageFactory(result.rendered, config, key, subject_prefix="[TEST] ")
    signer = DkimSigner.from_config(config)

    def build(eight_bit: bool, dot_stuffed: bool) -> bytes:
        return factory.build(subscriber, to=address, eight_bit=eight_bit, dot_stuffed=dot_stuffed)

    inline = InlineSigner(signer) if signer else None
    accepted = asyncio.run(
        send_test(transport, build, config.envelope_sender, address, signer=inline)
    )
    return TestResult(issue, address, transport.description, accepted.code, accepted.reply)


def _recipient(config: Config, to: str | None) -> str:
    from newsletter.addresses import parse_mailbox

    if not to:
        if not config.newsletter.test_to:
            hint = "pass --to ADDRESS or set [newsletter] test_to"
            raise MissingSetting("newsletter.test_to", "recipient", hint)
        return config.newsletter.test_to  # load_config checked it (reserved names too)
    try:
        reserved = config.newsletter.allow_reserved_domains
        return parse_mailbox(to, name_allowed=False, allow_reserved=reserved)[1]
    except BadAddress as exc:
        raise BadOption("to", to, str(exc)) from None


def _test_subscriber(nl: Newsletter, address: str, as_email: str | None) -> Subscriber:
    from newsletter.models import Subscriber

    if not as_email:
        return Subscriber(email=address)
    found = nl.store.lookup(as_email)
    if found is None:
        raise NotInList(as_email, nl.config.subscribers_dir)
    return found

"""`newsletter send`, `status` and `test` (docs/sending.md).

Part of the command line (see cli.py): parse, call the API (newsletter.api), print what it
returns. The send itself lives in the API; here are the plan's and the report's wording.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from newsletter.cli import IssueArg, api, app, command, confirm, say

if TYPE_CHECKING:
    from newsletter.api import Plan, SendReport, SendSummary
    from newsletter.resume import Joined


EXIT_REMAINING = 3  # `send`: recipients remain (paused, interrupted, still deferred)
TagOption = typer.Option(
    "--tag", metavar="TAG", help="Only subscribers with this tag (repeat: any of them)."
)
OnChange = Annotated[
    Literal["continue", "restart"] | None,
    typer.Option(
        "--on-change",
        help="The issue changed after part of the list was sent: `continue` (send the new "
        "version to the rest) or `restart` (start over, mailing everyone again).",
    ),
]


@app.command()
@command
def send(
    issue: IssueArg,
    list_: Annotated[
        list[Path] | None,
        typer.Option(
            "--list", metavar="FILE", help="A list to send to (repeat); default: every list."
        ),
    ] = None,
    tag: Annotated[list[str] | None, TagOption] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, metavar="N", help="Send to the first N of the plan only."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send without asking.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final report as one JSON object.")
    ] = False,
    add_new: Annotated[
        bool, typer.Option("--add-new", help="Also send to subscribers who joined since.")
    ] = False,
    resend_unknown: Annotated[
        bool,
        typer.Option("--resend-unknown", help="Send again to those whose outcome is unknown."),
    ] = False,
    on_change: OnChange = None,
    continue_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--continue-from",
            metavar="LEDGER",
            help="A ledger (.newsletter/sends/...) of this issue sent in part through another "
            "server: continue through this one, never mailing its sent or unknown recipients "
            "(repeat for each such ledger).",
        ),
    ] = None,
) -> None:
    """Send an issue to the list.

    Shows the plan, then sends with --yes or after a yes at the prompt."""
    nl = api(issue)
    plan = nl.plan(
        issue, list_ or None, tag or [], limit, add_new=add_new, resend_unknown=resend_unknown,
        on_change=on_change, continue_from=continue_from or [],
    )  # fmt: skip
    with plan:
        _show_plan(plan)
        if plan.nothing_to_send:
            say("nothing to send")
        else:
            confirm(yes, "Send now?", "sent", "nothing was sent", "run again with --yes to send")
        with _progress(plan.to_send) as show:
            report = nl.send(plan, on_progress=show)
    raise typer.Exit(_finish(report, issue, as_json, ran=not plan.nothing_to_send))


def _show_plan(plan: Plan) -> None:
    if plan.dkim:
        say(f"DKIM: signing as {plan.dkim} (in worker processes)")
    say(f"issue: {plan.issue} ({plan.slug}): {plan.subject}")
    say(f"to: {plan.target}")
    say(f"lists: {', '.join(plan.lists) or '(none)'}")
    why = ", ".join(f"{n} {reason}" for reason, n in plan.left_out.items())
    say(
        f"recipients: {plan.recipients} after dedupe and suppression"
        + (f"; left out: {why}" if why else "")
    )
    if plan.joined is not None:
        _say_joined(plan.joined)
    if plan.done:
        done = ", ".join(
            f"{n} {state}" for state, n in plan.done.items() if n and state != "pending"
        )
        say(f"resuming: {done}")
    say(f"lint: {len(plan.warnings)} warning(s), no errors")
    for warning in plan.warnings:
        say(f"  warning: {warning}")
    if plan.nothing_to_send:  # the caller says so; a size, a pace and a duration of nothing
        return
    size = f"{plan.to_send} message(s) of ~{plan.message_size / 1024:.0f} KB"
    if plan.destination == "outbox":  # files in a folder: no connections, no pace to keep
        say(f"writing: {size}")
        return
    rate = f"{plan.rate:g}/s" if plan.rate else "no rate limit"
    say(f"sending: {size}, {plan.connections} connection(s), {rate}")
    if plan.estimated_seconds is not None:
        say(f"estimated duration: {_duration(plan.estimated_seconds)}")
    else:
        say("estimated duration: set by the server's pace (no [smtp] rate limit)")


def _say_joined(joined: Sequence[Joined]) -> None:
    """Who --add-new adds, by why they were not in the snapshot (10 names per reason)."""
    say(f"--add-new: adds {len(joined)} not in the snapshot")
    by_why: dict[str, list[str]] = {}
    for one in joined:
        by_why.setdefault(one.why, []).append(one.email)
    for why, emails in by_why.items():
        more = f" and {len(emails) - 10} more" if len(emails) > 10 else ""
        say(f"  {len(emails)} {why}: {', '.join(emails[:10])}{more}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _progress:  # used as a context manager like a function
    """A rich progress bar on a terminal; otherwise a plain line every 5 seconds. Neither shows
    a rate: the run's one rate figure is in the report at the end."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None
        self.last = 0.0
        self.said = ""  # the last line printed: the final event may repeat the one at the end

    def __enter__(self) -> Callable[[Any], None]:
        if sys.stderr.isatty() and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("send", total=self.total)
        return self.show

    def show(self, event: Any) -> None:
        if not hasattr(event, "done"):  # a Notice: a line of text
            (self.bar.console.print if self.bar else say)(event.text)
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=event.done)
        elif event.elapsed - self.last >= 5.0 or event.done == event.total:
            self.last = event.elapsed
            line = (
                f"{event.done}/{event.total} done: {event.sent} sent, {event.failed} failed, "
                f"{event.deferred} deferred, {event.unknown} unknown"
            )
            if line != self.said or event.done < event.total:  # a repeat mid-send: alive
                self.said = line
                say(line)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _finish(report: SendReport, issue: Path, as_json: bool, *, ran: bool) -> int:
    """Print the report (stdout; on stderr beside --json's object) and choose the exit code."""
    _print_report(report, str(issue), say if as_json else typer.echo, last_run=ran)
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    if report.remaining:
        say(
            f"{report.remaining} recipient(s) remain: resume with "
            f"`newsletter send {report.again} --yes`"
        )
        return EXIT_REMAINING
    return 0


def _print_report(
    report: SendReport, issue: str, echo: Callable[[str], None], *, last_run: bool = True
) -> None:
    """The counts, the last run's duration and rate (unless this run sent nothing), failures."""
    c = report.counts
    returned = f"; later: bounced {c.bounced}, complained {c.complained}"
    echo(
        f"sent {c.sent}, failed {c.failed}, deferred {c.deferred}, "
        f"unknown {c.unknown}, left out {c.left_out}, pending {c.pending}"
        + (returned if c.bounced or c.complained else "")
    )
    if report.duration_s and last_run:
        echo(f"last run: {report.duration_s:.1f} s, {report.messages_per_second:.0f} messages/s")
    if report.stopped:
        echo(report.stopped)
    _print_workers(report, echo)
    for failure in report.failed[:20]:
        echo(f"  failed: {failure.email}: {failure.code or ''} {failure.reply}")
    if len(report.failed) > 20:
        echo(
            f"  ... and {len(report.failed) - 20} more (`newsletter status {issue} --failed --csv`)"
        )
    if report.unknown:
        echo(
            f"{len(report.unknown)} unknown (the connection broke after the data went out: "
            f"they may have it). `newsletter status {issue}` lists them; "
            f"`newsletter send {report.again} --resend-unknown --yes` sends them again"
        )


def _print_workers(report: SendReport, echo: Callable[[str], None]) -> None:
    """Each sender's share, when several senders share the send (a PostgreSQL store)."""
    if all(w.id == "local" for w in report.workers):
        return
    for w in report.workers:
        state = ", working now" if w.live else ""
        in_flight = f", {w.sending} in flight" if w.sending else ""
        echo(
            f"  sender {w.id}: sent {w.sent}, failed {w.failed}, deferred {w.deferred}, "
            f"unknown {w.unknown}{in_flight}{state}"
        )


@app.command()
@command
def status(
    issue: Annotated[
        Path | None,
        typer.Argument(help="The issue file; without it, every send of every issue is listed."),
    ] = None,
    destination: Annotated[
        str | None,
        typer.Option(
            "--destination",
            metavar="WHERE",
            help="The send to report, as `status` lists it (outbox, smtp://host:port); "
            "default: the configured one, or the only one the issue was sent to.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failures.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="With --failed: CSV on stdout.")] = False,
) -> None:
    """Show where a send of an issue stands.

    Any time, also while it runs; without an issue, every send of every issue."""
    if csv_ and not failed:  # the only CSV is of the failures: never the report as "CSV"
        raise typer.BadParameter("--csv needs --failed", param_hint="--csv")
    if issue is None:
        for name, given in (("--failed", failed), ("--destination", destination is not None)):
            if given:  # of one send: never the list of every send in their place
                raise typer.BadParameter(f"{name} needs an ISSUE", param_hint=name)
        _list_sends(api().history(), as_json)
        return
    from newsletter.errors import BadOption

    try:
        report = api(issue).status(issue, destination)
    except BadOption as exc:  # the API names its argument; here it is the option
        raise BadOption("--destination", exc.value, exc.reason) from None
    if failed and not (csv_ or as_json):
        for failure in report.failed:
            answer = " ".join(str(part) for part in (failure.code, failure.reply) if part)
            typer.echo(f"failed: {failure.email}: {answer}")
    elif failed and csv_:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["email", "code", "reply"])
        writer.writerows([f.email, f.code, f.reply] for f in report.failed)
    elif as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        _print_report(report, str(issue), typer.echo)
        if report.live:
            typer.echo("a send of this issue is running now")
        for email in report.unknown:
            typer.echo(f"unknown: {email}")


def _list_sends(sends: list[SendSummary], as_json: bool) -> None:
    """One line per send (tab-separated, most recent first), or a JSON array of them."""
    import datetime as dt

    def when(one: SendSummary) -> str:
        at = one.last_change
        return (
            dt.datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds") if at else ""
        )

    if as_json:
        rows = [
            {"issue": one.slug, "destination": one.destination, "counts": dict(one.counts),
             "last_change": when(one) or None}
            for one in sends
        ]  # fmt: skip
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for one in sends:
        counts = ", ".join(f"{n} {state}" for state, n in one.counts.items() if n)
        typer.echo("\t".join((one.slug, one.destination, counts or "empty", when(one))))
    if not sends:
        say("no send yet")


@app.command(name="test")
@command
def send_test_copy(
    issue: IssueArg,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="EMAIL", help="Send to this address (default: test_to)."),
    ] = None,
    as_subscriber: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="EMAIL",
            help="Fill merge fields from this subscriber (default: a sample).",
        ),
    ] = None,
) -> None:
    """Send one [TEST] copy of an issue to yourself.

    Lint errors are only warnings here."""
    from newsletter.errors import BadOption

    nl = api(issue)
    try:
        sent = nl.test(issue, to=to, as_email=as_subscriber)
    except BadOption as exc:  # the API names its argument; here it is the option
        raise BadOption(f"--{exc.option}", exc.value, exc.reason) from None
    if nl.destination() == "outbox":  # the outbox "answers" with the file it wrote
        typer.echo(f"wrote a test of {issue} for {sent.to} to {sent.reply}")
    else:
        typer.echo(f"sent a test of {issue} to {sent.to}: {sent.code} {sent.reply}")

"""The `newsletter` command: parse, call one core function, print.

The only module that prints, prompts or exits, and the only one importing typer and rich.
Core modules raise NewsletterError; `command` turns it into one clear message and an exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from newsletter import __version__
from newsletter.errors import InvalidInput, NewsletterError

if TYPE_CHECKING:  # types only: the modules themselves are imported where a command needs them
    import asyncio

    from newsletter.config import Config
    from newsletter.dispatch import Limits, RunResult
    from newsletter.errors import Problem
    from newsletter.ledger import Ledger
    from newsletter.lint import CheckResult
    from newsletter.message import MessageFactory
    from newsletter.models import Issue, Rendered
    from newsletter.resume import Joined
    from newsletter.subscribers import Selection, StatusChange
    from newsletter.transport import Transport

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    help="Write a newsletter as TOML in git, render it, test it, send it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    rich_markup_mode=None,
)
subscribers_app = typer.Typer(help="Manage the CSV lists in subscribers/.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")

_state: dict[str, Path | None] = {"config": None}


def say(message: str) -> None:
    """A progress or status line for the user: stderr, so stdout stays clean for data."""
    typer.echo(message, err=True)


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command body; a NewsletterError becomes its message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}" if "\n" not in str(exc) else str(exc), err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a file error no core function mapped: still one clear line
            from newsletter.errors import StorageError
            from newsletter.fileio import storage_error

            if exc.filename:
                exc = storage_error(Path(os.fsdecode(exc.filename)), exc, "cannot use it")
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(StorageError.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def load() -> Config:
    from newsletter.config import load_config

    return load_config(explicit=_state["config"])


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="newsletter.toml to use (default: the nearest one in this folder or its parents).",
            dir_okay=True,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["config"] = config


def main() -> Any:
    return app(prog_name="newsletter")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


# ---------------------------------------------------------------------------------------------
# Compose: init, new, check, render, preview

IssueArg = Annotated[
    Path, typer.Argument(help="The issue file (TOML), e.g. issues/2021-09-x.toml.")
]


@app.command()
@command
def init(
    folder: Annotated[Path, typer.Argument(help="Folder to create (or complete).")],
) -> None:
    """Scaffold a newsletter folder: newsletter.toml, templates/, issues/, subscribers/."""
    import datetime as dt

    from newsletter.scaffold import init as scaffold

    for path, created in scaffold(folder, dt.date.today()):
        say(f"{'created' if created else 'kept (exists)'}  {path}")
    say(f"next: cd {folder} && newsletter check issues/*.toml")


@app.command()
@command
def new(title: Annotated[str, typer.Argument(help="Title of the new issue.")]) -> None:
    """Start a new issue: issues/<YYYY-MM>-<slug>.toml from a skeleton of every block kind."""
    import datetime as dt

    from newsletter.scaffold import new_issue

    path = new_issue(load().root, title, dt.date.today())
    typer.echo(str(path))


@app.command()
@command
def check(
    issue: IssueArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Validate and lint an issue: exit 0 without errors (warnings are printed), 1 with errors."""
    import json

    from newsletter.lint import check_issue

    result = check_issue(issue, load())
    if as_json:
        typer.echo(json.dumps(_check_json(result), indent=2, ensure_ascii=False))
    else:
        for problem in result.problems:
            prefix = "" if problem.severity == "error" else "warning: "
            typer.echo(f"{prefix}{problem}", err=True)
        errors = sum(p.severity == "error" for p in result.problems)
        warnings = len(result.problems) - errors
        say(f"{issue}: {errors} error(s), {warnings} warning(s)")
    if not result.ok:
        raise typer.Exit(1)


def _check_json(result: CheckResult) -> dict[str, Any]:
    def item(problem: Problem) -> dict[str, Any]:
        return {
            "file": str(problem.path) if problem.path else None,
            "line": problem.line,
            "field": problem.field,
            "message": problem.message,
        }

    return {
        "file": str(result.path),
        "ok": result.ok,
        "errors": [item(p) for p in result.problems if p.severity == "error"],
        "warnings": [item(p) for p in result.problems if p.severity == "warning"],
    }


@app.command()
@command
def render(
    issue: IssueArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder for the files (default: build/).")
    ] = None,
) -> None:
    """Render an issue to <slug>.html and <slug>.txt (merge fields show their defaults)."""
    from newsletter.render import render_issue, write_outputs

    config = load()
    rendered = render_issue(issue, config)
    for path, size in write_outputs(rendered, config, output or config.root / "build"):
        typer.echo(f"{path}  {size:,} bytes")


@app.command()
@command
def preview(
    issue: IssueArg,
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve it on 127.0.0.1, reloading on every change.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the preview server.")] = 8000,
) -> None:
    """Render an issue and open it in the browser (or serve it live with --serve)."""
    config = load()
    if serve:
        from newsletter.serve import listen, run_preview

        sock = listen("127.0.0.1", port)
        say(f"previewing {issue} at http://127.0.0.1:{sock.getsockname()[1]}/  (Ctrl-C stops)")
        run_preview(issue, config, sock=sock)
        return
    import webbrowser

    from newsletter.render import render_issue, write_outputs

    html_path = write_outputs(render_issue(issue, config), config, config.root / "build")[0][0]
    opened = webbrowser.open(html_path.resolve().as_uri())
    typer.echo(f"{html_path}" + ("" if opened else "  (no browser found: open this file)"))


# ---------------------------------------------------------------------------------------------
# newsletter subscribers ...

ListOption = Annotated[
    Path | None,
    typer.Option(
        "--list",
        help="A list: a bare name means subscribers/NAME (.csv added if missing), else a path.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _list_path(folder: Path, given: Path | None) -> Path | None:
    if given is None:
        return None
    if given.parent != Path(".") or given.is_absolute():
        return given
    name = given.name if given.suffix else f"{given.name}.csv"
    return folder / "subscribers" / name


@subscribers_app.command("add")
@command
def subscribers_add(
    email: str,
    name: Annotated[str, typer.Option("--name", help="The person's name.")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag (repeat for several).")
    ] = None,
    list_: ListOption = None,
    resubscribe: Annotated[
        bool,
        typer.Option(
            "--resubscribe", help="They unsubscribed before and asked to be subscribed again."
        ),
    ] = False,
) -> None:
    """Subscribe EMAIL to a list (default: subscribers/subscribers.csv)."""
    from newsletter import subscribers

    folder = load().root
    added = subscribers.add(
        folder,
        email,
        name=name,
        tags=tag or [],
        list_path=_list_path(folder, list_),
        resubscribe=resubscribe,
    )
    if added.created:
        say(f"added {added.email} to {added.path}")
    elif added.changed:
        say(f"{added.email} was already in {added.path}: updated")
    else:
        say(f"{added.email} was already in {added.path}: nothing to change")


def _say_status(change: Any, verb: str) -> None:
    for path in change.changed:
        say(f"{change.email}: {verb} in {path}")
    for path in change.held:
        if path not in change.changed:
            say(f"{change.email}: already {change.status} (or stronger) in {path}")
    if change.suppressed:
        say(f"{change.email}: in no list; recorded in the suppression file")


@subscribers_app.command("unsubscribe")
@command
def subscribers_unsubscribe(
    email: str,
    list_: ListOption = None,
    only_this_list: Annotated[
        bool,
        typer.Option(
            "--only-this-list",
            help="With --list: keep them subscribed to other lists (default: unsubscribed from "
            "every send).",
        ),
    ] = False,
) -> None:
    """Unsubscribe EMAIL from every list holding it (or --list); none does: suppress it."""
    from newsletter import subscribers

    folder = load().root
    path = _list_path(folder, list_)
    if only_this_list and path is None:
        raise typer.BadParameter("--only-this-list needs --list")
    change = subscribers.change_status(
        folder,
        email,
        "unsubscribed",
        lists=None if path is None else [path],
        scope_list=only_this_list,
    )
    _say_status(change, "unsubscribed")


@subscribers_app.command("remove")
@command
def subscribers_remove(email: str, list_: ListOption = None) -> None:
    """Mark EMAIL unsubscribed (the row and its consent record stay; see `purge`)."""
    from newsletter import subscribers
    from newsletter.errors import NewsletterError

    folder = load().root
    path = _list_path(folder, list_)
    lists = None if path is None else [path]
    if not subscribers.find(folder, email, lists):
        raise NewsletterError(f"{email} is in no list")
    change = subscribers.change_status(folder, email, "unsubscribed", lists=lists)
    _say_status(change, "removed (status unsubscribed)")


@subscribers_app.command("purge")
@command
def subscribers_purge(email: str) -> None:
    """Erase EMAIL on request: delete its rows everywhere, keep only a hashed suppression entry."""
    from newsletter import subscribers

    purged = subscribers.purge(load().root, email)
    for path in purged.files:
        say(f"{email}: deleted from {path}")
    if not purged.files:
        say(f"{email}: in no list")
    say("suppression entry kept (a hash): a later import cannot bring them back")
    say("not reached from here: copies in git history, backups and send ledgers")


@subscribers_app.command("import")
@command
def subscribers_import(
    file: Path,
    into: Annotated[Path, typer.Option("--into", help="The list to import into (created).")],
    format_: Annotated[
        str, typer.Option("--format", help="csv, mailchimp (audience export) or listmonk.")
    ] = "csv",
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the good rows; list the bad ones.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Import FILE into a list: every bad row reported; nothing written while any is bad."""
    from newsletter import subscribers

    folder = load().root
    target = _list_path(folder, into) or into
    report = subscribers.import_list(folder, file, target, fmt=format_, skip_invalid=skip_invalid)
    notes = [*report.skipped, *report.merged, *report.suppressed]
    if json_:
        data = {
            "into": str(report.into),
            "added": report.added,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "skipped": [str(p) for p in report.skipped],
            "merged": [str(p) for p in report.merged],
            "suppressed": [str(p) for p in report.suppressed],
        }
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
    for problem in notes:
        say(f"{'skipped' if problem.severity == 'error' else 'note'}: {problem}")
    say(
        f"{report.into}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.skipped)} bad rows skipped"
    )


@subscribers_app.command("list")
@command
def subscribers_list(
    status: Annotated[
        str | None, typer.Option("--status", help="Only this status (e.g. subscribed).")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only people with this tag.")] = None,
    json_: JsonOption = False,
) -> None:
    """Print the rows of every list: email, name, status, tags, list (tab-separated)."""
    from newsletter import subscribers
    from newsletter.addresses import address_key, key_hash

    root = load().root
    rows = subscribers.browse(root, status=status, tag=tag)
    suppressed = subscribers.read_suppressed(root)
    if json_:  # every list read to its end first: a list that stops halfway prints no "[..."
        for _ in subscribers.browse(root):
            pass
        typer.echo("[", nl=False)
    for number, person in enumerate(rows):
        tags = subscribers.join_tags(person.tags)
        where = person.list_path.name if person.list_path else ""
        # A subscribed row whose address is in the suppression file gets no mail: say so.
        held = person.status == "subscribed" and key_hash(address_key(person.email)) in suppressed
        if json_:
            item = {
                "email": person.email,
                "name": person.name,
                "status": person.status,
                "tags": sorted(person.tags),
                "list": where,
                "suppressed": held,
            }
            typer.echo(("," if number else "") + json.dumps(item, ensure_ascii=False))
        else:
            shown = "suppressed" if held else person.status
            typer.echo("\t".join((person.email, person.name, shown, tags, where)))
    if json_:
        typer.echo("]")


@subscribers_app.command("stats")
@command
def subscribers_stats(json_: JsonOption = False) -> None:
    """Rows per list and status, subscribed rows per tag, distinct recipients."""
    from newsletter import subscribers
    from newsletter.models import STATUSES

    result = subscribers.stats(load().root)
    if json_:
        data = {
            "lists": {name: dict(counts) for name, counts in result.by_list.items()},
            "tags": dict(result.by_tag),
            "recipients": result.recipients,
            "suppressed_entries": result.suppressed_entries,
            "held_back": result.held_back,
        }
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for name, counts in result.by_list.items():
        parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        typer.echo(f"{name}: {sum(counts.values())} rows ({parts or 'empty'})")
    for tag, count in sorted(result.by_tag.items()):
        typer.echo(f"tag {tag}: {count} subscribed")
    typer.echo(f"recipients of a send to every list: {result.recipients}")
    typer.echo(f"suppression entries: {result.suppressed_entries}")
    if result.held_back:
        typer.echo(f"subscribed rows held back by the suppression file: {result.held_back}")


@subscribers_app.command("check")
@command
def subscribers_check(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Lists to check (default: all in subscribers/).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Check lists: every bad row as file:line: reason; exit 1 when there is an error."""
    from newsletter import subscribers

    paths = files or subscribers.list_files(load().root)
    report = subscribers.check_lists(paths)
    if json_:
        data = [
            {
                "file": str(p.path),
                "line": p.line,
                "field": p.field,
                "severity": p.severity,
                "message": p.message,
            }
            for p in report.problems
        ]
        typer.echo(json.dumps({"rows": report.rows, "problems": data}, ensure_ascii=False))
    else:
        for problem in report.problems:
            typer.echo(f"{problem}" + (" (warning)" if problem.severity == "warning" else ""))
    errors = len(report.errors)
    say(f"{len(report.files)} lists, {report.rows} rows, {errors} errors")
    if errors:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# Dispatch: send, status (docs/sending.md)

EXIT_REMAINING = 3  # `send`: recipients remain (paused, interrupted, still deferred)
OnChange = Annotated[
    str | None,
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
        typer.Option("--list", help="A list to send to (repeat); default: every list."),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only subscribers with this tag (repeat).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Send to the first N of the plan only.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Send without asking.")] = False,
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
            help="A ledger (.newsletter/sends/...) of this issue sent in part through another "
            "server: continue through this one, never mailing its sent or unknown recipients "
            "(repeat for each such ledger).",
        ),
    ] = None,
) -> None:
    """Send an issue to the list: show the plan, then send (with --yes or at the prompt)."""
    if on_change not in (None, "continue", "restart"):
        raise typer.BadParameter("must be `continue` or `restart`", param_hint="--on-change")
    config = load()
    prepared = _prepare_send(issue, config, list_, tag or [], limit)
    rendered = prepared.rendered
    with _send_lock(config.state_dir, rendered.slug, rendered.content) as lock:
        code = _send_locked(
            prepared, config, yes=yes, as_json=as_json, add_new=add_new,
            resend_unknown=resend_unknown, on_change=on_change, limit=limit, lock=lock,
            continue_from=continue_from or [],
        )  # fmt: skip
    raise typer.Exit(code)


@contextlib.contextmanager
def _send_lock(state_dir: Path, slug: str, content: str) -> Iterator[Callable[[], None]]:
    """The issue's send lock, and a function that takes it if it is not held yet, with the
    lock on the issue's content (a copy under another file name is the same issue).

    The slug's lock is held from the start when .newsletter/sends/ exists (the plan reads a
    ledger no other send may change meanwhile); the rest once the send is confirmed, so a plan
    creates nothing.
    """
    from newsletter.dispatch import SendLock

    by_slug, by_content = SendLock(state_dir, slug), SendLock(state_dir, f".content-{content[:16]}")
    with contextlib.ExitStack() as stack:
        held: list[SendLock] = []

        def take() -> None:
            for lock in (by_slug, by_content):
                if lock not in held:
                    held.append(stack.enter_context(lock))

        if by_slug.path.parent.is_dir():
            held.append(stack.enter_context(by_slug))
        yield take


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """What `send` knows before taking the lock: content, lint, transport, recipients."""

    rendered: Rendered
    transport: Transport
    selection: Selection
    issue_path: Path
    warnings: list[Problem]


def _prepare_send(
    issue: Path, config: Config, lists: list[Path] | None, tags: list[str], limit: int | None
) -> _Prepared:
    from newsletter.lint import check_issue
    from newsletter.subscribers import select
    from newsletter.transport import open_transport

    result = check_issue(issue, config)
    errors = [p for p in result.problems if p.severity == "error"]
    if errors or result.rendered is None:
        raise InvalidInput([*errors, *([] if errors else result.problems)])
    paths = [_list_path(config.root, p) or p for p in lists] if lists else None
    return _Prepared(
        rendered=result.rendered,
        transport=open_transport(config),
        selection=select(config.root, paths, tags),
        issue_path=issue,
        warnings=[p for p in result.problems if p.severity != "error"],
    )


def _send_locked(
    prepared: _Prepared,
    config: Config,
    *,
    yes: bool,
    as_json: bool,
    add_new: bool,
    resend_unknown: bool,
    on_change: str | None,
    limit: int | None,
    lock: Callable[[], None],
    continue_from: list[Path],
) -> int:
    from newsletter.dispatch import Limits, continue_sends, open_ledger, other_sends
    from newsletter.message import MessageFactory

    rendered, transport = prepared.rendered, prepared.transport
    key = unsubscribe_secret(config, transport.destination, create=yes)
    sources = other_sends(
        config.state_dir, rendered.slug, rendered.content, transport.destination, continue_from
    )
    _apply_earlier_bounces(config)
    ledger, note = open_ledger(
        config.state_dir, rendered.slug, transport.destination, rendered.digest, on_change=on_change
    )
    if note:
        say(note)
    used = {f.name for f in rendered.fields() if f.source == "subscriber"}
    joined = _recipients(prepared, ledger, used, add_new=add_new)
    for line in continue_sends(
        ledger, sources, slug=rendered.slug, destination=transport.destination,
        content=rendered.content,
    ):  # fmt: skip
        say(line)
    if resend_unknown:
        say(f"{ledger.resend_unknown()} recipient(s) in doubt will be sent again, as asked")
    factory = MessageFactory(rendered, config, key)
    limits = Limits.from_settings(config.smtp)
    _say_dkim(config)
    _show_plan(prepared, ledger, factory, limits, joined, limit)
    counts = ledger.counts()
    if counts["pending"] + counts["deferred"] == 0:  # unknown ones wait for --resend-unknown
        say("nothing to send")
        return _finish(prepared, ledger, None, as_json)
    if not _confirmed(yes):
        return 0
    lock()
    # taken only now when .newsletter/sends/ was missing: a send through another server may
    # have started and sent meanwhile
    other_sends(
        config.state_dir, rendered.slug, rendered.content, transport.destination, continue_from
    )
    if not yes:  # confirmed at the prompt: the plan may have signed with a stand-in key
        key = unsubscribe_secret(config, transport.destination)
        factory = MessageFactory(rendered, config, key)
    ledger.save()  # the plan was a draft: the ledger file starts here
    result = _run_send(prepared, config, ledger, factory, limits, limit)
    return _finish(prepared, ledger, result, as_json)


def _recipients(
    prepared: _Prepared, ledger: Ledger, used: set[str], *, add_new: bool
) -> list[Joined] | None:
    """A new send: the snapshot of the selection. A resume: the selection must be the
    snapshot's (or, with --add-new, a wider one); returns who --add-new adds."""
    from newsletter.dispatch import snapshot
    from newsletter.resume import add_new_readers, check_selection
    from newsletter.subscribers import shown

    issue = str(prepared.issue_path)
    note = check_selection(ledger, prepared.selection, issue, add_new=add_new)
    if note:
        say(note)
    if not ledger.attempted():
        snapshot(ledger, prepared.selection, used)
        for path in [] if prepared.selection.default else prepared.selection.empty_lists:
            name = shown(prepared.selection.folder, path)
            say(f"warning: {name}: nobody from this list is in the plan (see `left out`)")
    elif add_new:
        return add_new_readers(ledger, prepared.selection, used)
    return None


def _show_plan(
    prepared: _Prepared,
    ledger: Ledger,
    factory: MessageFactory,
    limits: Limits,
    joined: list[Joined] | None,
    limit: int | None,
) -> None:
    from newsletter.dispatch import estimate_seconds
    from newsletter.models import Subscriber

    rendered = prepared.rendered
    counts = ledger.counts()
    subject = "".join(p if isinstance(p, str) else "{" + p.name + "}" for p in rendered.subject)
    say(f"issue: {prepared.issue_path} ({rendered.slug}): {subject}")
    say(f"to: {prepared.transport.description}")
    lists = ledger.get_json("lists", [])
    say(f"lists: {', '.join(lists) or '(none)'}")
    left_out = ledger.get_json("left_out", {})
    why = ", ".join(f"{n} {reason}" for reason, n in left_out.items())
    total = sum(counts.values())
    say(f"recipients: {total} after dedupe and suppression" + (f"; left out: {why}" if why else ""))
    if joined is not None:
        _say_joined(joined)
    if ledger.attempted():
        done = ", ".join(f"{n} {state}" for state, n in counts.items() if n and state != "pending")
        say(f"resuming: {done}")
    say(f"lint: {len(prepared.warnings)} warning(s), no errors")
    for warning in prepared.warnings:
        say(f"  warning: {warning}")
    to_send = counts["pending"] + counts["deferred"]
    if limit is not None:
        to_send = min(to_send, limit)
    # A neutral sample reader (merge fields at their defaults), never the first in line: one
    # recipient's bad data must not stop the whole send here; the send loop skips that one.
    sample = Subscriber(email=f"reader@{factory.domain}")
    size = len(factory.build(sample, eight_bit=True, dot_stuffed=True)) if to_send else 0
    rate = f"{limits.rate:g}/s" if limits.rate else "no rate limit"
    say(
        f"sending: {to_send} message(s) of ~{size / 1024:.0f} KB, "
        f"{limits.connections} connection(s), {rate}"
    )
    seconds = estimate_seconds(to_send, limits)
    if seconds is not None:
        say(f"estimated duration: {_duration(seconds)}")
    else:
        say("estimated duration: set by the server's pace (no [smtp] rate limit)")


def _say_joined(joined: list[Joined]) -> None:
    """Who --add-new adds, by why they were not in the snapshot (10 names per reason)."""
    say(f"--add-new: adds {len(joined)} not in the snapshot")
    by_why: dict[str, list[str]] = {}
    for one in joined:
        by_why.setdefault(one.why, []).append(one.email)
    for why, emails in by_why.items():
        more = f" and {len(emails) - 10} more" if len(emails) > 10 else ""
        say(f"  {len(emails)} {why}: {', '.join(emails[:10])}{more}")


def _say_dkim(config: Config) -> None:
    """Check the DKIM settings before anything is sent, and say whether messages are signed."""
    from newsletter.dkim import DkimSigner

    signer = DkimSigner.from_config(config)
    if signer is not None:
        say(f"DKIM: signing as d={signer.domain} s={signer.selector} (in worker processes)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _confirmed(yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        say("not sent: nothing was sent (run again with --yes to send)")
        return False
    if typer.confirm("Send now?", default=False, err=True):
        return True
    say("not sent")
    return False


def _run_send(
    prepared: _Prepared,
    config: Config,
    ledger: Ledger,
    factory: MessageFactory,
    limits: Limits,
    limit: int | None,
) -> RunResult:
    import asyncio
    import contextlib

    from newsletter.dispatch import Dispatcher, composer
    from newsletter.dkim import DkimSigner, SigningPool

    sender = config.envelope_sender
    counts = ledger.counts()
    total = min(counts["pending"] + counts["deferred"], limit or sys.maxsize)

    async def run() -> RunResult:
        stop = asyncio.Event()
        _on_interrupt(stop)
        dispatcher = Dispatcher(
            ledger,
            prepared.transport,
            composer(factory, sender, prepared.rendered.digest, pool),
            limits,
            on_event=show,
            on_bounce=_bouncer(config),
            blocked=_blocked(config, prepared.selection.lists),
            stop=stop,
            limit=limit,
        )
        return await dispatcher.run()

    signer = DkimSigner.from_config(config)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(SigningPool(signer)) if signer else None
        show = stack.enter_context(_progress(total))
        return asyncio.run(run())


def _on_interrupt(stop: asyncio.Event) -> None:
    """Ctrl-C (or SIGTERM) once: finish what is in flight, then stop; twice: stop now."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()

    def first(sig: signal.Signals) -> None:
        if stop.is_set():
            loop.remove_signal_handler(sig)
            signal.raise_signal(sig)
            return
        say("stopping: finishing the messages in flight (Ctrl-C again to stop at once)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first, sig)


def _bouncer(config: Config) -> Callable[[str], Any]:
    import asyncio

    from newsletter.subscribers import set_status

    async def bounce(email: str) -> None:
        await asyncio.to_thread(set_status, config.root, email, "bounced")

    return bounce


def _apply_bounces(ledger: Ledger, config: Config) -> None:
    """5.1.x refusals a killed run recorded but did not mark in the lists (docs/sending.md)."""
    from newsletter.resume import apply_bounces

    _say_bounced(apply_bounces(ledger, config.root))


def _say_bounced(changes: list[StatusChange]) -> None:
    for change in changes:
        places = [str(p) for p in change.changed] + ["the suppression file"] * change.suppressed
        where = ", ".join(places) or "the suppression file"
        say(f"{change.email}: marked bounced in {where} (its 5.1.x refusal is in a ledger)")
    for problem in dict.fromkeys(str(p) for change in changes for p in change.broken):
        say(f"warning: {problem} (its bounces are kept in the suppression file meanwhile)")


def _apply_earlier_bounces(config: Config) -> None:
    """Before a send reads its ledger and the lists: the 5.1.x refusals of every earlier send,
    of this issue or another (a run killed before marking them, never resumed), so neither a
    resume nor the next issue mails a bounced reader."""
    from newsletter.ledger import failures_in
    from newsletter.resume import apply_refusals

    ledgers = sorted((config.state_dir / "sends").glob("*.sqlite"))
    failures = [failure for path in ledgers for failure in failures_in(path)]
    _say_bounced(apply_refusals(failures, config.root))


def _blocked(config: Config, lists: list[Path]) -> Callable[[], set[tuple[int, str]]]:
    """Cheap between batches: re-reads only the lists (and suppressions) that changed."""
    from newsletter.subscribers import Blocklist

    blocklist = Blocklist(config.root, lists)
    first = [True]

    def blocked() -> set[tuple[int, str]]:
        if not (blocklist.refresh() or first.pop() if first else blocklist.refresh()):
            return set()
        blocks = blocklist.blocks()
        pairs = {(k, "") for k in blocks.everywhere}
        pairs.update((k, str(p)) for p, keys in blocks.by_list.items() for k in keys)
        return pairs

    return blocked


class _progress:  # used as a context manager like a function
    """A rich progress bar on a terminal; otherwise a plain line every 5 seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None
        self.last = 0.0

    def __enter__(self) -> Callable[[Any], None]:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.0f}/s"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("send", total=self.total, rate=0.0)
        return self.show

    def show(self, event: Any) -> None:
        from newsletter.dispatch import Notice

        if isinstance(event, Notice):
            (self.bar.console.print if self.bar else say)(event.text)
            return
        rate = event.done / event.elapsed if event.elapsed > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=event.done, rate=rate)
        elif event.elapsed - self.last >= 5.0 or event.done == event.total:
            self.last = event.elapsed
            say(
                f"{event.done}/{event.total} done: {event.sent} sent, {event.failed} failed, "
                f"{event.deferred} deferred, {event.unknown} unknown ({rate:.0f}/s)"
            )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _finish(prepared: _Prepared, ledger: Ledger, result: RunResult | None, as_json: bool) -> int:
    from newsletter.dispatch import report

    doc = report(ledger, issue=prepared.rendered.slug, destination=prepared.transport.destination)
    again = f"{prepared.issue_path}{_selection_args(ledger, prepared.selection.folder)}"
    ledger.close()
    _print_report(doc, str(prepared.issue_path), result, again)
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False))
    counts = doc["counts"]
    remaining = counts["pending"] + counts["deferred"]
    if remaining:
        say(f"{remaining} recipient(s) remain: resume with `newsletter send {again} --yes`")
        return EXIT_REMAINING
    return 0


def _selection_args(ledger: Ledger, root: Path) -> str:
    """The --list/--tag options of the send's selection, for the commands we suggest."""
    from newsletter.resume import selection_args

    spec = ledger.get_json("selection", None)
    return selection_args(spec, root) if spec else ""


def _print_report(doc: dict[str, Any], issue: str, result: Any, again: str) -> None:
    """`again`: the issue and the options that continue this send."""
    c = doc["counts"]
    say(
        f"sent {c['sent']}, failed {c['failed']}, deferred {c['deferred']}, "
        f"unknown {c['unknown']}, left out {c['left_out']}, pending {c['pending']}"
    )
    if doc["duration_s"]:
        say(f"last run: {doc['duration_s']:.1f} s, {doc['messages_per_second']:.0f} messages/s")
    if result is not None and result.stopped:
        say(result.stopped)
    for failure in doc["failed"][:20]:
        say(f"  failed: {failure['email']}: {failure['code'] or ''} {failure['reply']}")
    if len(doc["failed"]) > 20:
        say(
            f"  ... and {len(doc['failed']) - 20} more (`newsletter status {issue} --failed --csv`)"
        )
    if doc["unknown"]:
        say(
            f"{len(doc['unknown'])} unknown (the connection broke after the data went out: they "
            f"may have it). `newsletter status {issue}` lists them; "
            f"`newsletter send {again} --resend-unknown --yes` sends them again"
        )


@app.command()
@command
def status(
    issue: IssueArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failures.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="With --failed: CSV on stdout.")] = False,
) -> None:
    """Show where a send of an issue stands (any time, also while it runs)."""
    from newsletter.dispatch import SendLock, report
    from newsletter.issue import load_issue
    from newsletter.ledger import Ledger, ledger_path

    config = load()
    loaded = load_issue(issue)
    slug = loaded.slug
    destination = _destination(config)
    path = ledger_path(config.state_dir, slug, destination)
    _sends_elsewhere(config, loaded, path, destination)
    ledger = Ledger(path, create=False)
    live = SendLock(config.state_dir, slug).held_elsewhere()
    _apply_bounces(ledger, config)
    doc = report(ledger, issue=slug, destination=destination, live=live)
    if failed and csv_:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["email", "code", "reply"])
        writer.writerows([f["email"], f["code"], f["reply"]] for f in doc["failed"])
    elif as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False))
    else:
        _print_report(doc, str(issue), None, f"{issue}{_selection_args(ledger, config.root)}")
        if live:
            say("a send of this issue is running now")
        for email in doc["unknown"]:
            typer.echo(f"unknown: {email}")


def _sends_elsewhere(config: Config, issue: Issue, path: Path, destination: str) -> None:
    """Name the sends of this issue through other servers that this ledger does not carry:
    without a ledger here, "nothing has been sent" would read as nobody having been mailed."""
    from newsletter.dispatch import describe, sends_elsewhere
    from newsletter.ledger import peek
    from newsletter.render import content_digest

    known = set(peek(path).continued_from) if path.is_file() else set()
    found = sends_elsewhere(config.state_dir, issue.slug, content_digest(issue), path)
    others = [other for other in found if other.path.name not in known]
    if not others:
        return
    where = f"this issue was sent in part through another server: {describe(others)}"
    if not path.is_file():
        raise NewsletterError(
            f"nothing has been sent through {destination}, but {where}. Run `status` with the "
            "[smtp] host and port of that send"
        )
    say(f"warning: {where}; the counts below do not include those")


def _destination(config: Config) -> str:
    """The ledger key of where `send` would deliver (without needing the password)."""
    from newsletter.transport import smtp_destination

    smtp = config.smtp
    if not smtp.host:
        return "outbox"
    return smtp_destination(smtp.host, smtp.port, smtp.security)


# ---------------------------------------------------------------------------------------------
# The test send


def unsubscribe_secret(config: Config, destination: str, *, create: bool = True) -> bytes:
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
        say(
            f"created {stored} (mode 0600) to sign unsubscribe links; for real sends set "
            f"{SECRET_ENV} instead"
        )
    return key


@app.command(name="test")
@command
def send_test_copy(
    issue: IssueArg,
    to: Annotated[
        str | None, typer.Option("--to", help="Send to this address (default: test_to).")
    ] = None,
    as_subscriber: Annotated[
        str | None,
        typer.Option("--as", help="Fill merge fields from this subscriber (default: a sample)."),
    ] = None,
) -> None:
    """Send one [TEST] copy of an issue to yourself; lint errors are only warnings here."""
    import asyncio

    from newsletter.dispatch import send_test
    from newsletter.dkim import DkimSigner, dot_stuff
    from newsletter.lint import check_issue
    from newsletter.message import MessageFactory
    from newsletter.models import Subscriber
    from newsletter.subscribers import lookup
    from newsletter.transport import open_transport

    config = load()
    address = _address_option("--to", to) if to else config.newsletter.test_to
    if not address:
        raise NewsletterError("no recipient: pass --to ADDRESS or set [newsletter] test_to")
    result = check_issue(issue, config)
    if result.rendered is None:
        raise InvalidInput(result.problems)
    for problem in result.problems:
        say(f"warning: {problem}")
    subscriber = Subscriber(email=address)
    if as_subscriber:
        found = lookup(config.root, as_subscriber)
        if found is None:
            raise NewsletterError(f"{as_subscriber} is in no list of {config.subscribers_dir}")
        subscriber = found
    transport = open_transport(config)
    say(f"to: {transport.description}")
    factory = MessageFactory(
        result.rendered,
        config,
        unsubscribe_secret(config, transport.destination),
        subject_prefix="[TEST] ",
    )

    signer = DkimSigner.from_config(config)

    def build(eight_bit: bool, dot_stuffed: bool) -> bytes:
        if signer is None:
            return factory.build(
                subscriber, to=address, eight_bit=eight_bit, dot_stuffed=dot_stuffed
            )
        signed = signer.sign(factory.build(subscriber, to=address, eight_bit=eight_bit))
        return dot_stuff(signed) if dot_stuffed else signed

    sender = config.envelope_sender
    accepted = asyncio.run(send_test(transport, build, sender, address))
    typer.echo(f"sent a test of {issue} to {address}: {accepted.code} {accepted.reply}")


def _address_option(option: str, value: str) -> str:
    """An address given on the command line, parsed as strictly as test_to in the file."""
    from newsletter.addresses import BadAddress, parse_mailbox

    try:
        return parse_mailbox(value, name_allowed=False)[1]
    except BadAddress as exc:
        raise NewsletterError(f"{option}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Web: the unsubscribe endpoint and the static archive


@app.command()
@command
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (a reverse proxy in front).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8025,
) -> None:
    """Serve the one-click unsubscribe endpoint (RFC 8058) for the links in sent messages."""
    import logging

    from newsletter.serve import endpoint_secret, listen, route_prefix, run_unsubscribe

    config = load()
    key = endpoint_secret(config)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = f"{route_prefix(config.newsletter.base_url)}/unsubscribe/<token>"
    sock = listen(host, port)
    say(f"unsubscribe endpoint at http://{host}:{sock.getsockname()[1]}{path}  (Ctrl-C stops)")
    say(f"changes go to the lists in {config.subscribers_dir}")
    run_unsubscribe(config, key, sock=sock)


@app.command()
@command
def archive(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Folder of the site (default: site/ in the folder)."),
    ] = None,
) -> None:
    """Build the web archive: a page per issue (drafts left out), index.html and feed.xml."""
    from newsletter.archive import build_archive

    config = load()
    built = build_archive(config, output or config.root / "site")
    for path in [*built.pages, built.index, built.feed]:
        typer.echo(str(path))
    for path in built.removed:
        say(f"removed {path} (its issue is gone or became a draft)")
    say(f"{len(built.pages)} issue(s) archived in {built.folder}")

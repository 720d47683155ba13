"""`newsletter subscribers ...`: the lists in subscribers/ (docs/subscribers.md).

Part of the command line (see cli.py): parse, call the subscribers package, print.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from newsletter import cli
from newsletter.cli import command, load, say
from newsletter.models import Status

subscribers_app = cli.App(
    help="Manage the lists (subscribers/, or the store).",
    no_args_is_help=True,
)
cli.app.add_typer(subscribers_app, name="subscribers")

ListOption = Annotated[
    Path | None,
    typer.Option(
        "--list",
        metavar="LIST",
        help="A list: a bare name means subscribers/NAME (.csv added if missing), else a path; "
        "with [store] url, the store's list NAME.",
    ),
]
EmailArg = Annotated[str, typer.Argument(help="The person's address.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@subscribers_app.command("add")
@command
def subscribers_add(
    email: EmailArg,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="The person's name.")] = "",
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="A tag (repeat for several)."),
    ] = None,
    list_: ListOption = None,
    resubscribe: Annotated[
        bool,
        typer.Option(
            "--resubscribe", help="They unsubscribed before and asked to be subscribed again."
        ),
    ] = False,
) -> None:
    """Subscribe EMAIL to a list.

    The default list is subscribers/subscribers.csv (the store's: `subscribers`)."""
    nl = cli.api()
    added = nl.store.add(
        email,
        name=name,
        tags=tag or [],
        list_path=None if list_ is None else nl.list_path(list_),
        resubscribe=resubscribe,
    )
    if added.created:
        typer.echo(f"added {added.email} to {added.path}")
    elif added.changed:
        typer.echo(f"{added.email} was already in {added.path}: updated")
    else:
        typer.echo(f"{added.email} was already in {added.path}: nothing to change")


def _say_status(change: Any, verb: str) -> None:
    for path in change.changed:
        typer.echo(f"{change.email}: {verb} in {path}")
    for path in change.held:
        if path not in change.changed:
            typer.echo(f"{change.email}: already {change.status} (or stronger) in {path}")
    if change.suppressed:
        typer.echo(f"{change.email}: in no list; recorded in the suppression file")


@subscribers_app.command("unsubscribe")
@command
def subscribers_unsubscribe(
    email: EmailArg,
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
    """Unsubscribe EMAIL from every list.

    From every list holding it (or only --list); the row and its consent record stay. An
    address in no list is recorded in the suppression file."""
    if only_this_list and list_ is None:
        raise typer.BadParameter("--only-this-list needs --list")
    lists = None if list_ is None else [list_]
    change = cli.api().unsubscribe(email, lists, only_these=only_this_list)
    _say_status(change, "unsubscribed")


@subscribers_app.command("remove", hidden=True)
@command
def subscribers_remove(email: EmailArg, list_: ListOption = None) -> None:
    """Old name of `unsubscribe`: marks EMAIL unsubscribed.

    It never deleted a row; `unsubscribe` does the same, `purge` deletes. Kept so that
    scripts keep working; it says so on every use."""
    from newsletter import subscribers
    from newsletter.errors import NotInList

    nl = cli.api()
    folder = nl.config.root
    lists = None if list_ is None else [list_]
    if nl.config.store.url:
        held = nl.store.lookup(email) is not None
    else:
        held = bool(subscribers.find(folder, email, [nl.list_path(list_)] if list_ else None))
    if not held:
        raise NotInList(email)
    say(
        "note: `subscribers remove` is now `subscribers unsubscribe` (the same: the row stays); "
        "to delete a person's rows, use `subscribers purge`"
    )
    _say_status(nl.unsubscribe(email, lists), "unsubscribed")


@subscribers_app.command("purge")
@command
def subscribers_purge(
    email: EmailArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Purge without asking.")] = False,
) -> None:
    """Erase EMAIL on request (asks first).

    Deletes its rows from every list, its history, consent records and soft bounces, and its
    address, name and merge fields from the sends' records; keeps only a hashed suppression
    entry."""
    cli.confirm(
        yes,
        f"Delete every row of {email} for good?",
        "purged",
        "nothing was deleted",
        "run again with --yes to purge",
    )
    erased = cli.api().purge(email)
    for path in erased.files:
        typer.echo(f"{email}: deleted from {path}")
    if not erased.files:
        typer.echo(f"{email}: in no list")
    for one in erased.sends:
        typer.echo(f"{email}: erased from the record of a send ({one.ledger})")
    for ledger in erased.unfinished:
        say(
            f"warning: {ledger}: in use (a send of this issue planned or running, or a reader), "
            "so old copies may remain in that file: when it is done, run "
            f"`newsletter subscribers purge {email}` again"
        )
    for path in erased.elsewhere:
        say(
            f"warning: {path}: not a list, but it holds {email}: purge does not edit it; "
            "delete it, or remove them from it by hand"
        )
    say("suppression entry kept (a hash): a later import cannot bring them back")
    say("not reached from here: git history, backups, the outbox and mail already delivered")


@subscribers_app.command("show")
@command
def subscribers_show(email: EmailArg, json_: JsonOption = False) -> None:
    """Print everything held on EMAIL.

    Its rows in every list, suppression entry, status history, consent records, soft bounces
    and sends: the answer to a data subject access request. Exit 0 when nothing is held."""
    person = cli.api().person(email).to_json()
    if json_:
        typer.echo(json.dumps(person, ensure_ascii=False, indent=2))
        return
    for line in _person_lines(person):
        typer.echo(line)


def _person_lines(person: dict[str, Any]) -> Iterator[str]:
    email = _plain(person["email"])
    if not person["held"]:
        yield f"nothing is held on {email}: no row in any list, no suppression entry, no history,"
        yield "consent record or soft bounce, and no send recorded it"
        return
    yield f"everything held on {email} (compared as {_plain(person['key'])}):"
    yield from _section("rows in lists", person["rows"], _row_lines)
    reason = person["suppressed"]
    yield "suppression file: " + (
        "no entry" if reason is None else f"an entry (a digest), reason: {_plain(reason['reason'])}"
    )
    yield from _section("status history", person["history"], _event_lines)
    yield from _section("consent records", person["consents"], _consent_lines)
    yield from _section("soft bounces", person["soft_bounces"], _bounce_lines)
    yield from _section("sign-up requests", person["signups"], _signup_lines)
    yield from _section("sends", person["sends"], _send_lines)


def _section(
    title: str, items: list[dict[str, Any]], lines: Callable[[dict[str, Any]], Iterator[str]]
) -> Iterator[str]:
    yield f"{title}: {len(items) or 'none'}"
    for item in items:
        for line in lines(item):
            yield f"  {line}"


def _row_lines(row: dict[str, Any]) -> Iterator[str]:
    yield f"{_plain(row['file'])}:{row['line']}"
    for column, value in row["columns"].items():
        yield f"  {_plain(column)}:" + (f" {_plain(value)}" if value else "")


def _event_lines(event: dict[str, Any]) -> Iterator[str]:
    where = event["list"] or "the suppression file"
    yield f"{event['at']}  {event['status']} in {_plain(where)} (by {_plain(event['source'])})"


def _signup_lines(signup: dict[str, Any]) -> Iterator[str]:
    confirmed = f", confirmed {signup['confirmed_at']}" if signup["confirmed_at"] else ""
    name = f" as {_plain(signup['name'])}" if signup["name"] else ""
    yield f"{signup['asked_at']}  asked for {_plain(signup['list'])}{name}{confirmed}"
    yield f"  shown: {_plain(signup['consent'])}"


def _consent_lines(record: dict[str, Any]) -> Iterator[str]:
    confirmed = f", confirmed {record['confirmed_at']}" if record["confirmed_at"] else ""
    yield f"{record['at']}  {_plain(record['list'])}, by {_plain(record['source'])}{confirmed}"
    yield f"  shown: {_plain(record['text'])}"


def _bounce_lines(bounce: dict[str, Any]) -> Iterator[str]:
    yield f"{bounce['at']}  {_plain(bounce['status'])} (issue {_plain(bounce['issue'])})"


def _send_lines(send: dict[str, Any]) -> Iterator[str]:
    at = f" {send['at']}" if send["at"] else ""
    destination = _plain(send["destination"]) or "an unrecorded destination"
    ledger = _plain(send["ledger"])
    yield f"{_plain(send['issue'])} to {destination}: {send['outcome']}{at} ({ledger})"
    for back in send["returns"]:
        what = "a complaint" if back["kind"] == "complaint" else f"a {back['kind']} bounce"
        status = f" {_plain(back['status'])}" if back["status"] else ""
        yield f"  then {what}{status} {back['at']}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain(text: str) -> str:
    """A value on one line, its control characters escaped (a cell may hold a line break; none
    may move the terminal's cursor)."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


@subscribers_app.command("import")
@command
def subscribers_import(
    file: Annotated[
        Path, typer.Argument(help="The file to import (CSV or an export).", show_default=False)
    ],
    into: Annotated[
        Path,
        typer.Option(
            "--into", metavar="LIST", help="The list to import into (created if missing)."
        ),
    ],
    format_: Annotated[
        Literal["csv", "mailchimp", "listmonk"],
        typer.Option(
            "--format", help="csv (our columns), mailchimp (audience export) or listmonk."
        ),
    ] = "csv",
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the good rows; list the bad ones.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Import FILE into a list.

    Every bad row is reported; nothing is written while any is bad (or pass --skip-invalid).
    With [store] url, LIST names a list of the store, and the import is one transaction."""
    from newsletter.errors import InvalidInput

    nl = cli.api()
    target = nl.list_path(into)
    try:
        report = nl.import_subscribers(file, into, fmt=format_, skip_invalid=skip_invalid)
    except InvalidInput as exc:  # after the problems, what became of the list, and the way on
        cli.print_error(exc)
        rows = any(p.line and p.line > 1 for p in exc.problems)
        hint = "; fix the rows above, or pass --skip-invalid to import the good ones"
        say(f"nothing was written to {target}" + (hint if rows else ""))
        raise typer.Exit(exc.exit_code) from None
    notes = [*report.skipped, *report.merged, *report.suppressed, *report.unrecorded]
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
    (say if json_ else typer.echo)(
        f"{report.into}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.skipped)} bad rows skipped"
    )


@subscribers_app.command("list")
@command
def subscribers_list(
    status: Annotated[
        Status | None, typer.Option("--status", help="Only rows with this status.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only people with this tag (repeat: any)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Print the rows of every list.

    Tab-separated: email, name, status, tags, list."""
    from newsletter import subscribers
    from newsletter.addresses import address_key, key_hash

    nl = cli.api()
    rows, suppressed = nl.subscriber_rows(status, tag or ())
    if json_:  # every list read to its end first: a list that stops halfway prints no "[..."
        for _ in nl.subscriber_rows()[0]:
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
    """Count rows per list, status and tag.

    Also the distinct recipients of a send to every list."""
    from newsletter.models import STATUSES

    result = cli.api().subscriber_stats()
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
        list[Path] | None,
        typer.Argument(metavar="LIST", help="Lists to check (default: all in subscribers/)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Check lists for bad rows.

    Every bad row as file:line: reason; exit 1 when there is an error."""
    from newsletter import subscribers

    config = load()
    if config.store.url and not files:
        _check_store(json_)
        return
    paths = files or subscribers.list_files(config.root)
    report = subscribers.check_lists(paths, allow_reserved=config.newsletter.allow_reserved_domains)
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
    (say if json_ else typer.echo)(
        f"{len(report.files)} lists, {report.rows} rows, {errors} errors"
    )
    if errors:
        raise typer.Exit(1)


def _check_store(json_: bool) -> None:
    """`check` with the store: its rows were checked on import; count them."""
    result = cli.api().subscriber_stats()
    rows = sum(sum(counts.values()) for counts in result.by_list.values())
    if json_:
        typer.echo(json.dumps({"rows": rows, "problems": []}))
    (say if json_ else typer.echo)(
        f"{len(result.by_list)} lists in the store (rows are checked as they are imported), "
        f"{rows} rows, 0 errors"
    )


@subscribers_app.command("export")
@command
def subscribers_export(
    list_: Annotated[
        list[Path] | None,
        typer.Option(
            "--list", metavar="LIST", help="Only this list (repeat for several; default: all)."
        ),
    ] = None,
    status: Annotated[
        Status | None, typer.Option("--status", help="Only rows with this status.")
    ] = None,
) -> None:
    """Write the lists to stdout as one CSV list.

    In the CSV format of the lists (docs/subscribers.md): `export > file.csv`, then
    `import file.csv --into NAME` in another store gives the same rows."""
    import io
    import sys

    nl = cli.api()
    sys.stdout.flush()
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    try:
        count = nl.export_subscribers(out, list_, status)
    finally:
        out.flush()
        out.detach()  # stdout stays open
    say(f"{count} rows exported")

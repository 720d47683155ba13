"""`newsletter store ...`: the shared PostgreSQL store ([store] url, docs/deployment.md).

Part of the command line (see cli.py): parse, call the API, print.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from newsletter import cli
from newsletter.cli import command, say

if TYPE_CHECKING:
    from newsletter.api import StoreCheck

store_app = cli.App(help="The shared PostgreSQL store: schema and health.", no_args_is_help=True)
cli.app.add_typer(store_app, name="store")


@store_app.command("migrate")
@command
def store_migrate() -> None:
    """Create or upgrade the store's schema.

    Safe to run twice, and on several machines at once (they take turns)."""
    done = cli.api().migrate_store()
    if done.before == done.after:
        say(f"{done.where}: schema version {done.after}, nothing to do")
    else:
        say(f"{done.where}: schema version {done.before} -> {done.after}")


@store_app.command("check")
@command
def store_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Connect to the store: schema version, counts, sends in progress.

    Exits 1 when the schema is not this newsletter's version (older: run `store migrate`;
    newer: upgrade newsletter)."""
    found = cli.api().check_store()
    current = found.version == found.expected
    if as_json:
        running = [
            {"issue": r.slug, "destination": r.destination, "counts": dict(r.counts),
             "workers": r.workers}
            for r in found.running
        ]  # fmt: skip
        report = {"where": found.where, "version": found.version, "expected": found.expected,
                  "counts": dict(found.counts), "running": running}  # fmt: skip
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_check(found)
    if not current:
        raise typer.Exit(1)


def _print_check(found: StoreCheck) -> None:
    typer.echo(f"store: {found.where}")
    typer.echo(f"schema version: {found.version} (this newsletter: {found.expected})")
    if found.version < found.expected:
        say("error: run `newsletter store migrate` before sending or serving")
        return
    if found.version > found.expected:
        say("error: a newer newsletter migrated the store: upgrade this one")
        return
    for label, count in found.counts.items():
        typer.echo(f"{label}: {count}")
    if not found.running:
        typer.echo("sends in progress: none")
    for one in found.running:
        c = one.counts
        typer.echo(
            f"in progress: {one.slug} to {one.destination}: {c['sent']} sent, "
            f"{c['pending'] + c['deferred']} to go, {c['sending']} sending, {one.workers} sender(s)"
        )

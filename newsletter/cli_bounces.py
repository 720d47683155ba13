"""`newsletter bounces`: read the bounce mailbox and apply what it holds (docs/deliverability.md).

Part of the command line (see cli.py): parse, call the API (newsletter.api), print what it
returns: one line per message (stdout), or with --json one object.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from newsletter.cli import api, app, command, say
from newsletter.errors import BadOption

if TYPE_CHECKING:
    from newsletter.bounces import Outcome


@app.command()
@command
def bounces(
    maildir: Annotated[
        Path | None,
        typer.Option("--maildir", metavar="PATH", help="The bounce mailbox as a Maildir folder."),
    ] = None,
    imap: Annotated[
        str | None,
        typer.Option(
            "--imap",
            metavar="URL",
            help="The bounce mailbox over IMAP: imaps://user@host[:port]/INBOX; the password "
            "comes from NEWSLETTER_IMAP_PASSWORD.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            metavar="FILE",
            help="With --imap: trust the CA certificates in this PEM file (a private CA).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcomes as JSON.")] = False,
) -> None:
    """Apply the bounces and complaints in the bounce mailbox.

    Hard bounces (5.x.x) mark the reader bounced, soft ones (4.x.x) count, complaints (ARF)
    mark them complained; each message is marked processed, so a rerun changes nothing."""
    if (maildir is None) == (imap is None):
        raise typer.BadParameter("give --maildir PATH or --imap URL (one of them)")
    try:
        outcomes = api().bounces(maildir, imap, dry_run=dry_run, ca_file=ca_file)
    except BadOption as exc:  # the API names its argument; here it is the option
        raise BadOption(f"--{exc.option.replace('_', '-')}", exc.value, exc.reason) from None
    if as_json:
        typer.echo(json.dumps(_json(outcomes, dry_run), ensure_ascii=False))
    else:
        for outcome in outcomes:
            typer.echo(_line(outcome))
    say(_summary(outcomes, dry_run))


def _line(outcome: Outcome) -> str:
    about = f"{outcome.email} ({outcome.issue})" if outcome.email else outcome.subject or "-"
    status = f" {outcome.status}" if outcome.status else ""
    return f"{outcome.message}: {outcome.result}{status}: {about}: {outcome.action}"


def _summary(outcomes: list[Outcome], dry_run: bool) -> str:
    counts = Counter(o.result for o in outcomes)
    parts = ", ".join(f"{n} {result}" for result, n in sorted(counts.items())) or "nothing new"
    return f"{len(outcomes)} message(s): {parts}" + (
        " (dry run: nothing changed)" if dry_run else ""
    )


def _json(outcomes: list[Outcome], dry_run: bool) -> dict[str, object]:
    return {
        "dry_run": dry_run,
        "counts": dict(Counter(o.result for o in outcomes)),
        "messages": [o.to_json() for o in outcomes],
    }

"""The `newsletter` command: parse, call one core function, print.

The only module that prints, prompts or exits, and the only one importing typer and rich.
Core modules raise NewsletterError; `command` turns it into one clear message and an exit code.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from newsletter import __version__
from newsletter.errors import NewsletterError

if TYPE_CHECKING:  # types only: the modules themselves are imported where a command needs them
    from newsletter.api import Finding, Newsletter
    from newsletter.config import Config

P = ParamSpec("P")
R = TypeVar("R")

CONFIG_HELP = (
    "newsletter.toml to use (default: the nearest one in this folder or its parents, else in "
    "the issue file's folder or its parents). Also NEWSLETTER_CONFIG."
)


def _set_config(value: Path | None) -> None:
    if value is not None:
        _state["config"] = value


class _Group(TyperGroup):
    """The app's group: every command also takes --config after its name (`newsletter check
    x.toml --config ../news`), as well as before it (the later one wins)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_config_option(self.commands.values(), _config_option())


def _config_option() -> Any:
    """--config as a command takes it after its name: built by Typer from a probe command,
    so it parses and shows in --help like the command's own options."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        config: Annotated[
            Path | None,
            typer.Option(
                "--config", metavar="FILE", help=CONFIG_HELP, callback=_set_config,
                expose_value=False, show_default=False,
            ),
        ] = None,
    ) -> None: ...  # fmt: skip

    return typer.main.get_command(probe).params[0]


def _add_config_option(commands: Iterable[Any], option: Any) -> None:
    for cmd in commands:
        if hasattr(cmd, "commands"):  # a group such as `subscribers`: after its name too
            _add_config_option(cmd.commands.values(), option)
        if option not in cmd.params:
            cmd.params.append(option)


class ReadableHelp(TyperCommand):
    """A command whose help reads like click's: `ISSUE`, `[FILE]...` and `[csv|listmonk]`
    where this Typer prints `{issue}`, `files... <list[Path]>` and `<csv|listmonk>`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            choices = param.type_descriptor.choices if isinstance(param, TyperOption) else None
            if choices and param.metavar is None:
                param.metavar = f"[{'|'.join(str(c) for c in choices)}]"

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record and isinstance(param, TyperArgument):
                arguments.append((_argument_name(param), record[1]))
            elif record:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _argument_name(param: TyperArgument) -> str:
    name = param.metavar or (param.name or "").upper()
    return name if param.nargs == 1 else f"{name}..."


class App(typer.Typer):
    """A Typer whose commands print ReadableHelp."""

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", ReadableHelp)
        return super().command(*args, **kwargs)


app = App(
    cls=_Group,
    help="Write a newsletter as TOML in git, render it, test it, send it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    rich_markup_mode=None,
)

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
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:  # `| head` stopped reading: click exits 1 quietly, no disk error
            raise
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


def print_error(exc: NewsletterError) -> None:
    """One line `error: ...`; a message of several lines (several problems) as it is."""
    typer.echo(f"error: {exc}" if "\n" not in str(exc) else str(exc), err=True)


def config_file(issue: Path | None = None) -> Path | None:
    """--config (or NEWSLETTER_CONFIG); else, for an issue file when this folder and its
    parents hold no newsletter.toml, the one in the issue's folder or its parents; else None
    (the nearest one from here)."""
    from newsletter.config import find_config

    if _state["config"] is not None or issue is None:
        return _state["config"]
    return find_config(Path.cwd(), near=issue)


def load(issue: Path | None = None) -> Config:
    from newsletter.config import load_config

    return load_config(explicit=config_file(issue))


def api(issue: Path | None = None) -> Newsletter:
    """The newsletter of this folder (or --config, or the issue's), its notes printed as they
    come."""
    from newsletter.api import Newsletter

    return Newsletter.open(".", config=config_file(issue), notify=say)


def confirm(yes: bool, question: str, action: str, nothing: str, again: str) -> None:
    """Return once the user said yes (--yes, or at the prompt). A no at the prompt exits 0 (the
    user chose); no terminal to ask on is NotConfirmed (a script must say --yes)."""
    from newsletter.errors import NotConfirmed

    if yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(action, nothing, "no --yes, and no terminal to ask on", again)
    if not _asked(question):
        say(f"not {action}: {nothing}")
        raise typer.Exit(0)


def _asked(question: str) -> bool:
    """The answer at the prompt; Ctrl-C there is an interruption (exit 130, as anywhere else),
    the end of input (Ctrl-D) a no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort as exc:  # click turns both into Abort: its cause tells them apart
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        return False


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
            metavar="FILE",
            help=CONFIG_HELP,
            dir_okay=True,
            envvar="NEWSLETTER_CONFIG",
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

# Default ports: clear of the local mail catchers (aiosmtpd's 8025, Mailpit's and MailHog's
# 8025 and 1025, MailCatcher's 1080 and 1025), and of each other.
PREVIEW_PORT = 8000
SERVE_PORT = 8080

IssueArg = Annotated[
    Path, typer.Argument(help="The issue file (TOML), e.g. issues/2021-09-x.toml.")
]


@app.command()
@command
def init(
    folder: Annotated[Path, typer.Argument(help="Folder to create (or complete).")],
) -> None:
    """Create a newsletter folder.

    Writes newsletter.toml, templates/, issues/ and subscribers/; files that exist are kept."""
    import datetime as dt

    from newsletter.scaffold import init as scaffold

    for path, created in scaffold(folder, dt.date.today()):
        typer.echo(f"{'created' if created else 'kept (exists)'}  {path}")
    say(f"next: cd {shlex.quote(str(folder))} && newsletter check")


@app.command()
@command
def new(
    title: Annotated[str, typer.Argument(help="Title of the new issue.")],
    date: Annotated[
        dt.datetime | None,
        typer.Option(
            "--date",
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="The issue's date, also its file name's YYYY-MM (default: today).",
        ),
    ] = None,
) -> None:
    """Start a new issue from a skeleton.

    Writes issues/YYYY-MM-SLUG.toml with one block of every kind, and prints its path."""
    from newsletter.scaffold import new_issue

    day = date.date() if date is not None else dt.date.today()
    path = new_issue(load().root, title, day)
    typer.echo(str(path))


@app.command()
@command
def check(
    issues: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Issue files, or folders of them (default: every issue in issues/).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Validate and lint issues.

    Exit 0 without errors (warnings are printed), 1 with errors."""
    files = _issue_files(issues or [])
    opened: dict[Path | None, Newsletter] = {}
    checked = []
    for path in files:
        where = config_file(path)
        nl = opened[where] = opened.get(where) or api(path)
        checked.append((path, nl.check(path)))
    if as_json:
        one = issues is not None and len(issues) == 1 and not issues[0].is_dir()
        report = _check_json(*checked[0]) if one else _checks_json(checked)
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_checks(checked)
    if not all(_counts(findings)[0] == 0 for _, findings in checked):
        raise typer.Exit(1)


def _issue_files(given: list[Path]) -> list[Path]:
    """What `check` reads: each file given, the *.toml of each folder given (not hidden ones,
    as the shell's `*.toml`: editors' lock and backup files), or (none given) every issue in
    the newsletter's issues/ folder; each file once, however it is spelled."""
    from newsletter.errors import InvalidInput

    if not given:
        issues = load().root / "issues"
        with_cwd = Path.cwd() / "issues"
        given = [Path("issues") if issues == with_cwd else issues]
    files: dict[Path, Path] = {}
    for path in given:
        found = _issues_in(path) if path.is_dir() else [path]
        if not found:
            raise InvalidInput.one(path, "no issue files (*.toml) in this folder")
        for file in found:
            files.setdefault(file.resolve(), file)
    return list(files.values())


def _issues_in(folder: Path) -> list[Path]:
    """The issues of a folder: a newsletter's folder (`check .`) means its issues/; never its
    newsletter.toml, nor hidden files."""
    from newsletter.config import CONFIG_NAME

    if (folder / CONFIG_NAME).is_file() and (folder / "issues").is_dir():
        folder = folder / "issues"
    return sorted(p for p in folder.glob("[!.]*.toml") if p.name != CONFIG_NAME)


def _counts(findings: list[Finding]) -> tuple[int, int]:
    """(errors, warnings)"""
    from newsletter.errors import Severity

    errors = sum(f.severity is Severity.ERROR for f in findings)
    return errors, len(findings) - errors


def _print_checks(checked: list[tuple[Path, list[Finding]]]) -> None:
    """Each file's findings and counts; a finding shared by several files (newsletter.toml's,
    the footer's) is shown and counted once, with the first file that has it."""
    from newsletter.errors import Severity

    shown: set[Finding] = set()
    for issue, findings in checked:
        new = [f for f in dict.fromkeys(findings) if f not in shown]
        shown.update(new)
        for finding in new:
            prefix = "" if finding.severity is Severity.ERROR else "warning: "
            typer.echo(f"{prefix}{finding}")
        errors, warnings = _counts(new)
        typer.echo(f"{issue}: {errors} error(s), {warnings} warning(s)")
    if len(checked) > 1:
        errors, warnings = _counts(list(shown))
        typer.echo(f"{len(checked)} issues: {errors} error(s), {warnings} warning(s)")


def _checks_json(checked: list[tuple[Path, list[Finding]]]) -> dict[str, Any]:
    """Several files (or a folder): one object, each file's as `check FILE --json` prints it."""
    files = [_check_json(issue, findings) for issue, findings in checked]
    distinct = dict.fromkeys(f for _, findings in checked for f in findings)  # shared: once
    errors, warnings = _counts(list(distinct))
    return {
        "ok": all(f["ok"] for f in files),
        "files": files,
        "totals": {"files": len(files), "errors": errors, "warnings": warnings},
    }


def _check_json(issue: Path, findings: list[Finding]) -> dict[str, Any]:
    from newsletter.errors import Severity

    def item(finding: Finding) -> dict[str, Any]:
        return {
            "file": str(finding.file) if finding.file else None,
            "line": finding.line,
            "field": finding.key,
            "message": finding.message,
        }

    def of(severity: Severity) -> list[dict[str, Any]]:
        return [item(f) for f in findings if f.severity is severity]

    errors = of(Severity.ERROR)
    return {
        "file": str(issue),
        "ok": not errors,
        "errors": errors,
        "warnings": of(Severity.WARNING),
    }


@app.command()
@command
def render(
    issue: IssueArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", metavar="FOLDER", help="Folder for the files (default: build/)."
        ),
    ] = None,
) -> None:
    """Render an issue to HTML and plain text.

    Writes SLUG.html and SLUG.txt; merge fields show their defaults."""
    from newsletter.render import write_outputs

    nl = api(issue)
    config, rendered = nl.config, nl.render(issue)
    for path, size in write_outputs(rendered, config, output or config.root / "build"):
        typer.echo(f"{path}  {size:,} bytes")


@app.command()
@command
def preview(
    issue: IssueArg,
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve it on 127.0.0.1, reloading on every change.")
    ] = False,
    port: Annotated[
        int, typer.Option(metavar="N", help="With --serve: the port to listen on.")
    ] = PREVIEW_PORT,
    as_subscriber: Annotated[
        str | None,
        typer.Option("--as", metavar="EMAIL", help="Fill merge fields from this subscriber's row."),
    ] = None,
) -> None:
    """Render an issue and open it in the browser.

    With --serve: serve it on 127.0.0.1 instead, reloading on every change."""
    nl = api(issue)
    config = nl.config
    reader = nl.store.lookup(as_subscriber) if as_subscriber else None  # as `test --as` finds it
    if as_subscriber and reader is None:
        from newsletter.errors import NotInList

        raise NotInList(as_subscriber, config.subscribers_dir)
    if serve:
        from newsletter.serve import listen, run_preview

        sock = listen("127.0.0.1", port)
        say(f"previewing {issue} at http://127.0.0.1:{sock.getsockname()[1]}/  (Ctrl-C stops)")
        run_preview(issue, config, sock=sock, subscriber=reader)
        return
    import webbrowser

    from newsletter.render import write_outputs

    html_path = write_outputs(nl.render(issue), config, config.root / "build", reader)[0][0]
    opened = webbrowser.open(html_path.resolve().as_uri())
    typer.echo(str(html_path))
    if not opened:
        say("no browser found: open this file")


# Send, status and test: their commands are in cli_send.py (registered here, in this order)
import newsletter.cli_send  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Web: the unsubscribe endpoint and the static archive


@app.command()
@command
def serve(
    host: Annotated[
        str,
        typer.Option(metavar="HOST", help="Address to listen on (a reverse proxy in front)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="N", help="Port to listen on.")] = SERVE_PORT,
    print_form: Annotated[
        bool,
        typer.Option(
            "--print-form",
            help="Print the sign-up form as HTML for a static site (it posts to the "
            "subscribe page under base_url) and exit.",
        ),
    ] = False,
) -> None:
    """Serve the one-click unsubscribe endpoint and the sign-up form.

    RFC 8058: the unsubscribe links and headers in sent messages point here. The sign-up form
    is at base_url/subscribe (double opt-in; [signup] in newsletter.toml)."""
    import logging

    from newsletter.serve import endpoint_secret, listen, route_prefix, run_unsubscribe

    nl = api()
    config = nl.config
    if print_form:
        from newsletter.serve_signup import form_snippet

        typer.echo(form_snippet(config), nl=False)
        return
    key = endpoint_secret(config)
    changes = nl.store_ready()  # the store answers at this version, before the port opens
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = f"{route_prefix(config.newsletter.base_url)}/unsubscribe/<token>"
    sock = listen(host, port)
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address goes in brackets in a URL
    say(f"unsubscribe endpoint at http://{shown}:{sock.getsockname()[1]}{path}  (Ctrl-C stops)")
    if config.signup.enabled and config.newsletter.base_url:
        say(f"sign-up form at {config.newsletter.base_url}/subscribe (confirmations by mail)")
    elif config.signup.enabled:
        say("sign-up form off: its confirmation links need [newsletter] base_url")
    say(f"changes go to {changes}")
    run_unsubscribe(config, key, sock=sock, store=nl.store)


@app.command()
@command
def archive(
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FOLDER",
            help="Folder of the site (default: site/ in the folder).",
        ),
    ] = None,
) -> None:
    """Build the web archive.

    A page per issue sent to a list (or marked publish = true), index.html and feed.xml."""
    built = api().archive(output)
    for path in [*built.pages, built.index, built.feed]:
        typer.echo(str(path))
    for path in built.removed:
        say(f"removed {path} (its issue is gone, a draft, or neither sent nor publish = true)")
    say(f"{len(built.pages)} issue(s) archived in {built.folder}")


import newsletter.cli_bounces  # noqa: E402  # registers `newsletter bounces` on app
import newsletter.cli_store  # noqa: E402  # registers `newsletter store ...` on app
import newsletter.cli_subscribers  # noqa: E402, F401  # registers `newsletter subscribers ...` on app

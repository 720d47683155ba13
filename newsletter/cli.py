"""The `newsletter` command: parse, call one core function, print.

The only module that prints, prompts or exits, and the only one importing typer and rich.
Core modules raise NewsletterError; `command` turns it into one clear message and an exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from newsletter import __version__
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter.config import Config

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


def _check_json(result: Any) -> dict[str, Any]:
    def item(problem: Any) -> dict[str, Any]:
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
        from newsletter.serve import run_preview

        say(f"previewing {issue} at http://127.0.0.1:{port}/  (Ctrl-C stops)")
        run_preview(issue, config, port=port)
        return
    import webbrowser

    from newsletter.render import render_issue, write_outputs

    html_path = write_outputs(render_issue(issue, config), config, config.root / "build")[0][0]
    opened = webbrowser.open(html_path.resolve().as_uri())
    typer.echo(f"{html_path}" + ("" if opened else "  (no browser found: open this file)"))

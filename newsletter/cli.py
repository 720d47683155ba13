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

"""The command line reads well: help, choices, short options, completion (issue 14, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from newsletter.cli import app
from tests.send_helpers import ISSUE, REPO, make_folder, run, write_list


def _commands() -> list[list[str]]:
    """The root, every group and every command (hidden ones too), as argument paths."""

    def walk(command: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in getattr(command, "commands", {}).items():
            found.extend(walk(sub, [*path, name]))
        return found

    return walk(get_command(app), [])


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="newsletter", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "newsletter")
def test_help_is_readable(path: list[str]) -> None:
    """No `<type>` or `{name}` placeholders, no summary cut with `...`, every argument and
    option described."""
    text = _help(path)
    assert "<" not in text and "{" not in text, text
    commands = text.split("\nCommands:\n", 1)[1] if "\nCommands:\n" in text else ""
    assert not [line for line in commands.splitlines() if line.rstrip().endswith("...")], text
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    undescribed = [p.name for p in command.params if not getattr(p, "help", None)]
    assert undescribed == [], f"{' '.join(path)}: no help for {undescribed}"


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        (["send", ISSUE], "--on-change", "'continue', 'restart'"),
        (["subscribers", "import", "x.csv", "--into", "a"], "--format", "'csv', 'mailchimp'"),
        (["subscribers", "list"], "--status", "'subscribed', 'unsubscribed'"),
    ],
)
def test_a_value_outside_the_choices_is_a_usage_error_listing_them(
    command: list[str], option: str, choices: str
) -> None:
    """--on-change, --format and --status refuse another value before anything runs: exit 2,
    naming the option and its choices; their help shows the choices too."""
    result = CliRunner().invoke(app, [*command, option, "later"])
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.output and choices in result.output
    shown = _help([word for word in command if word.isalpha()][:2])
    first = choices.split(", ")[0].strip("'")
    assert f"{option} [{first}|" in shown


def test_short_yes_sends(tmp_path: Path) -> None:
    """`send -y` is `send --yes`."""
    folder = make_folder(tmp_path, 2)
    done = run(folder, "send", ISSUE, "-y")
    assert done.returncode == 0, done.stderr
    assert "sent 2, failed 0" in done.stdout


def test_subscribers_list_takes_several_tags(tmp_path: Path) -> None:
    """`subscribers list --tag a --tag b` lists the people with either tag, as send selects."""
    folder = make_folder(tmp_path, 0)
    path = write_list(folder, "news", [])
    path.write_text(
        "email,name,status,tags\n"
        "a@example.org,A,subscribed,red\n"
        "b@example.org,B,subscribed,blue\n"
        "c@example.org,C,subscribed,green\n",
        encoding="utf-8",
    )
    done = run(folder, "subscribers", "list", "--tag", "red", "--tag", "BLUE")
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [
        "a@example.org",
        "b@example.org",
    ]


def test_remove_is_the_old_name_of_unsubscribe(tmp_path: Path) -> None:
    """`subscribers remove` is gone from the help but still unsubscribes, saying that it is
    `unsubscribe` now and that `purge` deletes."""
    folder = make_folder(tmp_path, 2)
    assert "remove" not in _help(["subscribers"])
    done = run(folder, "subscribers", "remove", "reader0@example.org")
    assert done.returncode == 0, done.stderr
    assert "`subscribers remove` is now `subscribers unsubscribe`" in done.stderr
    assert "`subscribers purge`" in done.stderr
    assert "reader0@example.org: unsubscribed in" in done.stdout
    assert "reader0@example.org,Reader 0,unsubscribed" in (
        folder / "subscribers" / "news.csv"
    ).read_text(encoding="utf-8")


def test_shell_completion_can_be_installed_and_completes(tmp_path: Path) -> None:
    """The root offers --install-completion; the completion script it installs completes
    commands and the choices of an option."""
    assert "--install-completion" in _help([])

    def complete(words: str) -> list[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "_NEWSLETTER_COMPLETE": "complete_bash"}
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1))
        done = subprocess.run(
            [sys.executable, "-m", "newsletter"],
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.split()

    assert complete("newsletter sub") == ["subscribers"]
    assert complete("newsletter send x --on-change ") == ["continue", "restart"]


def test_every_exit_code_of_the_command_line_is_in_the_table() -> None:
    """docs/sending.md's exit code table lists each code the CLI exits with by itself (the
    errors' codes are checked in test_errors.py): 1, 3 (EXIT_REMAINING), 130."""
    import ast
    import re

    from newsletter import cli_send

    table = (REPO / "docs" / "sending.md").read_text(encoding="utf-8").split("## Exit codes")[1]
    listed = {int(code) for code in re.findall(r"^\|[^|]+\|\s*(\d+)\s*\|", table, re.M)}
    used = {cli_send.EXIT_REMAINING}
    for module in ("cli.py", "cli_send.py", "cli_subscribers.py"):
        tree = ast.parse((REPO / "newsletter" / module).read_text(encoding="utf-8"))
        used |= {
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and ast.unparse(node.func) == "typer.Exit"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        }
    assert used >= {1, 3, 130}
    assert used - listed == set()


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    """`subscribers list | head -1`: when the reader closes the pipe, the command stops
    quietly (exit 1, as click's commands do), not `error: [Errno 32] Broken pipe` and exit 4
    (which says a file cannot be written)."""
    from tests.send_helpers import command, env_for

    folder = make_folder(tmp_path, 1)
    write_list(folder, "big", [f"reader{i}@example.net" for i in range(20000)])  # > a pipe
    process = subprocess.Popen(
        command(folder, "subscribers", "list"), cwd=folder, env=env_for(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()  # the first row, then the reader goes away
    process.stdout.close()
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait() == 1
    assert stderr == ""

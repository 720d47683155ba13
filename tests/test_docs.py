"""The docs match the code: README commands exist, commands have help, config table is current."""

from __future__ import annotations

import os
import re
import shlex

import pytest
import typer
from typer.main import get_command

from newsletter.cli import app
from newsletter.config import documented_keys
from tests.compose_helpers import ROOT, run

README = (ROOT / "README.md").read_text(encoding="utf-8")
UPDATE = os.environ.get("NEWSLETTER_UPDATE_GOLDEN") == "1"


def _readme_commands() -> list[list[str]]:
    """Every `newsletter ...` invocation in the README's shell blocks."""
    found = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for part in re.split(r"&&|\|", line.removeprefix("$ ")):
                words = shlex.split(part.strip(), comments=True)
                if words and words[0].endswith("newsletter"):
                    found.append(words[1:])
    return found


def _all_commands() -> list[list[str]]:
    def walk(command: typer.core.TyperGroup, path: list[str]) -> list[list[str]]:
        paths = []
        for name, sub in command.commands.items():
            paths.append([*path, name])
            if hasattr(sub, "commands"):
                paths.extend(walk(sub, [*path, name]))
        return paths

    return walk(get_command(app), [])  # type: ignore[arg-type]


def test_readme_has_a_two_command_quickstart() -> None:
    """The Quickstart is exactly two commands: run the main job, run the tests."""
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls exactly the README's test command."""
    section = README.split("## Quickstart", 1)[1]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    test_command = next(line for line in block.splitlines() if "pytest" in line)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("words", _readme_commands(), ids=lambda w: " ".join(w[:2]))
def test_readme_command_exists(words: list[str]) -> None:
    """Each command the README shows exists and answers --help."""
    known = _all_commands()
    names = [w for w in words if not w.startswith("-")]
    if words and words[0] in ("--version", "--help"):
        return
    matched = max((c for c in known if names[: len(c)] == c), key=len, default=None)
    assert matched, f"README shows `newsletter {' '.join(words)}`, which does not exist"
    assert run(*matched, "--help").exit_code == 0


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_every_command_has_help(path: list[str]) -> None:
    """Every command and group has a help text."""
    result = run(*path, "--help")
    assert result.exit_code == 0
    assert len(result.output.split("Usage:", 1)[1].strip().splitlines()) > 2


def _config_table() -> str:
    rows = ["| key | type | default | environment variable | meaning |", "|---|---|---|---|---|"]
    for key, kind, default, env, doc in documented_keys():
        default = f"`{default}`" if default else ""
        env = f"`{env}`" if env else "none: in the file only"
        rows.append(f"| `{key}` | {kind} | {default} | {env} | {doc} |")
    return "\n".join(rows) + "\n"


def test_configuration_doc_lists_every_key() -> None:
    """docs/configuration.md has one row per key, as config/settings.py declares them."""
    path = ROOT / "docs" / "configuration.md"
    text = path.read_text(encoding="utf-8")
    start, end = (
        "<!-- keys: generated from newsletter/config/settings.py -->\n",
        "<!-- end keys -->",
    )
    head, rest = text.split(start)
    table, tail = rest.split(end)
    if UPDATE:
        path.write_text(head + start + _config_table() + end + tail, encoding="utf-8")
        table = _config_table()
    assert table == _config_table()

"""`check` of several files and folders, and where the config is found (issue 14): in the
issue's folder or its parents when this folder has none; --config before or after the command,
or NEWSLETTER_CONFIG."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from newsletter.scaffold import new_issue
from tests.compose_helpers import MINIMAL_CONFIG, ROOT, run, write
from tests.send_helpers import run as run_process
from tests.send_helpers import write_list

SCHEMA = json.loads((ROOT / "docs" / "check.schema.json").read_text())
GOOD = """
title = "News"
subject = "News"
preheader = "Pre"
date = 2024-01-02
[[blocks]]
kind = "text"
body = "Hello"
"""
BAD = GOOD.replace('"Hello"', '"See [this](#)"')


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A newsletter with two good issues and one bad, and an empty folder `elsewhere` as cwd."""
    news = tmp_path / "news"
    write(news / "newsletter.toml", MINIMAL_CONFIG)
    write(news / "issues" / "a.toml", GOOD)
    write(news / "issues" / "b.toml", GOOD)
    write(news / "issues" / "c.toml", BAD)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return news


def _summaries(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.endswith("warning(s)")]


def test_several_files_one_summary_each_and_a_total(folder: Path) -> None:
    """`check a.toml b.toml`: a summary line per file, then the total; exit 0 without errors."""
    result = run("check", folder / "issues" / "a.toml", folder / "issues" / "b.toml")
    assert result.exit_code == 0, result.output
    summaries = _summaries(result.output)
    assert [s.split(":")[0] for s in summaries[:2]] == [
        str(folder / "issues" / "a.toml"),
        str(folder / "issues" / "b.toml"),
    ]
    assert summaries[2] == "2 issues: 0 error(s), 3 warning(s)"  # newsletter.toml's: once


def test_a_finding_of_the_config_is_shown_and_counted_once(folder: Path) -> None:
    """newsletter.toml's findings (here its example-host warnings) are the same for every
    issue: `check issues/` shows each once, and the totals count it once."""
    result = run("check", folder / "issues")
    config_lines = [x for x in result.output.splitlines() if "newsletter.toml" in x]
    assert config_lines and len(config_lines) == len(set(config_lines)), result.output
    per_file = [int(x.split(", ")[1].split()[0]) for x in _summaries(result.output)[:3]]
    total = int(_summaries(result.output)[3].split(", ")[1].split()[0])
    assert total == sum(per_file) and per_file[1:] == [0, 0], result.output


def test_one_bad_file_among_several_fails(folder: Path) -> None:
    """Exit 1 when any file has an error; every file is still checked."""
    issues = folder / "issues"
    result = run("check", issues / "c.toml", issues / "a.toml")
    assert result.exit_code == 1
    assert len(_summaries(result.output)) == 3
    assert "c.toml:7: blocks[0].body: link 'this': '#' is a placeholder link" in result.output


def test_a_folder_checks_each_issue_in_it(folder: Path) -> None:
    """`check issues/`: every *.toml in the folder, in name order."""
    result = run("check", folder / "issues")
    assert result.exit_code == 1
    names = [Path(s.split(":")[0]).name for s in _summaries(result.output)[:-1]]
    assert names == ["a.toml", "b.toml", "c.toml"]
    assert _summaries(result.output)[-1].startswith("3 issues: 1 error(s)")


def test_no_argument_checks_every_issue_in_issues(folder: Path, monkeypatch) -> None:
    """`check` alone, in the newsletter folder: every issue in issues/, named as issues/x."""
    monkeypatch.chdir(folder)
    result = run("check")
    assert result.exit_code == 1
    assert [s.split(":")[0] for s in _summaries(result.output)[:-1]] == [
        "issues/a.toml",
        "issues/b.toml",
        "issues/c.toml",
    ]


def test_a_folder_without_issues_is_an_error(folder: Path) -> None:
    """A folder holding no *.toml is one clear error naming it, not a silent pass."""
    (folder / "empty").mkdir()
    result = run("check", folder / "empty")
    assert result.exit_code == 1
    assert f"{folder / 'empty'}: no issue files (*.toml) in this folder" in result.output


def test_json_of_several_files_is_one_object(folder: Path) -> None:
    """--json with a folder: one object, each file as `check FILE --json` prints it, valid
    against docs/check.schema.json."""
    result = run("check", folder / "issues", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["ok"] is False
    assert [f["ok"] for f in report["files"]] == [True, True, False]
    assert report["totals"] == {"files": 3, "errors": 1, "warnings": 3}  # shared ones once
    alone = json.loads(run("check", folder / "issues" / "c.toml", "--json").stdout)
    assert report["files"][2] == alone


def test_init_hint_checks_every_issue(tmp_path: Path, monkeypatch) -> None:
    """The command `init` suggests works with two issues in issues/ and checks both."""
    monkeypatch.chdir(tmp_path)
    result = run("init", "news")
    hint = result.output.strip().splitlines()[-1]
    assert hint == "next: cd news && newsletter check"
    new_issue(tmp_path / "news", "Second", dt.date(2030, 1, 1))
    monkeypatch.chdir(tmp_path / "news")
    checked = run(*hint.split("&& newsletter ")[1].split())
    assert len(_summaries(checked.output)) == 3, checked.output


@pytest.mark.parametrize("command", ["check", "render", "status", "send", "test"])
def test_config_is_found_from_the_issue(folder: Path, command: str) -> None:
    """From a folder without newsletter.toml, each command finds the issue's own newsletter."""
    write_list(folder, "subscribers", ["reader@example.net"])
    args = {
        "render": ["-o", str(folder / "out")],
        "send": ["--yes"],
        "test": ["--to", "me@example.net"],
    }.get(command, [])
    done = run_process(Path.cwd(), command, str(folder / "issues" / "a.toml"), *args)
    assert "no newsletter.toml" not in done.stderr
    if command == "status":
        assert "nothing has been sent" in done.stderr  # it looked in the issue's folder
    else:
        assert done.returncode == 0, done.stderr


def test_without_any_config_the_error_names_both_places(folder: Path) -> None:
    """No newsletter.toml here nor near the issue: the error names both places searched."""
    stray = write(folder.parent / "stray" / "x.toml", GOOD)
    result = run("check", stray)
    assert result.exit_code == 1
    assert f"no newsletter.toml in {Path.cwd()} or its parents, nor in {stray.parent}" in (
        result.output
    )


def test_the_current_folder_comes_first(folder: Path, monkeypatch) -> None:
    """A newsletter.toml here (or above) is used even for an issue of another folder."""
    here = Path.cwd()
    write(here / "newsletter.toml", MINIMAL_CONFIG.replace("Test news", "Here news"))
    result = run("render", folder / "issues" / "a.toml", "-o", here / "out")
    assert result.exit_code == 0, result.output
    assert "Here news" in (here / "out" / "a.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_config_before_or_after_the_command_or_from_the_environment(
    folder: Path, monkeypatch, where: str
) -> None:
    """--config before the command, after it, or NEWSLETTER_CONFIG: the same newsletter."""
    shutil.copytree(folder, folder.parent / "copy")
    issue = folder.parent / "copy" / "issues" / "a.toml"
    (folder.parent / "copy" / "newsletter.toml").unlink()  # only --config can find it now
    args = {
        "before": ["--config", folder, "check", issue],
        "after": ["check", issue, "--config", folder],
        "environment": ["check", issue],
    }[where]
    if where == "environment":
        monkeypatch.setenv("NEWSLETTER_CONFIG", str(folder / "newsletter.toml"))
    result = run(*args)
    assert result.exit_code == 0, result.output


def test_config_after_the_command_wins_over_before(folder: Path) -> None:
    """Given twice, the --config nearer the end is used."""
    result = run(
        "--config", "/nonexistent", "check", folder / "issues" / "a.toml", "--config", folder
    )
    assert result.exit_code == 0, result.output


def test_config_after_a_subscribers_command(folder: Path) -> None:
    """--config after the name also works for the commands of a group (`subscribers list`)."""
    write_list(folder, "subscribers", ["reader@example.net"])
    result = run("subscribers", "list", "--config", folder)
    assert result.exit_code == 0, result.output
    assert "reader@example.net" in result.output


def test_config_after_the_group_name(folder: Path) -> None:
    """--config between a group and its command (`subscribers --config DIR list`) works too,
    not "No such option"."""
    write_list(folder, "subscribers", ["reader@example.net"])
    result = run("subscribers", "--config", folder, "list")
    assert result.exit_code == 0, result.output
    assert "reader@example.net" in result.output


def test_every_command_documents_config_after_its_name() -> None:
    """Each command's --help shows --config."""
    for args in (["check"], ["send"], ["subscribers", "add"], ["archive"]):
        assert "--config" in run(*args, "--help").output, args


def test_a_file_given_twice_is_checked_once(folder: Path) -> None:
    """The same issue named twice (a folder and a file in it, or one file spelled two ways) is
    checked and counted once."""
    issues = folder / "issues"
    result = run("check", issues, issues / "a.toml", issues / ".." / "issues" / "b.toml")
    names = [Path(s.split(":")[0]).name for s in _summaries(result.output)[:-1]]
    assert names == ["a.toml", "b.toml", "c.toml"]
    assert _summaries(result.output)[-1].startswith("3 issues: 1 error(s)")


def test_a_folder_skips_hidden_files(folder: Path) -> None:
    """A folder's hidden *.toml (an editor's lock or backup file, macOS's ._ files) is not an
    issue, as the shell's `issues/*.toml` leaves it out; named on its own it is checked."""
    issues = folder / "issues"
    (issues / ".#a.toml").symlink_to("user@host.1234")  # Emacs's lock file: a dangling link
    write(issues / "._b.toml", "\x00\x05\x16\x07")
    result = run("check", issues)
    names = [Path(s.split(":")[0]).name for s in _summaries(result.output)[:-1]]
    assert names == ["a.toml", "b.toml", "c.toml"]
    assert run("check", issues / "._b.toml").exit_code == 1


def test_init_hint_quotes_a_folder_with_spaces(tmp_path: Path, monkeypatch) -> None:
    """A folder name with a space (or any shell character) is quoted in the hint, so that it
    can be pasted into a shell as it is."""
    monkeypatch.chdir(tmp_path)
    result = run("init", "my news")
    assert result.output.strip().splitlines()[-1] == "next: cd 'my news' && newsletter check"


def test_a_newsletter_folder_means_its_issues(folder: Path) -> None:
    """`check .` (or `check ~/news`) in a newsletter's folder checks the issues in its issues/,
    never newsletter.toml as if it were an issue."""
    result = run("check", folder)
    names = [Path(s.split(":")[0]).name for s in _summaries(result.output)[:-1]]
    assert names == ["a.toml", "b.toml", "c.toml"], result.output
    assert "newsletter.toml: 0 error(s)" not in result.output

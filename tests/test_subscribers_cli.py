"""`newsletter subscribers ...` through the CLI: exit codes and the lines that matter."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.subscribers import read_list
from tests.send_helpers import NEWSLETTER, env_for
from tests.waits import HANG

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test"\nfrom = "Test <news@example.org>"\n', encoding="utf-8"
    )
    return tmp_path


def cli(folder: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(folder), "subscribers", *args])
    return result.exit_code, result.stdout, result.stderr


def test_add_writes_the_default_list(folder: Path) -> None:
    """add without --list writes subscribers/subscribers.csv."""
    code, out, _err = cli(folder, "add", "Ann@Example.org", "--name", "Ann", "--tag", "x")
    path = folder / "subscribers" / "subscribers.csv"
    assert (code, out) == (0, f"added Ann@example.org to {path}\n")
    assert [(p.email, p.name, p.tags) for p in read_list(path)] == [
        ("Ann@example.org", "Ann", {"x"})
    ]


def test_add_bad_address_fails_with_a_reason(folder: Path) -> None:
    """A bad address exits 1 with one line, no traceback, nothing written."""
    code, _out, err = cli(folder, "add", "not an address")
    assert code == 1
    assert err.startswith("error: 'not an address': ")
    assert not (folder / "subscribers").exists()


def test_unsubscribe_unknown_address_is_suppressed_and_exits_0(folder: Path) -> None:
    """unsubscribe of an address in no list records a suppression entry and succeeds."""
    code, out, _err = cli(folder, "unsubscribe", "zed@example.org")
    assert (code, out) == (0, "zed@example.org: in no list; recorded in the suppression file\n")


def test_unsubscribe_only_this_list_needs_list(folder: Path) -> None:
    """--only-this-list without --list is a usage error."""
    code, _out, _err = cli(folder, "unsubscribe", "a@example.org", "--only-this-list")
    assert code == 2


def test_remove_keeps_the_row(folder: Path) -> None:
    """remove marks the person unsubscribed with a time; the row stays."""
    cli(folder, "add", "ann@example.org", "--list", "news")
    code, _out, _err = cli(folder, "remove", "ann@example.org")
    (person,) = read_list(folder / "subscribers" / "news.csv")
    assert code == 0
    assert person.status == "unsubscribed"
    assert person.fields["unsubscribed_at"]


def test_remove_of_unknown_address_fails(folder: Path) -> None:
    """remove of an address in no list exits 1."""
    assert cli(folder, "remove", "zed@example.org")[0] == 1


def test_purge_then_add_is_refused(folder: Path) -> None:
    """After purge, add refuses the address and says how to override."""
    cli(folder, "add", "ann@example.org")
    assert cli(folder, "purge", "ann@example.org", "--yes")[0] == 0
    code, _out, err = cli(folder, "add", "ann@example.org")
    assert code == 1
    assert "suppression file" in err
    assert "--resubscribe" in err


def test_import_reports_bad_rows_and_exits_1(folder: Path) -> None:
    """import with bad rows prints each as file:line: reason and exits 1."""
    code, _out, err = cli(folder, "import", str(FIXTURES / "bad_rows.csv"), "--into", "news")
    assert code == 1
    *rows, last = err.splitlines()
    assert [line.split(": ")[0] for line in rows] == [
        f"{FIXTURES / 'bad_rows.csv'}:{n}" for n in (3, 4, 5, 6)
    ]
    assert last.startswith(f"nothing was written to {folder / 'subscribers' / 'news.csv'}; ")
    assert not (folder / "subscribers" / "news.csv").exists()


def test_import_json_report(folder: Path) -> None:
    """import --json prints the counts for a script."""
    code, out, _err = cli(
        folder,
        "import",
        str(FIXTURES / "mailchimp.csv"),
        "--into",
        "mc",
        "--format",
        "mailchimp",
        "--json",
    )
    data = json.loads(out)
    assert (code, data["added"], data["skipped"]) == (0, 3, [])


def test_list_filters_by_status_and_tag(folder: Path) -> None:
    """list --status --tag prints matching rows, tab-separated."""
    cli(folder, "add", "ann@example.org", "--tag", "x")
    cli(folder, "add", "bob@example.org", "--tag", "y")
    cli(folder, "add", "cid@example.org", "--tag", "x")
    cli(folder, "unsubscribe", "cid@example.org")
    code, out, _err = cli(folder, "list", "--status", "subscribed", "--tag", "X")
    assert (code, out) == (0, "ann@example.org\t\tsubscribed\tx\tsubscribers.csv\n")


def test_list_json(folder: Path) -> None:
    """list --json prints a JSON array of people."""
    cli(folder, "add", "ann@example.org", "--name", "Ånn")
    data = json.loads(cli(folder, "list", "--json")[1])
    assert data == [
        {
            "email": "ann@example.org",
            "name": "Ånn",
            "status": "subscribed",
            "tags": [],
            "list": "subscribers.csv",
            "suppressed": False,
        }
    ]


def test_stats_json(folder: Path) -> None:
    """stats --json counts rows per list and status, tags, and distinct recipients."""
    cli(folder, "add", "ann@example.org", "--tag", "x")
    cli(folder, "add", "ann@example.org", "--list", "other")
    cli(folder, "add", "bob@example.org", "--list", "other")
    cli(folder, "unsubscribe", "bob@example.org")
    data = json.loads(cli(folder, "stats", "--json")[1])
    assert data["lists"] == {
        "other.csv": {"subscribed": 1, "unsubscribed": 1},
        "subscribers.csv": {"subscribed": 1},
    }
    assert (data["tags"], data["recipients"]) == ({"x": 1}, 1)


def test_check_exits_1_naming_file_and_line(folder: Path) -> None:
    """check FILE prints each bad row as file:line and exits 1."""
    code, out, _err = cli(folder, "check", str(FIXTURES / "bad_rows.csv"))
    assert code == 1
    assert out.splitlines()[0].startswith(f"{FIXTURES / 'bad_rows.csv'}:3: email: ")
    assert out.splitlines()[-1] == "1 lists, 6 rows, 4 errors"


def test_check_defaults_to_every_list(folder: Path) -> None:
    """check with no file checks every list in subscribers/ and exits 0 when they are fine."""
    cli(folder, "add", "ann@example.org")
    cli(folder, "add", "bob@example.org", "--list", "b")
    code, out, _err = cli(folder, "check")
    assert (code, out) == (0, "2 lists, 2 rows, 0 errors\n")


def test_example_list_checks_clean(folder: Path) -> None:
    """The shipped subscribers/example.csv has no problems."""
    example = Path(__file__).parents[1] / "subscribers" / "example.csv"
    code, out, _err = cli(folder, "check", str(example))
    assert (code, out) == (0, "1 lists, 10 rows, 0 errors\n")


def test_purge_without_yes_and_terminal_refuses(folder: Path) -> None:
    """purge with no terminal to ask on and no --yes: exit 5, saying nothing was deleted."""
    cli(folder, "add", "ann@example.org")
    before = (folder / "subscribers" / "subscribers.csv").read_bytes()
    code, out, err = cli(folder, "purge", "ann@example.org")
    assert (code, out) == (5, "")
    assert err == (
        "error: not purged: nothing was deleted (no --yes, and no terminal to ask on); "
        "run again with --yes to purge\n"
    )
    assert (folder / "subscribers" / "subscribers.csv").read_bytes() == before


@pytest.mark.parametrize(("answer", "kept"), [("n", True), ("y", False)])
def test_purge_asks_at_a_terminal(folder: Path, answer: str, kept: bool) -> None:
    """At a terminal purge asks first: "n" deletes nothing, "y" deletes the row; both exit 0."""
    cli(folder, "add", "ann@example.org")
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        done = subprocess.run(
            [*NEWSLETTER, "subscribers", "purge", "ann@example.org"],
            cwd=folder, env=env_for(), stdin=terminal, capture_output=True, text=True,
            timeout=HANG, check=False,
        )  # fmt: skip
    finally:
        os.close(controller)
        os.close(terminal)
    assert "Delete every row of ann@example.org for good?" in done.stderr
    assert done.returncode == 0, done.stderr
    assert ("not purged: nothing was deleted" in done.stderr) is kept
    rows = list(read_list(folder / "subscribers" / "subscribers.csv"))
    assert [p.email for p in rows] == (["ann@example.org"] if kept else [])


def test_ctrl_c_at_the_prompt_is_an_interruption(folder: Path) -> None:
    """Ctrl-C while purge asks: "interrupted", exit 130 (not click's "Aborted!" and 1), and
    nothing deleted."""
    import select
    import signal
    import time

    cli(folder, "add", "ann@example.org")
    controller, terminal = pty.openpty()
    # Python keeps SIGINT ignored when it starts with it ignored (a test run started in the
    # background by a script): the child takes Ctrl-C as a person's terminal would deliver it.
    interruptible = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'newsletter'; runpy.run_module('newsletter', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", interruptible, "subscribers", "purge", "ann@example.org"],
        cwd=folder, env=env_for(), stdin=terminal, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen, deadline = b"", time.monotonic() + HANG
        while b"for good?" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                seen += os.read(proc.stderr.fileno(), 4096)  # type: ignore[union-attr]
        assert b"for good?" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=HANG)
    finally:
        proc.kill() if proc.poll() is None else None
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 130, seen + rest
    assert b"interrupted" in rest and b"Aborted" not in rest
    assert [p.email for p in read_list(folder / "subscribers" / "subscribers.csv")] == [
        "ann@example.org"
    ]


def test_a_failed_import_says_nothing_was_written(folder: Path) -> None:
    """An import refused for bad rows ends with the list left as it was and --skip-invalid."""
    cli(folder, "add", "ann@example.org", "--list", "news")
    news = folder / "subscribers" / "news.csv"
    before = news.read_bytes()
    code, _out, err = cli(folder, "import", str(FIXTURES / "bad_rows.csv"), "--into", "news")
    assert code == 1
    assert err.splitlines()[-1] == (
        f"nothing was written to {news}; fix the rows above, or pass --skip-invalid to import "
        "the good ones"
    )
    assert news.read_bytes() == before


@pytest.mark.parametrize("into", ["", ".", "..", "/", ".hidden", "news/..", "FOLDER"])
def test_a_list_name_that_names_no_list_is_refused(folder: Path, into: str) -> None:
    """`--into` naming no list file (an unset shell variable, a folder, a hidden name that would
    clash with the lists' own journals and locks): one error naming the option, exit 1,
    nothing written (before: `subscribers/.csv` and `subscribers/...csv` were made, and `/`
    ended in a traceback)."""
    source = folder / "people.csv"
    source.write_text("email,name\nana@example.org,Ana\n", encoding="utf-8")
    if into == "FOLDER":
        into = str(folder / "templates")
        (folder / "templates").mkdir()
    (folder / "subscribers").mkdir()
    code, out, err = cli(folder, "import", str(source), "--into", into)
    assert code == 1, (out, err)
    assert "is not a list" in err and "Traceback" not in err, err
    assert list((folder / "subscribers").iterdir()) == []

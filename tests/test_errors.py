"""The error family (issue 10): every NewsletterError lives in errors.py and carries its data."""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import Newsletter, errors
from newsletter.cli import app
from newsletter.errors import (
    AlreadyExists,
    BadOption,
    BadTitle,
    CannotListen,
    NewsletterError,
    NotInList,
    Refused,
)
from newsletter.scaffold import new_issue
from newsletter.serve import listen
from newsletter.subscribers import add
from tests.send_helpers import ISSUE, REPO, make_folder

PACKAGE = REPO / "newsletter"
ERRORS = PACKAGE / "errors.py"


def error_classes() -> list[type[NewsletterError]]:
    """NewsletterError and every class below it, as loaded."""
    found: list[type[NewsletterError]] = [NewsletterError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def class_defs(path: Path) -> list[ast.ClassDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]


def base_names(node: ast.ClassDef) -> set[str]:
    return {ast.unparse(base).rpartition(".")[2] for base in node.bases}


def test_every_newsletter_error_is_defined_in_errors_py() -> None:
    """No module but errors.py defines a class deriving from a NewsletterError class."""
    family = {cls.__name__ for cls in error_classes() if cls.__module__ == "newsletter.errors"}
    outside = [
        f"{path.relative_to(REPO)}: {node.name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ERRORS
        for node in class_defs(path)
        if base_names(node) & family
    ]
    assert outside == []
    assert all(cls.__module__ == "newsletter.errors" for cls in error_classes())


def test_no_bare_newsletter_error_is_raised() -> None:
    """Every raise names a specific class carrying data, never NewsletterError("...") itself."""
    bare = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and ast.unparse(node.exc.func) == "NewsletterError"
    ]
    assert bare == []


def test_errors_py_imports_nothing_of_ours_at_run_time() -> None:
    """errors.py is the bottom layer: a newsletter import only under TYPE_CHECKING."""
    tree = ast.parse(ERRORS.read_text(encoding="utf-8"))
    guarded = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    ours = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom | ast.Import)
        and "newsletter" in ast.unparse(node)
        and id(node) not in guarded
    ]
    assert ours == []


def test_every_class_in_errors_py_has_a_docstring() -> None:
    """Each error says when it is raised."""
    missing = [node.name for node in class_defs(ERRORS) if not ast.get_docstring(node)]
    assert missing == []


def test_exit_code_table_lists_every_exit_code() -> None:
    """docs/sending.md's table of exit codes has a row for each exit_code an error carries."""
    docs = (REPO / "docs" / "sending.md").read_text(encoding="utf-8")
    table = docs.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(code) for code in re.findall(r"^\|[^|]+\|\s*(\d+)\s*\|", table, re.M)}
    used = {cls.exit_code for cls in error_classes()}
    assert used - listed == set()
    assert used >= {1, 4}  # the mechanism is in use: StorageError and its children exit 4


def test_refused_names_the_row_that_blocks(tmp_path: Path) -> None:
    """Refused carries the address, the blocking status, and the list file and line."""
    lists = tmp_path / "subscribers"
    lists.mkdir()
    old = lists / "old.csv"
    old.write_text("email,status\nann@example.org,unsubscribed\n", encoding="utf-8")
    with pytest.raises(Refused) as caught:
        add(tmp_path, "ann@example.org")
    refused = caught.value
    assert (refused.email, refused.status, refused.line) == ("ann@example.org", "unsubscribed", 2)
    assert refused.path == old
    assert str(refused).startswith(f"ann@example.org is unsubscribed ({old}:2): ")


def test_cannot_listen_carries_host_and_port() -> None:
    """A port out of range is CannotListen with its host, port and reason."""
    with pytest.raises(CannotListen) as caught:
        listen("127.0.0.1", 70000)
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", 70000)
    assert str(caught.value) == (
        "127.0.0.1:70000: cannot listen: a port is a number from 1 to 65535; pass --port N"
    )


def test_scaffold_errors_carry_the_path_and_the_character(tmp_path: Path) -> None:
    """new_issue: AlreadyExists has the path; BadTitle has the control character."""
    day = dt.date(2026, 1, 1)
    path = new_issue(tmp_path, "Hello", day)
    with pytest.raises(AlreadyExists) as exists:
        new_issue(tmp_path, "Hello", day)
    assert exists.value.path == path
    with pytest.raises(BadTitle) as bad:
        new_issue(tmp_path, "one\ttwo", day)
    assert bad.value.character == "\t" and "U+0009" in str(bad.value)


def test_api_argument_errors_name_the_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan(limit=0) is BadOption naming `limit` and its value; test(as_email=) is NotInList."""
    folder = make_folder(tmp_path, 1)
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    nl = Newsletter.open(folder)
    with pytest.raises(BadOption) as bad:
        nl.plan(ISSUE, limit=0)
    assert (bad.value.option, bad.value.value) == ("limit", 0)
    assert str(bad.value) == "limit: 0 is not a positive number"
    with pytest.raises(NotInList) as missing:
        nl.test(ISSUE, to="me@example.org", as_email="nobody@example.org")
    assert missing.value.email == "nobody@example.org"
    assert missing.value.folder == nl.config.subscribers_dir


def test_cli_exits_with_the_error_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI prints a NotInList as one line and exits with its exit_code."""
    folder = make_folder(tmp_path, 1)
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(app, ["subscribers", "remove", "nobody@example.org"])
    assert result.exit_code == errors.NotInList.exit_code == 1
    assert "error: nobody@example.org is in no list" in result.output

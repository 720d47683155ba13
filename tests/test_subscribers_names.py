"""Names as stored by `add` and `import`: trimmed of Unicode whitespace, never a line break."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.subscribers import check_lists


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test"\nfrom = "Test <news@example.org>"\n', encoding="utf-8"
    )
    return tmp_path


def cli(folder: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(folder), "subscribers", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def cells(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\r\n")


@pytest.mark.parametrize(
    "name", ["Ann\nLee", "Ann\r\nLee", "Ann\rLee", "Ann\x00", "A\tB", "A\x85B"]
)
def test_add_refuses_a_name_with_a_control_character(folder: Path, name: str) -> None:
    """A line break, NUL, tab or other control character in --name: exit 1, nothing written."""
    code, out = cli(folder, "add", "ann@example.org", "--name", name)
    assert code == 1
    assert out.startswith("error: name: a name cannot hold a line break or control character")
    assert len(out.splitlines()) == 1
    assert not (folder / "subscribers").exists()


def test_add_strips_unicode_whitespace_from_the_name(folder: Path) -> None:
    """No-break and other Unicode spaces around a name are not stored."""
    code, _out = cli(folder, "add", "ann@example.org", "--name", "\u00a0 Ann Lee\u2003\u00a0")
    assert code == 0
    assert cells(folder / "subscribers" / "subscribers.csv")[1].startswith(
        "ann@example.org,Ann Lee,"
    )


def test_import_refuses_a_name_with_a_line_break_naming_the_row(folder: Path) -> None:
    """A quoted name holding a line break is an error at the row's line; nothing is imported."""
    source = folder / "in.csv"
    source.write_text('email,name\na@example.org,A\nb@example.org,"Bo\nb"\n', encoding="utf-8")
    code, out = cli(folder, "import", str(source), "--into", "list")
    assert code == 1
    assert out.splitlines() == [
        f"error: {source}:3: name: a name cannot hold a line break or control character ('\\n')",
        f"nothing was written to {folder / 'subscribers' / 'list.csv'}; fix the rows above, or "
        "pass --skip-invalid to import the good ones",
    ]
    assert not (folder / "subscribers" / "list.csv").exists()


def test_mailchimp_import_refuses_a_name_with_a_control_character(folder: Path) -> None:
    """Mailchimp's First Name + Last Name are checked like any name."""
    source = folder / "mc.csv"
    source.write_text('Email Address,First Name,Last Name\na@example.org,"A\r",B\x00\n', "utf-8")
    code, out = cli(folder, "import", str(source), "--into", "list", "--format", "mailchimp")
    assert code == 1
    assert out.splitlines()[0] == (
        f"error: {source}:2: name: a name cannot hold a line break or control character ('\\x00')"
    )


def test_import_strips_unicode_whitespace_from_names(folder: Path) -> None:
    """A no-break space around an imported name is not stored."""
    source = folder / "in.csv"
    source.write_text("email,name\na@example.org,\u00a0Ann\u00a0\n", encoding="utf-8")
    assert cli(folder, "import", str(source), "--into", "list")[0] == 0
    assert cells(folder / "subscribers" / "list.csv")[1].startswith("a@example.org,Ann,")


def test_check_flags_a_stored_name_with_a_line_break(tmp_path: Path) -> None:
    """A name that an older version stored with a line break is an error in `check`."""
    path = tmp_path / "list.csv"
    path.write_text('email,name\na@example.org,"Ann\nLee"\nb@example.org,B\n', encoding="utf-8")
    report = check_lists([path])
    assert [(p.line, p.field) for p in report.errors] == [(2, "name")]

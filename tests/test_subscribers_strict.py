"""Strict list reading: a list that cannot be read to its end stops every command, names the
line where the trouble began, and is never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.errors import UnreadableList
from newsletter.subscribers import (
    check_lists,
    read_list,
    read_loosely,
    suppressed_path,
)
from tests.send_helpers import ISSUE, make_folder

STRAY = "a quoted field opens here and is never closed"


def stray_quote_list(path: Path, rows: int = 1000, bad: int = 301) -> bytes:
    """`rows` subscribers; the row on line `bad` opens a quote it never closes."""
    lines = ["email,name,status"]
    for number in range(2, rows + 2):
        if number == bad:
            lines.append('u299x@example.org,"Stray quote')
        else:
            lines.append(f"u{number - 1}@example.org,User {number - 1},subscribed")
    data = ("\r\n".join(lines) + "\r\n").encode()
    path.write_bytes(data)
    return data


def cli(folder: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(folder), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output  # stdout and stderr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path, 0)
    (folder / "subscribers" / "news.csv").unlink()
    return folder


COMMANDS = {
    "check": ["subscribers", "check"],
    "send plan": ["send", ISSUE],
    "import": ["subscribers", "import", "SOURCE", "--into", "other"],
    "add": ["subscribers", "add", "new@example.org"],
    "unsubscribe": ["subscribers", "unsubscribe", "u5@example.org"],
    "remove": ["subscribers", "remove", "u5@example.org"],
    "purge": ["subscribers", "purge", "u6@example.org", "--yes"],
    "stats": ["subscribers", "stats"],
    "list": ["subscribers", "list"],
    "test --as": ["test", ISSUE, "--to", "me@example.org", "--as", "u5@example.org"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_stray_quote_stops_every_command_at_its_line(folder: Path, name: str) -> None:
    """Row 301 of 1,000 opens a quote: each command exits 1 naming line 301; the file is kept."""
    path = folder / "subscribers" / "news.csv"
    before = stray_quote_list(path)
    args = [
        str(path) if a == "SOURCE" else str(folder / a) if a == ISSUE else a for a in COMMANDS[name]
    ]
    code, err = cli(folder, *args)
    assert code == 1, err
    assert f"{path}:301: {STRAY}" in err
    assert "Traceback" not in err
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".csv") == ["news.csv"]
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("bad", [2, 301, 1001], ids=["first", "middle", "last"])
def test_list_json_of_an_unreadable_list_prints_no_json(folder: Path, bad: int) -> None:
    """`list --json` refuses before printing: stdout is never the start of a JSON document."""
    path = folder / "subscribers" / "news.csv"
    stray_quote_list(path, bad=bad)
    result = CliRunner().invoke(app, ["--config", str(folder), "subscribers", "list", "--json"])
    assert result.exit_code == 1
    assert f"{path}:{bad}: {STRAY}" in result.stderr
    assert result.stdout == ""


LINKED = {
    "add to it": ["subscribers", "add", "new@example.org", "--list", "events"],
    "add elsewhere": ["subscribers", "add", "new@example.org"],
    "import into it": ["subscribers", "import", "SOURCE", "--into", "events"],
    "unsubscribe": ["subscribers", "unsubscribe", "u5@example.org"],
    "remove": ["subscribers", "remove", "u5@example.org", "--list", "events"],
}


@pytest.mark.parametrize("name", LINKED)
def test_a_list_linked_to_a_missing_file_is_unreadable_not_new(folder: Path, name: str) -> None:
    """subscribers/events.csv links to a file not there now (a disk not mounted): commands
    name it and exit 1; none replaces the link with a new list or skips it as absent."""
    stray_quote_list(folder / "subscribers" / "news.csv", rows=10, bad=0)
    events = folder / "subscribers" / "events.csv"
    events.symlink_to(folder / "elsewhere" / "events.csv")
    source = folder / "source.csv"
    source.write_text("email,name\r\nnew@example.org,New\r\n")
    args = [str(source) if a == "SOURCE" else a for a in LINKED[name]]
    code, err = cli(folder, *args)
    assert code == 1, err
    assert f"{events}: no such file" in err
    assert events.is_symlink() and not events.exists()


def test_unsubscribe_from_an_unreadable_list_still_suppresses(folder: Path) -> None:
    """The unsubscribe is recorded in the suppression file though the list cannot be changed."""
    stray_quote_list(folder / "subscribers" / "news.csv")
    code, err = cli(folder, "subscribers", "unsubscribe", "u5@example.org")
    assert code == 1
    assert err.splitlines()[-1] == "u5@example.org: recorded as unsubscribed anyway"
    assert len(suppressed_path(folder).read_text().splitlines()) == 2  # comment + entry


def test_check_counts_nothing_of_a_list_it_cannot_finish(tmp_path: Path) -> None:
    """check reports the open quote as the list's one error; it does not say "300 rows"."""
    path = tmp_path / "list.csv"
    stray_quote_list(path)
    report = check_lists([path])
    assert [(p.line, p.message.split(":")[0]) for p in report.errors] == [(301, STRAY)]


def test_open_quote_on_a_later_line_of_a_row_is_named(tmp_path: Path) -> None:
    """A row whose first quoted field closes (across a line) and a later one never does."""
    path = tmp_path / "list.csv"
    path.write_text('email,name,notes\na@example.org,"Ann\nLee","open\nb@example.org,B,\n')
    with pytest.raises(UnreadableList) as caught:
        list(read_list(path))
    assert (caught.value.path, caught.value.line) == (path, 3)


def test_quote_closed_far_below_is_named_where_it_opened(tmp_path: Path) -> None:
    """A stray quote that a later row's quote "closes" is an error at the stray quote's line."""
    path = tmp_path / "list.csv"
    path.write_text(
        'email,name\na@example.org,"Stray\nb@example.org,B\nc@example.org,"Cee, C"\n',
        encoding="utf-8",
    )
    report = check_lists([path])
    assert [p.line for p in report.errors] == [2]
    assert "closes on line 4 with text after the closing quote" in report.errors[0].message


def test_text_after_a_closing_quote_is_named(tmp_path: Path) -> None:
    """`"Ann" Lee` on one line: an error at that line, not a silently joined name."""
    path = tmp_path / "list.csv"
    path.write_text('email,name\na@example.org,"Ann" Lee\n', encoding="utf-8")
    report = check_lists([path])
    assert [(p.line, p.message.split(":")[0]) for p in report.errors] == [
        (2, "text after the closing quote of a field")
    ]


def test_quoted_line_breaks_still_read(tmp_path: Path) -> None:
    """A quoted field holding LF, CRLF and CR line breaks is one field; rows after it count."""
    path = tmp_path / "list.csv"
    path.write_bytes(
        b'email,notes\r\na@example.org,"one\ntwo\r\nthree\rfour"\r\nb@example.org,x\r\n'
    )
    people = list(read_list(path))
    assert [p.fields["notes"] for p in people] == ["one\ntwo\r\nthree\rfour", "x"]
    assert check_lists([path]).rows == 2


def test_cr_only_line_ends_are_read(folder: Path) -> None:
    """An old Mac export (lone CR line ends) reads row by row, and is rewritten with CRLF."""
    path = folder / "subscribers" / "mac.csv"
    path.write_bytes(b'email,name\ra@example.org,"Ann\rLee"\r\rb@example.org,Bob\r')
    report = check_lists([path])
    assert (report.rows, [(p.line, p.field) for p in report.errors]) == (2, [(2, "name")])
    assert [p.email for p in read_loosely(path)] == ["a@example.org", "b@example.org"]
    code, err = cli(folder, "subscribers", "unsubscribe", "b@example.org")
    assert code == 0, err
    lines = path.read_bytes().split(b"\r\n")
    assert lines[:2] == [b"email,name,status,unsubscribed_at", b'a@example.org,"Ann\rLee",,']
    assert lines[2].startswith(b"b@example.org,Bob,unsubscribed,20")


BIG = "x" * (128 * 1024 + 1)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"email,{BIG}\na@example.org,A\n", 1),
        (f"email,name\na@example.org,A\nb@example.org,{BIG}\n", 3),
        (f'email,name\na@example.org,"{BIG}"\n', 2),
    ],
    ids=["header", "row", "quoted"],
)
def test_field_over_128_kib_is_one_line_naming_it(folder: Path, text: str, line: int) -> None:
    """A field over 128 KiB, in the header or a row: exit 1, one line with file:line."""
    path = folder / "subscribers" / "big.csv"
    path.write_text(text, encoding="utf-8")
    code, err = cli(folder, "subscribers", "check")
    assert code == 1
    assert (
        err.splitlines()[0]
        == f"{path}:{line}: a field longer than 128 KiB (the limit for one field)"
    )
    assert "Traceback" not in err
    code, err = cli(folder, "subscribers", "unsubscribe", "a@example.org")
    assert code == 1
    assert path.read_text(encoding="utf-8") == text


def test_quote_open_past_the_field_limit_is_named_where_it_opened(tmp_path: Path) -> None:
    """In a long list a stray quote hits the 128 KiB limit first: the error still names it."""
    path = tmp_path / "list.csv"
    stray_quote_list(path, rows=8000, bad=12)
    with pytest.raises(UnreadableList) as caught:
        list(read_list(path))
    assert caught.value.line == 12
    assert "past the 128 KiB field limit" in str(caught.value)


def test_not_utf8_far_into_the_file_names_its_line(tmp_path: Path) -> None:
    """A Latin-1 byte on line 5001 of an old Mac file (past any read buffer) is named."""
    path = tmp_path / "list.csv"
    rows = b"".join(b"p%d@example.org,P\r" % i for i in range(4999))
    path.write_bytes(b"email,name\r" + rows + b"j@example.org,J\xfcrgen\rz@example.org,Z\r")
    report = check_lists([path])
    assert [(p.line, p.message) for p in report.errors] == [
        (5001, "not UTF-8 text: save the file as CSV UTF-8")
    ]


def test_empty_file_is_refused_at_line_1(tmp_path: Path) -> None:
    """A file of zero bytes has no header: refused, not read as a list of no one."""
    path = tmp_path / "list.csv"
    path.write_bytes(b"")
    assert [(p.line, p.message) for p in check_lists([path]).errors] == [
        (1, "empty file: the first line must be the header")
    ]


def test_semicolon_in_a_column_name_survives_a_rewrite(folder: Path) -> None:
    """A comma list with a column "a;b;c" is still read with commas after the tool rewrites it."""
    path = folder / "subscribers" / "list.csv"
    path.write_text('email,"a;b;c"\nann@example.org,1\nbob@example.org,2\n', encoding="utf-8")
    assert cli(folder, "subscribers", "unsubscribe", "bob@example.org")[0] == 0
    people = list(read_list(path))
    assert [(p.email, p.fields["a;b;c"], p.status) for p in people] == [
        ("ann@example.org", "1", "subscribed"),
        ("bob@example.org", "2", "unsubscribed"),
    ]


def test_purge_erases_from_the_readable_lists_and_names_the_other(folder: Path) -> None:
    """One unreadable list does not keep the address in the others; exit 1 says which is left."""
    broken = folder / "subscribers" / "a.csv"
    before = stray_quote_list(broken)
    other = folder / "subscribers" / "b.csv"
    other.write_text("email,name\r\nu6@example.org,Six\r\nz@example.org,Z\r\n", encoding="utf-8")
    code, out = cli(folder, "subscribers", "purge", "u6@example.org", "--yes")
    assert code == 1
    assert out.splitlines() == [
        f"{broken}:301: {STRAY}: check the quotes of this row"
        ' (a quote inside a quoted field is written "")',
        f"u6@example.org: suppressed; erased from {other}; fix the lists above, then purge again",
    ]
    assert other.read_bytes() == b"email,name\r\nz@example.org,Z\r\n"
    assert broken.read_bytes() == before


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"email,name\r\na@example.org,Ann\rLee\r\nb@example.org,B\r\n", "carriage return (CR)"),
        (b"email,name\ra@example.org,Ann\nLee\rb@example.org,B\r", "line feed (LF)"),
    ],
    ids=["CR in a CRLF file", "LF in a CR file"],
)
def test_a_line_break_of_the_other_kind_outside_quotes_is_refused(
    folder: Path, data: bytes, kind: str
) -> None:
    """Not guessed at (it would split a row for good on the next rewrite): refused at its line."""
    path = folder / "subscribers" / "list.csv"
    path.write_bytes(data)
    code, out = cli(folder, "subscribers", "unsubscribe", "b@example.org")
    assert code == 1
    assert out.splitlines()[0] == (
        f"{path}:2: a {kind} inside a field that is not quoted: quote the field, or remove it"
    )
    assert path.read_bytes() == data

"""Reading lists as real files look: BOM, `;`, CRLF, quoted newlines; bad rows named by line."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.errors import InvalidInput
from newsletter.subscribers import check_lists, read_list, read_loosely, set_status

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"


def emails(path: Path) -> list[str]:
    return [s.email for s in read_list(path)]


def test_bom_is_not_part_of_the_header() -> None:
    """A UTF-8 BOM before the header does not hide the email column."""
    people = list(read_list(FIXTURES / "bom.csv"))
    assert [(p.email, p.name) for p in people] == [
        ("ana@example.org", "Ana Łucja"),
        ("ben@example.org", "Ben"),
    ]


def test_semicolon_delimiter_is_detected() -> None:
    """A `;` header (European Excel) is read with `;`, quoted `;` kept inside the field."""
    people = list(read_list(FIXTURES / "semicolon.csv"))
    assert [(p.email, p.name, p.status) for p in people] == [
        ("ana@example.org", "Kowalska; Ana", "subscribed"),
        ("ben@example.org", "Bén, Jr.", "unsubscribed"),
    ]


def test_crlf_and_a_quoted_crlf_inside_a_field() -> None:
    """CRLF line ends are read; a CRLF inside a quoted field stays in the field."""
    people = list(read_list(FIXTURES / "crlf.csv"))
    assert people[0].fields["notes"] == "line one\r\nline two"
    assert [p.email for p in people] == ["ana@example.org", "ben@example.org"]


def test_quoted_newlines_quotes_and_trimmed_address() -> None:
    """Quoted newlines, doubled quotes and commas survive; space around the address is trimmed."""
    with pytest.raises(InvalidInput):
        list(read_list(FIXTURES / "multiline.csv"))  # its last row is bad
    people = []
    reader = read_list(FIXTURES / "multiline.csv")
    people.append(next(reader))
    people.append(next(reader))
    assert people[0].fields["notes"] == "first\nsecond\nthird"
    assert (people[1].email, people[1].fields["notes"]) == ("ben@example.org", 'said "hi", left')


def test_line_numbers_count_lines_inside_quoted_fields() -> None:
    """A bad row after a three-line field is reported at its own line in the file (6)."""
    report = check_lists([FIXTURES / "multiline.csv"])
    assert [str(p) for p in report.errors] == [
        f"{FIXTURES / 'multiline.csv'}:6: email: an email address must have an @-sign"
    ]


def test_every_bad_row_is_reported_with_file_and_line() -> None:
    """check names every bad row (missing @, space, empty email, unknown status) by line."""
    path = FIXTURES / "bad_rows.csv"
    report = check_lists([path])
    assert [(p.line, p.field) for p in report.errors] == [
        (3, "email"),
        (4, "email"),
        (5, "email"),
        (6, "status"),
    ]
    assert all(str(p).startswith(f"{path}:{p.line}: ") for p in report.errors)
    assert report.rows == 6


def test_duplicate_header_is_an_error_on_line_1() -> None:
    """Two columns with one name (any case) are refused at the header line."""
    report = check_lists([FIXTURES / "duplicate_header.csv"])
    assert [(p.line, p.message) for p in report.errors] == [
        (1, "column 'Name' appears twice (columns 2 and 3)")
    ]


def test_missing_email_column(tmp_path: Path) -> None:
    """A header without an email column is refused."""
    path = tmp_path / "list.csv"
    path.write_text("mail,name\na@example.org,A\n", encoding="utf-8")
    report = check_lists([path])
    assert [p.message for p in report.errors] == ["no 'email' column in the header"]


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    """A Latin-1 byte is reported at its line, asking for CSV UTF-8."""
    path = tmp_path / "list.csv"
    path.write_bytes("email,name\na@example.org,A\nb@example.org,J\xfcrgen\n".encode("latin-1"))
    report = check_lists([path])
    assert [(p.line, p.message) for p in report.errors] == [
        (3, "not UTF-8 text: save the file as CSV UTF-8")
    ]


def test_repeated_address_is_a_warning_naming_the_first_line(tmp_path: Path) -> None:
    """The same person twice in one list is a warning pointing at the first row."""
    path = tmp_path / "list.csv"
    path.write_text("email\nann@example.org\nbob@example.org\nANN@Example.org\n", "utf-8")
    report = check_lists([path])
    assert report.errors == []
    assert [(p.line, p.message) for p in report.problems] == [
        (4, "same address as line 2: only one gets mail")
    ]


names = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
rows = st.lists(st.tuples(names, names, st.sets(st.sampled_from(["a", "b", "ż"]))), max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_round_trip_keeps_every_field(people: list[tuple[str, str, set[str]]]) -> None:
    """A list rewritten by the tool reads back with every field of every other row unchanged."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "subscribers" / "list.csv"
        path.parent.mkdir()
        header = ["email", "name", "status", "tags", "Notes (free text)"]
        original = [["target@example.org", "T", "subscribed", "", ""]]
        original += [
            [f"p{i}@example.org", name, "subscribed", ";".join(sorted(tags)), note]
            for i, (name, note, tags) in enumerate(people)
        ]
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([header, *original])
        set_status(folder, "target@example.org", "unsubscribed")
        back = list(read_loosely(path))  # a name with a line break is kept, though `check` flags it
        assert back[0].status == "unsubscribed"
        for row, person in zip(original[1:], back[1:], strict=True):
            assert person.fields == dict(zip(header, row, strict=True)) | {"unsubscribed_at": ""}
            assert person.name == row[1].strip()
            assert person.tags == frozenset(row[3].split(";")) - {""}


def test_header_order_and_unknown_columns_survive_a_rewrite(tmp_path: Path) -> None:
    """Column order, unknown columns and row order are kept; the list is written with commas."""
    folder = tmp_path
    (folder / "subscribers").mkdir()
    path = folder / "subscribers" / "list.csv"
    shutil.copy(FIXTURES / "semicolon.csv", path)
    set_status(folder, "ana@example.org", "bounced")
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    assert lines[0] == "email,name,status,tags,unsubscribed_at"
    assert lines[1].startswith("ana@example.org,Kowalska; Ana,bounced,a,20")
    assert lines[2:] == ['ben@example.org,"Bén, Jr.",unsubscribed,,', ""]


def test_short_row_is_padded(tmp_path: Path) -> None:
    """A row with fewer cells than the header (email last) reads as empty cells, not a crash."""
    path = tmp_path / "list.csv"
    path.write_text("name,email\nAnn,ann@example.org\nBob\n", encoding="utf-8")
    report = check_lists([path])
    assert [(p.line, p.message) for p in report.errors] == [(3, "empty email address")]


def test_hidden_files_in_subscribers_are_not_lists(tmp_path: Path) -> None:
    """macOS's `._news.csv` (binary) and an editor's `.#news.csv` next to a list are not
    lists: a send and `subscribers check` read news.csv alone."""
    from newsletter.subscribers import list_files, select

    folder = tmp_path / "subscribers"
    folder.mkdir()
    (folder / "news.csv").write_text("email\nann@example.org\n", encoding="utf-8")
    (folder / "._news.csv").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X\xff\xfe")
    (folder / ".#news.csv").symlink_to("root@host.1234:1700000000")
    assert list_files(tmp_path) == [folder / "news.csv"]
    assert [s.email for s in select(tmp_path)] == ["ann@example.org"]

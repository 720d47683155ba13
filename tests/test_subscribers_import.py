"""Importing csv, Mailchimp and listmonk exports: all bad rows at once, merges, consent kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import InvalidInput
from newsletter.subscribers import import_list, purge, read_list

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test"\nfrom = "Test <news@example.org>"\n', encoding="utf-8"
    )
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_import_creates_the_list(folder: Path) -> None:
    """Importing into a missing list creates it (and subscribers/ with its .gitignore)."""
    into = folder / "subscribers" / "new.csv"
    report = import_list(folder, FIXTURES / "bom.csv", into)
    assert report.added == 2
    assert [p.email for p in read_list(into)] == ["ana@example.org", "ben@example.org"]
    assert "!example.csv" in (folder / "subscribers" / ".gitignore").read_text("utf-8")


def test_bad_rows_are_all_reported_and_nothing_is_written(folder: Path) -> None:
    """Every bad row is in the error, with file and line, and the target is not created."""
    into = folder / "subscribers" / "new.csv"
    with pytest.raises(InvalidInput) as caught:
        import_list(folder, FIXTURES / "bad_rows.csv", into)
    assert [p.line for p in caught.value.problems] == [3, 4, 5, 6]
    assert str(caught.value).startswith(f"{FIXTURES / 'bad_rows.csv'}:3: email: ")
    assert not into.exists()


def test_bad_rows_leave_an_existing_list_byte_for_byte(folder: Path) -> None:
    """A refused import does not touch the list it was going into."""
    into = write(folder / "list.csv", "email,name\nzed@example.org,Zed\n")
    before = into.read_bytes()
    with pytest.raises(InvalidInput):
        import_list(folder, FIXTURES / "bad_rows.csv", into)
    assert into.read_bytes() == before


def test_skip_invalid_writes_the_good_rows_and_lists_the_rest(folder: Path) -> None:
    """--skip-invalid imports the good rows and reports the bad ones by line."""
    into = folder / "list.csv"
    report = import_list(folder, FIXTURES / "bad_rows.csv", into, skip_invalid=True)
    assert [p.email for p in read_list(into)] == ["ana@example.org", "last@example.org"]
    assert [p.line for p in report.skipped] == [3, 4, 5, 6]


def test_repeated_addresses_merge_first_wins(folder: Path) -> None:
    """Rows of one address merge into the first; the others are reported, not errors."""
    source = write(folder / "in.csv", "email,name\nann@example.org,First\nANN@example.org,Second\n")
    into = folder / "list.csv"
    report = import_list(folder, source, into)
    assert [(p.email, p.name) for p in read_list(into)] == [("ann@example.org", "First")]
    assert [(p.line, p.message) for p in report.merged] == [
        (3, "same address as line 2: merged into it (first kept)")
    ]


def test_existing_address_only_gets_empty_fields_filled(folder: Path) -> None:
    """An address the list has keeps its values; only its empty fields are filled."""
    into = write(folder / "list.csv", "email,name,city\nann@example.org,Ann,\n")
    source = write(folder / "in.csv", "email,name,city\nAnn@Example.org,Other,Kraków\n")
    report = import_list(folder, source, into)
    assert (report.added, report.updated) == (0, 1)
    (person,) = read_list(into)
    assert (person.name, person.fields["city"]) == ("Ann", "Kraków")


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_import_never_resubscribes(folder: Path, status: str) -> None:
    """An unsubscribed, bounced or complained person stays so when imported as subscribed."""
    into = write(folder / "list.csv", f"email,status\nann@example.org,{status}\n")
    source = write(folder / "in.csv", "email,status\nann@example.org,subscribed\n")
    import_list(folder, source, into)
    assert [p.status for p in read_list(into)] == [status]


def test_import_can_unsubscribe(folder: Path) -> None:
    """An import saying someone unsubscribed is honoured over a subscribed row."""
    into = write(folder / "list.csv", "email,status\nann@example.org,subscribed\n")
    source = write(folder / "in.csv", "email,status\nann@example.org,unsubscribed\n")
    import_list(folder, source, into)
    assert [p.status for p in read_list(into)] == ["unsubscribed"]


def test_purged_address_cannot_come_back(folder: Path) -> None:
    """After purge, an import skips the address and says why."""
    into = write(folder / "subscribers.csv", "email\nkeep@example.org\n")
    purge(folder, "gone@example.org")
    source = write(folder / "in.csv", "email\nGone@example.org\nnew@example.org\n")
    report = import_list(folder, source, into)
    assert [p.email for p in read_list(into)] == ["keep@example.org", "new@example.org"]
    assert [p.line for p in report.suppressed] == [2]


def test_mailchimp_export(folder: Path) -> None:
    """Mailchimp: names joined, UNSUB_TIME unsubscribes, CLEAN_TIME bounces, others snake_case."""
    into = folder / "list.csv"
    import_list(folder, FIXTURES / "mailchimp.csv", into, fmt="mailchimp")
    ana, ben, cleo = read_list(into)
    assert (ana.name, ana.status, ana.tags) == ("Ana Nowak", "subscribed", {"News", "Events"})
    assert ana.fields["phone_number"] == "+48 123"
    assert ana.fields["member_rating"] == "2"
    assert ana.fields["subscribed_at"] == "2023-01-01 10:05:00"
    assert (ben.status, ben.fields["unsubscribed_at"]) == ("unsubscribed", "2023-06-01 09:00:00")
    assert (cleo.name, cleo.status) == ("Cleo Ré", "bounced")


def test_listmonk_export(folder: Path) -> None:
    """listmonk: enabled subscribes, disabled and blocklisted import as unsubscribed; attributes
    become columns."""
    into = folder / "list.csv"
    report = import_list(folder, FIXTURES / "listmonk.csv", into, fmt="listmonk")
    ana, ben, cleo = read_list(into)
    assert report.added == 3
    assert [p.status for p in (ana, ben, cleo)] == ["subscribed", "unsubscribed", "unsubscribed"]
    assert (ana.fields["city"], ana.fields["plan"], ana.fields["attr_name"]) == ("Kraków", "2", "x")
    assert cleo.fields["city"] == "Köln"


def test_listmonk_bad_attributes_name_the_line(folder: Path) -> None:
    """attributes that are not a JSON object are a bad row at their line."""
    source = write(
        folder / "in.csv", 'email,name,attributes,status\na@example.org,A,"[1]",enabled\n'
    )
    with pytest.raises(InvalidInput) as caught:
        import_list(folder, source, folder / "list.csv", fmt="listmonk")
    assert [str(p) for p in caught.value.problems] == [
        f"{source}:2: attributes: attributes must be a JSON object"
    ]


def test_columns_match_without_regard_to_case(folder: Path) -> None:
    """A source column `City` fills the list's `city`, not a second column."""
    into = write(folder / "list.csv", "Email,city\nann@example.org,\n")
    source = write(folder / "in.csv", "email,City\nann@example.org,Kraków\nbob@example.org,Köln\n")
    import_list(folder, source, into)
    assert into.read_text("utf-8").splitlines() == [
        "Email,city",
        "ann@example.org,Kraków",
        "bob@example.org,Köln",
    ]

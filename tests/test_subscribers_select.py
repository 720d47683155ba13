"""Who gets mail: the send selection, the mid-send blocklist, status changes, add and purge."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from newsletter.errors import InvalidInput, Refused
from newsletter.subscribers import (
    Blocklist,
    add,
    change_status,
    purge,
    read_list,
    select,
    set_status,
    suppressed_path,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "subscribers").mkdir()
    return tmp_path


def write_list(folder: Path, name: str, text: str) -> Path:
    path = folder / "subscribers" / name
    path.write_text(text, encoding="utf-8")
    return path


def test_only_subscribed_once_each_in_list_order(folder: Path) -> None:
    """The selection yields subscribed people once each, lists by name, rows in file order."""
    write_list(folder, "b.csv", "email\nzed@example.org\nann@example.org\n")
    write_list(folder, "a.csv", "email,status\nbob@example.org,\nANN@example.org,subscribed\n")
    selection = select(folder)
    assert [s.email for s in selection] == ["bob@example.org", "ANN@example.org", "zed@example.org"]
    assert selection.left_out == {"duplicate": 1}
    assert [p.name for p in selection.lists] == ["a.csv", "b.csv"]


def test_a_status_in_any_list_suppresses_everywhere(folder: Path) -> None:
    """Unsubscribed, bounced or complained in one list: left out of a send to another."""
    write_list(folder, "news.csv", "email\nann@example.org\nbob@example.org\ncid@example.org\n")
    write_list(
        folder,
        "other.csv",
        "email,status\nann@example.org,unsubscribed\nbob@example.org,bounced\ncid@example.org,complained\n",
    )
    selection = select(folder, [folder / "subscribers" / "news.csv"])
    assert list(selection) == []
    assert selection.left_out == {"suppressed": 3}


def test_list_scoped_unsubscribe_stays_in_its_list(folder: Path) -> None:
    """A row with scope=list keeps its status to that list: other lists still mail them."""
    write_list(folder, "news.csv", "email\nann@example.org\n")
    write_list(folder, "events.csv", "email,status,scope\nann@example.org,unsubscribed,list\n")
    assert [s.email for s in select(folder)] == ["ann@example.org"]
    events = select(folder, [folder / "subscribers" / "events.csv"])
    assert list(events) == []
    assert events.left_out == {"unsubscribed": 1}


def test_left_out_counts_by_reason(folder: Path) -> None:
    """left_out counts each row left out under its reason."""
    write_list(
        folder,
        "list.csv",
        "email,status,tags\n"
        "a@example.org,subscribed,x\nb@example.org,unsubscribed,x\nc@example.org,bounced,x\n"
        "d@example.org,complained,x\ne@example.org,pending,x\nf@example.org,subscribed,y\n"
        "A@example.org,subscribed,x\nnot-an-address,subscribed,x\n",
    )
    selection = select(folder, tags=["X"])
    assert [s.email for s in selection] == ["a@example.org"]
    assert selection.left_out == {
        "unsubscribed": 1,
        "bounced": 1,
        "complained": 1,
        "pending": 1,
        "tag": 1,
        "duplicate": 1,
        "invalid": 1,
    }


def test_example_list_is_not_selected_by_default(folder: Path) -> None:
    """example.csv is only used for a send when named."""
    example = write_list(folder, "example.csv", "email\nada@example.org\n")
    assert list(select(folder)) == []
    assert [s.email for s in select(folder, [example])] == ["ada@example.org"]


def test_suppression_file_blocks_selection(folder: Path) -> None:
    """An unsubscribe of an address in no list still keeps it out of every send."""
    change_status(folder, "Ann@example.org", "unsubscribed")
    write_list(folder, "list.csv", "email\nann@example.org\n")
    selection = select(folder)
    assert list(selection) == []
    assert selection.left_out == {"suppressed": 1}
    assert "ann" not in suppressed_path(folder).read_text("utf-8")


def test_blocklist_sees_a_mid_send_unsubscribe(folder: Path) -> None:
    """refresh() picks up a list changed since; is_blocked then answers for that address."""
    write_list(folder, "list.csv", "email\nann@example.org\nbob@example.org\n")
    blocklist = Blocklist(folder)
    assert not blocklist.is_blocked("ann@example.org")
    set_status(folder, "ANN@example.org", "unsubscribed")
    assert blocklist.refresh()
    assert blocklist.is_blocked("ann@example.org")
    assert not blocklist.is_blocked("bob@example.org")
    assert not blocklist.refresh()


def test_set_status_changes_every_list_holding_the_address(folder: Path) -> None:
    """set_status updates each list with the address and returns those files."""
    a = write_list(folder, "a.csv", "email,name\nann@example.org,Ann\n")
    write_list(folder, "b.csv", "email\nbob@example.org\n")
    c = write_list(folder, "c.csv", "email,status\nAnn@Example.org,subscribed\n")
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert set_status(folder, "ann@example.org", "bounced", when=when) == [a, c]
    assert [(p.status, p.fields["unsubscribed_at"]) for p in read_list(a)] == [
        ("bounced", "2025-01-02T03:04:05Z")
    ]
    assert not suppressed_path(folder).exists()


def test_a_stronger_status_is_not_weakened(folder: Path) -> None:
    """Marking a complained person unsubscribed leaves the complaint (and its time)."""
    path = write_list(
        folder, "a.csv", "email,status,unsubscribed_at\nann@example.org,complained,2020\n"
    )
    before = path.read_bytes()
    change = change_status(folder, "ann@example.org", "unsubscribed")
    assert (change.changed, change.held, change.suppressed) == ([], [path], False)
    assert path.read_bytes() == before


def test_add_refuses_someone_who_unsubscribed(folder: Path) -> None:
    """add will not bring back an unsubscribed person without --resubscribe."""
    write_list(
        folder, "old.csv", "email,status,unsubscribed_at\nann@example.org,unsubscribed,2024-01-01\n"
    )
    with pytest.raises(Refused, match=r"unsubscribed since 2024-01-01 .*old.csv:2"):
        add(folder, "Ann@example.org")
    assert not (folder / "subscribers" / "subscribers.csv").exists()


def test_resubscribe_brings_them_back_to_one_list(folder: Path) -> None:
    """add --resubscribe subscribes them to the list and scopes the old unsubscribe to its own."""
    old = write_list(folder, "old.csv", "email,status\nann@example.org,unsubscribed\n")
    add(folder, "ann@example.org", resubscribe=True)
    assert [s.email for s in select(folder)] == ["ann@example.org"]
    assert [(p.status, p.fields["scope"]) for p in read_list(old)] == [("unsubscribed", "list")]


def test_add_fills_name_and_merges_tags(folder: Path) -> None:
    """Adding someone already subscribed fills an empty name and adds new tags."""
    add(folder, "ann@example.org", tags=["a"])
    added = add(folder, "ANN@example.org", name="Ann", tags=["b"])
    (person,) = read_list(folder / "subscribers" / "subscribers.csv")
    assert (added.created, person.name, person.tags) == (False, "Ann", {"a", "b"})


def test_new_list_is_private(folder: Path) -> None:
    """A list created by the tool is readable by its owner only."""
    added = add(folder, "ann@example.org")
    assert os.stat(added.path).st_mode & 0o777 == 0o600


def test_purge_deletes_rows_and_leaves_only_a_hash(folder: Path) -> None:
    """purge deletes the person's rows everywhere; the suppression file holds no address."""
    a = write_list(folder, "a.csv", "email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
    b = write_list(folder, "b.csv", "email,status\nANN@example.org,unsubscribed\n")
    purged = purge(folder, "ann@example.org")
    assert (purged.rows, purged.files) == (2, [a, b])
    assert [p.email for p in read_list(a)] == ["bob@example.org"]
    assert list(read_list(b)) == []
    text = suppressed_path(folder).read_text("utf-8")
    assert "ann" not in text.lower()
    assert text.count("purged") == 1
    with pytest.raises(Refused):
        add(folder, "ann@example.org")


def test_unreadable_list_stops_the_selection(folder: Path) -> None:
    """A list that cannot be read (no email column) raises rather than miss its unsubscribes."""
    write_list(folder, "good.csv", "email\nann@example.org\n")
    write_list(folder, "broken.csv", "mail,status\nann@example.org,unsubscribed\n")
    with pytest.raises(InvalidInput, match=r"broken\.csv:1: no 'email' column"):
        list(select(folder, [folder / "subscribers" / "good.csv"]))

"""What the folder holds on a person besides their rows (.newsletter/people.sqlite): every status
change is in their history with who made it, and `purge` erases all of it from the file."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.store import Signup
from newsletter.subscribers import CsvStore, People, add, journal_path, purge, stamp
from newsletter.subscribers.people import people_path


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test"\nfrom = "Test <news@example.org>"\n', encoding="utf-8"
    )
    return tmp_path


def test_each_status_change_is_in_the_history_with_its_source(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    add(folder, "ann@example.org", source="cli")
    runner = CliRunner()
    result = runner.invoke(
        app, ["--config", str(folder), "subscribers", "unsubscribe", "Ann@Example.org"]
    )
    assert result.exit_code == 0, result.output
    CsvStore(folder).set_status("ann@example.org", "bounced", source="bounce mailbox")
    with People(folder) as people:
        events = [(e.list, e.status, e.source) for e in people.history("ANN@example.org")]
    assert events == [
        ("subscribers.csv", "subscribed", "cli"),
        ("subscribers.csv", "unsubscribed", "cli"),
        ("subscribers.csv", "bounced", "bounce mailbox"),
    ]
    assert stat.S_IMODE(people_path(folder).stat().st_mode) == 0o600


def test_a_change_that_changes_nothing_is_not_history(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    add(folder, "ann@example.org")
    store = CsvStore(folder)
    store.set_status("ann@example.org", "complained", source="complaint")
    store.set_status("ann@example.org", "unsubscribed", source="unsubscribe link")  # weaker
    with People(folder) as people:
        assert [e.status for e in people.history("ann@example.org")] == [
            "subscribed",
            "complained",
        ]


def test_an_address_in_no_list_is_history_of_the_suppression_file(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    CsvStore(folder).set_status("zoe@example.org", "unsubscribed", source="unsubscribe link")
    with People(folder) as people:
        assert [(e.list, e.status) for e in people.history("zoe@example.org")] == [
            ("", "unsubscribed")
        ]


def test_soft_bounces_count_within_the_window(tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with People(tmp_path) as people:
        counts = [
            people.soft_bounce("ann@example.org", issue="a", status="4.2.2", at=start + step)
            for step in (dt.timedelta(0), dt.timedelta(days=10), dt.timedelta(days=45))
        ]
        assert counts == [1, 2, 1]  # the first two are more than 30 days before the third
        assert people.soft_bounce("bob@example.org", issue="a", status="4.4.1", at=start) == 1


def test_purge_erases_every_record_of_the_address_from_the_file(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    address = "erase.me.please@example.org"
    add(folder, address)
    add(folder, "keep@example.org")
    CsvStore(folder).set_status(address, "unsubscribed", source="unsubscribe link")
    with People(folder) as people:
        people.record_consent(
            address,
            list_name="subscribers.csv",
            source="web form",
            text="Yes, send me the newsletter",
            at="2026-01-01T00:00:00Z",
            confirmed_at="2026-01-01T00:05:00Z",
        )
        people.soft_bounce(address, issue="a", status="4.2.2", at=dt.datetime.now(dt.UTC))
    asked = dt.datetime.now(dt.UTC)
    signup = Signup(address, None, asked, name="Erase Me", consent="Yes, send me the newsletter")
    assert CsvStore(folder).request_signup(signup, since=asked - dt.timedelta(hours=1))
    assert address.encode() in people_path(folder).read_bytes()
    purge(folder, address)
    raw = people_path(folder).read_bytes()
    assert b"erase.me.please" not in raw
    assert b"keep@example.org" in raw
    leftovers = [p.name for p in people_path(folder).parent.iterdir()]
    assert not [name for name in leftovers if name.startswith("people.sqlite-")]
    with People(folder) as people:
        assert people.history(address) == people.consents(address) == []
        assert people.soft_bounces(address) == []
        assert people.signup(address, list_name="subscribers.csv", at=stamp(asked)) is None
    assert b"Erase Me" not in raw


def test_an_import_records_each_new_row_and_each_status_it_changed(tmp_path: Path) -> None:
    """`subscribers import`: every row it adds, and every status it makes stronger, is in the
    person's history with the source "import"; a row it leaves as it was, or skips, is not."""
    folder = _folder(tmp_path)
    add(folder, "kept@example.org", source="cli")
    add(folder, "same@example.org", source="cli")
    CsvStore(folder).suppress("blocked@example.org", "purged")
    source = tmp_path / "export.csv"
    source.write_text(
        "email,name,status\nNew@Example.org,New,\nkept@example.org,,unsubscribed\n"
        "gone@example.org,,bounced\nsame@example.org,Same,\nblocked@example.org,,\n",
        encoding="utf-8",
    )
    into = ["--into", "subscribers"]
    result = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "import", str(source), *into]
    )
    assert result.exit_code == 0, result.output

    def history(email: str) -> list[tuple[str, str, str]]:
        with People(folder) as people:
            return [(e.list, e.status, e.source) for e in people.history(email)]

    assert history("new@example.org") == [("subscribers.csv", "subscribed", "import")]
    assert history("gone@example.org") == [("subscribers.csv", "bounced", "import")]
    assert history("kept@example.org") == [
        ("subscribers.csv", "subscribed", "cli"),
        ("subscribers.csv", "unsubscribed", "import"),
    ]
    assert history("same@example.org") == [("subscribers.csv", "subscribed", "cli")]
    assert history("blocked@example.org") == []
    again = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "import", str(source), *into]
    )
    assert again.exit_code == 0, again.output
    assert history("new@example.org") == [("subscribers.csv", "subscribed", "import")]


def test_an_unsubscribe_through_the_journal_is_history_once_it_is_folded(tmp_path: Path) -> None:
    """`serve` journals its unsubscribes (one fsync shared by many requests); the history of
    each is written by the fold that puts it in the list, once, with its source."""
    folder = _folder(tmp_path)
    add(folder, "ann@example.org", source="cli")
    add(folder, "bob@example.org", source="cli")
    store = CsvStore(folder)
    with store.batched():
        store.set_status("ann@example.org", "unsubscribed", source="unsubscribe link")
        store.set_status("ann@example.org", "unsubscribed", source="unsubscribe link")
        store.set_status("bob@example.org", "complained", source="complaint")
    with People(folder) as people:
        ann = [(e.list, e.status, e.source) for e in people.history("ann@example.org")]
        bob = [(e.status, e.source) for e in people.history("bob@example.org")]
    assert ann == [
        ("subscribers.csv", "subscribed", "cli"),
        ("subscribers.csv", "unsubscribed", "unsubscribe link"),
    ]
    assert bob == [("subscribed", "cli"), ("complained", "complaint")]


def test_a_file_from_before_history_refs_opens_and_purges(tmp_path: Path) -> None:
    """people.sqlite written before the history had a `ref` column (and with the same change
    twice in one second, two equal rows): it opens, gains the column, and `show` (both events:
    they happened) and `purge` work on it."""
    folder = _folder(tmp_path)
    path = people_path(folder)
    path.parent.mkdir()
    row = ("ann@example.org", "ann@example.org", "news.csv", "unsubscribed", "2025-01-01", "cli")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE history (id INTEGER PRIMARY KEY, key TEXT NOT NULL, email TEXT NOT NULL,"
            " list TEXT NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL, source TEXT NOT NULL)"
        )
        insert = "INSERT INTO history (key, email, list, status, at, source) VALUES (?,?,?,?,?,?)"
        db.executemany(insert, [row, row])
    runner = CliRunner()
    shown = runner.invoke(app, ["--config", str(folder), "subscribers", "show", "ann@example.org"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("unsubscribed in news.csv") == 2
    purged = runner.invoke(
        app, ["--config", str(folder), "subscribers", "purge", "ann@example.org", "--yes"]
    )
    assert purged.exit_code == 0, purged.output
    assert b"ann@" not in path.read_bytes()


def test_the_same_change_twice_in_one_second_is_two_events(tmp_path: Path) -> None:
    """Unsubscribed, subscribed again and unsubscribed within one second: the history ends as
    the list does (only a fold retried after a crash must not record its entries twice)."""
    folder = _folder(tmp_path)
    add(folder, "ann@example.org", source="cli")
    moment = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    store = CsvStore(folder)
    store.set_status("ann@example.org", "unsubscribed", when=moment, source="cli")
    store.set_status("ann@example.org", "subscribed", when=moment, source="cli")
    store.set_status("ann@example.org", "unsubscribed", when=moment, source="cli")
    with People(folder) as people:
        statuses = [e.status for e in people.history("ann@example.org")]
    assert statuses == ["subscribed", "unsubscribed", "subscribed", "unsubscribed"]


def test_a_fold_retried_after_a_failure_records_its_entries_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history of a journaled unsubscribe is written before the fold's rename; a fold that
    fails after that (a crash, a full disk) and is done again records nothing twice."""
    from newsletter.subscribers import rewrite

    folder = _folder(tmp_path)
    add(folder, "ann@example.org", source="cli")
    store = CsvStore(folder)
    path = folder / "subscribers" / "subscribers.csv"
    real_mark = rewrite.mark_fold
    failures = iter([OSError("the disk went away")])

    def mark_once_failing(*args: object, **kwargs: object) -> None:
        for failure in failures:
            raise failure
        real_mark(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rewrite, "mark_fold", mark_once_failing)
    with store.batched():  # its fold at the end fails, after writing the history
        store.set_status("ann@example.org", "unsubscribed", source="unsubscribe link")
    assert journal_path(path).exists()
    rewrite.fold(path)
    assert not journal_path(path).exists()
    with People(folder) as people:
        assert [e.status for e in people.history("ann@example.org")] == [
            "subscribed",
            "unsubscribed",
        ]

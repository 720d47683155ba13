"""The change journal of a list: what serve writes, every reader applies and a fold puts in the
file; purge leaves no trace of it; a hand edit made before a fold is kept."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter.addresses import key_hash
from newsletter.cli import app
from newsletter.config import load_config
from newsletter.serve import unsubscribe_app
from newsletter.subscribers import (
    CsvStore,
    batch,
    change_status,
    consent,
    find,
    journal_path,
    purge,
    read_list,
    rewrite,
    select,
)
from newsletter.subscribers.edits import AddEdit, StatusEdit
from newsletter.subscribers.journal import append, encode
from newsletter.subscribers.rewrite import fold
from newsletter.subscribers.splice import FOLDS_TO_ASCII
from newsletter.tokens import make_token
from tests.serve_helpers import HEADER, SECRET, make_folder, running, write_list
from tests.test_serve import _wait_until_up, free_port
from tests.waits import HANG, wait_until

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"
PEOPLE = ["ada@example.org", "bob@example.org", "cy@example.org"]


def post(url: str, root: Path, email: str) -> httpx.Response:
    token = make_token(SECRET, load_config(explicit=root).list_id, email)
    return httpx.post(f"{url}/unsubscribe/{token}", headers=FORM, content=ONE_CLICK, timeout=60)


def file_statuses(path: Path) -> dict[str, str]:
    """The statuses in the CSV file itself, as a person reading it sees them (no journal)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return {line.split(",")[0]: line.split(",")[3] for line in lines}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = make_folder(tmp_path)
    write_list(root / "subscribers" / "main.csv", PEOPLE)
    return root


def test_serve_answers_from_the_journal_and_folds_before_it_stops(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the timed fold far away, the 200 comes with the change in the journal (every reader
    sees it, the file not yet), and stopping the server puts it in the file."""
    monkeypatch.setattr(batch, "FOLD_AFTER", 3600.0)
    path = folder / "subscribers" / "main.csv"
    with running(unsubscribe_app(load_config(explicit=folder), SECRET)) as url:
        assert post(url, folder, "bob@example.org").status_code == 200
        assert journal_path(path).exists()
        assert file_statuses(path)["bob@example.org"] == "subscribed"
        assert {p.email: p.status for p in read_list(path)}["bob@example.org"] == "unsubscribed"
        assert "bob@example.org" not in [p.email for p in select(folder)]
    assert not journal_path(path).exists()
    assert file_statuses(path)["bob@example.org"] == "unsubscribed"


def test_serve_folds_by_itself_while_running(folder: Path) -> None:
    """Without any other change or a stop, the running server folds its journal (after
    batch.FOLD_AFTER seconds, at most 5 by the rule)."""
    assert batch.FOLD_AFTER <= 5
    path = folder / "subscribers" / "main.csv"
    with running(unsubscribe_app(load_config(explicit=folder), SECRET)) as url:
        assert post(url, folder, "ada@example.org").status_code == 200
        wait_until(lambda: not journal_path(path).exists(), "serve folding its journal")
        assert file_statuses(path)["ada@example.org"] == "unsubscribed"


def test_serve_folds_what_a_killed_serve_left(folder: Path) -> None:
    """A journal left by a serve killed before its fold (SIGKILL, power loss) is folded by the
    next serve by itself, with no new change to that list."""
    path = folder / "subscribers" / "main.csv"
    append(path, [StatusEdit("ada@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    with running(unsubscribe_app(load_config(explicit=folder), SECRET)):
        wait_until(lambda: not journal_path(path).exists(), "serve folding the old journal")
    assert file_statuses(path)["ada@example.org"] == "unsubscribed"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_process_folds_on_sigterm(folder: Path, stop: signal.Signals) -> None:
    """The real `newsletter serve`, stopped by SIGTERM (or Ctrl-C) right after a 200: the change
    is in the file when the process has exited, and no journal is left."""
    path = folder / "subscribers" / "main.csv"
    port = free_port()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET.decode()}
    command = [sys.executable, "-m", "newsletter", "--config", str(folder), "serve"]
    server = subprocess.Popen([*command, "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, server)  # type: ignore[arg-type]  # bytes stderr: only polled
        assert post(url, folder, "cy@example.org").status_code == 200
    finally:
        server.send_signal(stop)
        server.communicate(timeout=HANG)
    assert not journal_path(path).exists()
    assert file_statuses(path)["cy@example.org"] == "unsubscribed"


def test_a_hand_edit_before_the_fold_is_kept(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An editor saves the list (a new file) while serve's change waits in the journal: the
    fold applies the change to the saved file, never writing the rows it had read before."""
    monkeypatch.setattr(batch, "FOLD_AFTER", 3600.0)
    path = folder / "subscribers" / "main.csv"
    with running(unsubscribe_app(load_config(explicit=folder), SECRET)) as url:
        assert post(url, folder, "ada@example.org").status_code == 200
        edited = path.read_text(encoding="utf-8").replace('"Name, 1"', "Bobby")
        edited += "dee@example.org,Dee,subscribed,,,,by hand\r\n"
        saved = path.with_name("main.csv~")
        saved.write_text(edited, encoding="utf-8", newline="")
        saved.replace(path)  # as editors save: a new inode in place of the old one
    rows = {p.email: p for p in read_list(path)}
    assert rows["ada@example.org"].status == "unsubscribed"
    assert rows["bob@example.org"].name == "Bobby"
    assert rows["dee@example.org"].fields["source"] == "by hand"
    assert not journal_path(path).exists()


def test_an_edit_in_place_within_one_mtime_tick_is_seen(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list rewritten in place, same size, its mtime set back: serve still sees that it
    changed (ctime), so a person added that way is unsubscribed in the list, not only
    suppressed."""
    monkeypatch.setattr(batch, "FOLD_AFTER", 3600.0)
    path = folder / "subscribers" / "main.csv"
    with running(unsubscribe_app(load_config(explicit=folder), SECRET)) as url:
        assert post(url, folder, "ada@example.org").status_code == 200  # serve has read it
        before = path.stat()
        with path.open("r+b") as handle:  # same inode, same size
            data = handle.read().replace(b"bob@example.org", b"eve@example.org")
            handle.seek(0)
            handle.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert post(url, folder, "eve@example.org").status_code == 200
    assert file_statuses(path)["eve@example.org"] == "unsubscribed"
    assert not (folder / ".newsletter" / "suppressed").exists()


def test_purge_leaves_no_trace_in_any_file(folder: Path) -> None:
    """After purge, no file in subscribers/ or .newsletter/ holds the address: not a journal
    (of a list or of a list since deleted), not the temp file of a rewrite killed midway."""
    lists = folder / "subscribers"
    other = write_list(lists / "other.csv", ["bob@example.org"])
    gone = lists / "gone.csv"
    append(lists / "main.csv", [StatusEdit("ada@example.org", "unsubscribed", "2025-01-01")])
    append(other, [AddEdit("ada@example.org", "Ada", [], "2025-01-01T00:00:00Z", "cli")])
    append(gone, [StatusEdit("ada@example.org", "unsubscribed", "2025-01-01")])
    killed = lists / ".main.csv.k1ll3d.tmp"  # what a rewrite killed before its rename leaves
    killed.write_bytes((lists / "main.csv").read_bytes())
    done = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "purge", "ADA@example.org", "--yes"]
    )
    assert done.exit_code == 0, done.output
    places = [p for d in (lists, folder / ".newsletter") for p in d.rglob("*") if p.is_file()]
    holding = [p for p in places if b"ada@example.org" in p.read_bytes().lower()]
    assert holding == []
    assert [p.email for p in read_list(other)] == ["bob@example.org"]


def test_every_reader_sees_a_pending_add_and_unsubscribe(folder: Path) -> None:
    """Entries in the journal, not yet in the file: list, stats and check see them."""
    path = folder / "subscribers" / "main.csv"
    append(path, [AddEdit("dee@example.org", "Dee", ["x"], "2025-01-01T00:00:00Z", "cli")])
    append(path, [StatusEdit("dee@example.org", "unsubscribed", "2025-01-02T00:00:00Z")])
    runner = CliRunner()
    listed = runner.invoke(app, ["--config", str(folder), "subscribers", "list"])
    assert "dee@example.org\tDee\tunsubscribed\tx\tmain.csv" in listed.stdout
    stats = runner.invoke(app, ["--config", str(folder), "subscribers", "stats"])
    assert "main.csv: 4 rows (3 subscribed, 1 unsubscribed)" in stats.stdout
    checked = runner.invoke(app, ["--config", str(folder), "subscribers", "check"])
    assert "1 lists, 4 rows, 0 errors" in checked.stdout
    assert b"dee@" not in path.read_bytes()


def test_a_command_leaves_its_change_and_the_journal_in_the_file(folder: Path) -> None:
    """`subscribers unsubscribe` folds what serve left pending along with its own change."""
    path = folder / "subscribers" / "main.csv"
    append(path, [StatusEdit("ada@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    done = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "unsubscribe", "cy@example.org"]
    )
    assert done.exit_code == 0, done.output
    assert not journal_path(path).exists()
    statuses = file_statuses(path)
    assert statuses["ada@example.org"] == statuses["cy@example.org"] == "unsubscribed"


def test_folds_to_ascii_is_every_such_character() -> None:
    """splice.py finds the rows of an ASCII address by its bytes, and of the few non-ASCII
    characters an address key can turn into ASCII: that set is complete for this Python."""
    found = set()
    for code in range(0x80, sys.maxunicode + 1):
        char = chr(code)
        nfc = unicodedata.normalize("NFC", char)
        if char.isspace() or any(f.isascii() for f in (nfc, nfc.casefold(), nfc.lower())):
            found.add(char)
    assert found == FOLDS_TO_ASCII


def test_fold_of_nothing_pending_changes_nothing(folder: Path) -> None:
    """fold() with no journal leaves the file as it is (same inode)."""
    path = folder / "subscribers" / "main.csv"
    before = path.stat().st_ino
    assert fold(path) is None
    assert path.stat().st_ino == before


SPLICE_ROWS = [
    "ada@example.org,Ada,subscribed,,,,",
    "  ADA@Example.ORG ,Ada again,subscribed,,,,",  # the same key: spaces, capitals
    '"ada@example.org",Quoted,subscribed,,,,',
    '"x@example.org","Ada said ""ada@example.org, hi""",subscribed,,,,',  # text, not the address
    "bo\u00df@example.org,Sharp,subscribed,,,,",
    "bo\u00dfe@example.org,Not him,subscribed,,,,",
    "boss@example.org,Boss,subscribed,,,,",
    "\u212aim@example.org,Kelvin,subscribed,,,,",
    "kim@example.org,Kim,subscribed,,,,",
    'cy@example.org,Cy,subscribed,,,,"two\r\nlines"',
    "z\u00e9@example.org,Z\u00e9,subscribed,,,,",
]


@pytest.mark.parametrize(
    "email", ["ada@example.org", "boss@example.org", "kim@example.org", "cy@example.org"]
)
@pytest.mark.parametrize("status", ["unsubscribed", "purge"])
def test_a_spliced_rewrite_reads_as_the_streamed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, email: str, status: str
) -> None:
    """Rows that fold to the same key (spaces, capitals, a quoted cell, sharp s, the Kelvin
    sign), text quoting the address, a record over two lines: splicing a big list changes
    exactly the rows the streaming rewrite changes, and finds (`find`) the same ones."""
    results = []
    for splice_from in (0, 10**12):  # spliced where it can be; streamed always
        monkeypatch.setattr(rewrite, "SPLICE_FROM", splice_from)
        monkeypatch.setattr(consent, "SPLICE_FROM", splice_from)
        root = make_folder(tmp_path / str(splice_from))
        path = root / "subscribers" / "main.csv"
        filler = [f"r{n}@example.net,R {n},subscribed,,,," for n in range(2000)]
        rows = [*filler[:1000], *SPLICE_ROWS, *filler[1000:]]
        path.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode())
        results.append([(f.line, f.status, f.scope, f.since) for f in find(root, email)])
        if status == "purge":
            purge(root, email)
        else:
            change_status(root, email, "unsubscribed", when=dt.datetime(2025, 1, 1))
        results.append([(p.email, p.name, p.status) for p in read_list(path)])
    assert results[0] == results[2] and results[1] == results[3]
    assert results[0]  # the address has rows
    assert status != "purge" or len(results[1]) < 2000 + len(SPLICE_ROWS)


def test_a_send_between_batches_sees_a_journaled_unsubscribe(folder: Path) -> None:
    """The check a send makes between batches notices a change only in the journal."""
    store = CsvStore(folder)
    recipients = store.select()
    assert len(list(recipients)) == 3
    blocked = store.watch(recipients)
    assert blocked() == set()
    path = folder / "subscribers" / "main.csv"
    append(path, [StatusEdit("bob@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    assert blocked() == {(key_hash("bob@example.org"), "")}


def test_a_spliced_fold_of_many_entries_reads_as_the_streamed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold of more entries than splice.FEW (one pass over the first cells) changes exactly
    the rows a streaming fold changes, the tricky rows above included."""
    emails = ["ada@example.org", "boss@example.org", "kim@example.org", "x@example.org"]
    emails += [f"r{n}@example.net" for n in range(0, 2000, 150)]
    results = []
    for splice_from in (0, 10**12):
        monkeypatch.setattr(rewrite, "SPLICE_FROM", splice_from)
        path = make_folder(tmp_path / str(splice_from)) / "subscribers" / "main.csv"
        filler = [f"r{n}@example.net,R {n},subscribed,,,," for n in range(2000)]
        rows = [*filler[:1000], *SPLICE_ROWS[:-2], *filler[1000:]]  # no two-line record
        path.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode())
        when = "2025-01-01T00:00:00Z"
        append(path, [StatusEdit(email, "unsubscribed", when) for email in emails])
        assert fold(path) is not None
        results.append([(p.email, p.name, p.status) for p in read_list(path)])
    assert results[0] == results[1]
    assert sum(status == "unsubscribed" for _e, _n, status in results[0]) == 8 + 14


def test_a_whole_last_entry_with_a_wrong_checksum_is_an_error_not_dropped(folder: Path) -> None:
    """A last line ending in its newline was written whole (a kill leaves a line cut short):
    with a wrong checksum it is damaged, not torn; reading names it and the next change keeps
    it instead of cutting an acknowledged unsubscribe off."""
    path = folder / "subscribers" / "main.csv"
    append(path, [StatusEdit("ada@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    append(path, [StatusEdit("bob@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    data = journal_path(path).read_bytes()
    damaged = data[:-2] + (b"0" if data[-2:-1] != b"0" else b"1") + b"\n"
    journal_path(path).write_bytes(damaged)
    runner = CliRunner()
    listed = runner.invoke(app, ["--config", str(folder), "subscribers", "list"])
    assert listed.exit_code == 1
    assert ".main.csv.journal:3: a damaged journal entry" in listed.output
    runner.invoke(app, ["--config", str(folder), "subscribers", "unsubscribe", "cy@example.org"])
    assert journal_path(path).read_bytes().startswith(damaged)
    assert file_statuses(path)["bob@example.org"] == "subscribed"  # nothing folded over it


def test_purge_deletes_the_temp_file_of_a_journal_rewrite_killed_midway(folder: Path) -> None:
    """A fold killed while it wrote the journal anew (entries appended during the fold) leaves
    `..NAME.journal.*.tmp`: purge deletes it, for a list and for a list since deleted (gone.csv:
    no list, and its journal deleted by hand too)."""
    lists = folder / "subscribers"
    for name in ("main.csv", "gone.csv"):
        append(lists / name, [StatusEdit("ada@example.org", "unsubscribed", "2025-01-01")])
        killed = lists / f"..{name}.journal.k1ll3d.tmp"  # as atomic_write names its temp file
        killed.write_bytes(journal_path(lists / name).read_bytes())
    journal_path(lists / "gone.csv").unlink()  # deleted by hand: its temp file is left alone
    done = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "purge", "ada@example.org", "--yes"]
    )
    assert done.exit_code == 0, done.output
    holding = [p for p in lists.rglob("*") if p.is_file() and b"ada@" in p.read_bytes()]
    assert holding == []


@pytest.mark.parametrize(
    "entry",
    [
        {"op": "fold"},
        {"op": "fold", "file": 5, "through": 1},
        {"op": "add", "email": None, "name": "", "tags": [], "when": "", "source": ""},
    ],
    ids=["fold-without-file", "fold-file-not-a-list", "add-without-address"],
)
def test_an_entry_of_the_wrong_shape_is_named_not_a_traceback(
    folder: Path, entry: dict[str, object]
) -> None:
    """A line with a right checksum but not an entry this version writes (another version, a
    script): every command names the journal and the line, as for a damaged one."""
    path = folder / "subscribers" / "main.csv"
    append(path, [StatusEdit("bob@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    with journal_path(path).open("ab") as journal:
        journal.write(encode(entry))
    listed = CliRunner().invoke(app, ["--config", str(folder), "subscribers", "list"])
    assert listed.exit_code == 1
    assert ".main.csv.journal:3: not a journal entry" in listed.output
    assert listed.exception is None or isinstance(listed.exception, SystemExit)


def test_an_unsubscribe_whose_row_was_deleted_by_hand_before_the_fold_is_suppressed(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve's 200 came with the row there; the row is deleted by hand before the fold (an
    editor saving): the fold records the address in the suppression file, as an unsubscribe of
    an address no list holds, so the row restored by hand later is still never mailed."""
    monkeypatch.setattr(batch, "FOLD_AFTER", 3600.0)
    path = folder / "subscribers" / "main.csv"
    original = path.read_text(encoding="utf-8")
    with running(unsubscribe_app(load_config(explicit=folder), SECRET)) as url:
        assert post(url, folder, "bob@example.org").status_code == 200
        kept = [line for line in original.splitlines(True) if not line.startswith("bob@")]
        saved = path.with_name("main.csv~")
        saved.write_text("".join(kept), encoding="utf-8", newline="")
        saved.replace(path)
    assert not journal_path(path).exists()
    path.write_text(original, encoding="utf-8", newline="")  # the row restored by hand
    assert "bob@example.org" not in [p.email for p in select(folder)]

"""The ledger: one row per person, states, and what survives a killed process or a power loss."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from newsletter.errors import LedgerError
from newsletter.ledger import Ledger, ledger_path, peek
from newsletter.sends import report
from newsletter.store import Entry, State
from tests.fakes_dispatch import new_ledger, people

# Written by main at dfc46b3 (states were bare ints then): one recipient per state, named after
# it, and a second sent one.
MAIN_LEDGER = Path(__file__).parent / "fixtures" / "ledgers" / "main-dfc46b3.sqlite"


def test_same_person_is_added_once_in_plan_order(tmp_path: Path) -> None:
    """Adding a key twice (or again later) keeps one row; rows keep the order they came in."""
    ledger = Ledger(tmp_path / "l.sqlite")
    entries = [*people(3), Entry(key="p1@example.org", email="P1@example.org")]
    assert ledger.add(entries) == 3
    assert ledger.add(people(5)) == 2
    assert [r.email for r in ledger.pending(0, 10)] == [f"p{i}@example.org" for i in range(5)]


def test_rows_keep_name_list_and_fields(tmp_path: Path) -> None:
    """What the message needs comes back as it went in, non-ASCII included."""
    ledger = Ledger(tmp_path / "l.sqlite")
    entry = Entry("zoë@example.org", "zoë@example.org", "Zoë «Z»", "subscribers/a.csv", {"c": "x"})
    ledger.add([entry])
    row = ledger.pending(0, 1)[0]
    assert (row.email, row.name, row.list_path, dict(row.fields)) == (
        "zoë@example.org",
        "Zoë «Z»",
        "subscribers/a.csv",
        {"c": "x"},
    )


def test_destinations_get_separate_ledgers(tmp_path: Path) -> None:
    """The outbox and an SMTP server never share a ledger for the same issue."""
    paths = {ledger_path(tmp_path, "2024-01", d) for d in ("outbox", "smtp://h:587", "smtp://h:25")}
    assert len(paths) == 3


def test_missing_ledger_is_a_clear_error(tmp_path: Path) -> None:
    """Opening a ledger that does not exist for reading says nothing was sent yet."""
    with pytest.raises(LedgerError, match="nothing has been sent"):
        Ledger(tmp_path / "none.sqlite", create=False)


def test_recover_marks_in_flight_unknown(tmp_path: Path) -> None:
    """Rows left `sending` become unknown; sent and pending rows are untouched."""
    ledger = new_ledger(tmp_path, 3)
    ledger.start(1)
    ledger.sent(1, 250, "ok")
    ledger.start(2)
    ledger.commit()
    assert ledger.recover() == 1
    assert ledger.counts(live=True) | {} == {
        "pending": 1,
        "sent": 1,
        "deferred": 0,
        "failed": 0,
        "unknown": 1,
        "skipped": 0,
    }


def test_report_has_the_shared_schema(tmp_path: Path) -> None:
    """report() has exactly the documented keys, with failures carrying code and reply."""
    ledger = new_ledger(tmp_path, 4)
    ledger.put_json("left_out", {"unsubscribed": 2})
    ledger.failed(1, 550, "5.1.1 no such user")
    ledger.unknown(2, "dropped")
    ledger.defer(3, 451, "later", 0.0)
    doc = report(ledger, issue="2024-01", destination="outbox")
    assert set(doc) == {
        "issue",
        "destination",
        "counts",
        "unknown",
        "failed",
        "deferred",
        "duration_s",
        "messages_per_second",
        "workers",
    }
    assert doc["workers"] == [  # one sender, not named: the embedded ledger's
        {"id": "local", "sent": 0, "failed": 1, "deferred": 1, "unknown": 1, "sending": 0,
         "live": False}
    ]  # fmt: skip
    assert doc["counts"] == {
        "pending": 1,
        "sent": 0,
        "deferred": 1,
        "failed": 1,
        "unknown": 1,
        "left_out": 2,
        "bounced": 0,
        "complained": 0,
    }
    assert doc["failed"] == [
        {"email": "p0@example.org", "code": 550, "reply": "5.1.1 no such user"}
    ]
    assert doc["unknown"] == ["p1@example.org"]
    assert doc["deferred"] == ["p2@example.org"]


_WRITER = textwrap.dedent(
    """
    import os, sys
    from newsletter.ledger import Ledger
    ledger = Ledger(__import__("pathlib").Path(sys.argv[1]))
    ledger.start(1); ledger.sent(1, 250, "ok"); ledger.sync()      # durable
    ledger.start(2); ledger.commit()                               # committed, not synced
    ledger.start(3)                                                # not even committed
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _killed_writer(path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_commits_survive_kill_9(tmp_path: Path) -> None:
    """After SIGKILL, every committed write is there (WAL, synchronous=NORMAL), nothing else."""
    new_ledger(tmp_path, 4).close()
    _killed_writer(tmp_path / "send.sqlite")
    counts = Ledger(tmp_path / "send.sqlite").counts()
    assert (counts["sent"], counts["unknown"], counts["pending"]) == (1, 1, 2)


def test_power_loss_keeps_everything_before_the_last_sync(tmp_path: Path) -> None:
    """Losing the whole WAL (the worst a power loss can do) loses only writes after sync()."""
    new_ledger(tmp_path, 4).close()
    _killed_writer(tmp_path / "send.sqlite")
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'send.sqlite'}{suffix}").unlink(missing_ok=True)
    counts = Ledger(tmp_path / "send.sqlite").counts()
    assert (counts["sent"], counts["unknown"], counts["pending"]) == (1, 0, 3)


def test_a_million_rows_stay_compact(tmp_path: Path) -> None:
    """20,000 rows with 25-byte addresses take under 130 bytes a row on disk, once sent."""
    ledger = Ledger(tmp_path / "big.sqlite")
    ledger.add(
        Entry(f"reader{i:06d}@example.org", f"reader{i:06d}@example.org") for i in range(20_000)
    )
    for i in range(1, 20_001):
        ledger.start(i)
        ledger.sent(i, 250, "2.0.0 Ok: queued as 4Xz7Q2mJ9kz1")
    ledger.close()
    assert (tmp_path / "big.sqlite").stat().st_size / 20_000 < 130


def test_a_draft_writes_nothing_until_saved(tmp_path: Path) -> None:
    """A draft in memory creates neither the file nor its folder; save() writes it whole."""
    path = tmp_path / "sends" / "l.sqlite"
    draft = Ledger(path, draft=True)
    draft.add(people(3))
    draft.sync()
    assert not path.parent.exists()
    draft.save()
    draft.close()
    assert [r.email for r in Ledger(path).pending(0, 10)] == [e.email for e in people(3)]


def test_a_draft_never_overwrites_a_ledger_that_appeared_since(tmp_path: Path) -> None:
    """Made while no ledger existed, a draft refuses to save over one another send created."""
    path = tmp_path / "l.sqlite"
    draft = Ledger(path, draft=True)
    draft.add(people(1))
    other = Ledger(path)
    other.add(people(2))
    other.close()
    with pytest.raises(LedgerError, match="another send of this issue started"):
        draft.save()
    assert len(Ledger(path).pending(0, 10)) == 2


def test_a_draft_of_a_ledger_saves_its_changes_over_it(tmp_path: Path) -> None:
    """A draft copied from a ledger keeps its rows and states; save() replaces the file."""
    ledger = new_ledger(tmp_path, 2)
    ledger.start(1)
    ledger.sent(1, 250, "ok")
    ledger.close()
    draft = Ledger(ledger.path, draft=True)
    draft.add([Entry(key="new@example.org", email="new@example.org")])
    draft.save()
    draft.close()
    counts = Ledger(ledger.path).counts()
    assert (counts["sent"], counts["pending"]) == (1, 2)


def test_a_ledger_written_before_the_state_enum_reads_back_the_same(tmp_path: Path) -> None:
    """A ledger file of the bare-int days opens with the same counts, report and states."""
    path = tmp_path / "sends" / MAIN_LEDGER.name
    path.parent.mkdir()
    shutil.copy(MAIN_LEDGER, path)
    assert (peek(path).sent, peek(path).unknown) == (2, 2)
    ledger = Ledger(path)
    assert ledger.counts() == {
        "pending": 1, "sent": 2, "deferred": 1, "failed": 1, "unknown": 2, "skipped": 1
    }  # fmt: skip
    assert ledger.counts(live=True)["pending"] == 2
    shown = report(ledger, issue="i", destination="d")
    assert shown["unknown"] == ["sending@example.org", "unknown@example.org"]
    assert shown["deferred"] == ["deferred@example.org"]
    assert shown["failed"] == [
        {"email": "failed@example.org", "code": 550, "reply": "5.1.1 no such user"}
    ]
    stored = dict(ledger._db.execute("SELECT email, state FROM recipients").fetchall())
    assert {email: State(n).label for email, n in stored.items()} == {
        f"{state.label}@example.org": state.label for state in State
    } | {"sent2@example.org": "sent"}


def test_states_are_stored_as_the_integers_of_the_file_format(tmp_path: Path) -> None:
    """Each State is written as the integer older ledgers hold: a file written now reads back
    in an older version (and the other way round)."""
    assert [int(state) for state in State] == list(range(7))
    ledger = new_ledger(tmp_path, 4)
    for row_id in (1, 2, 3):
        ledger.start(row_id)
    ledger.sent(1, 250, "ok")
    ledger.failed(2, 550, "no")
    ledger.commit()
    rows = ledger._db.execute("SELECT state, typeof(state) FROM recipients ORDER BY id")
    assert rows.fetchall() == [(2, "integer"), (4, "integer"), (1, "integer"), (0, "integer")]

"""The sends of the PostgreSQL store and what comes back later (issue 12 with issue 13): the bounce
mailbox records its bounces in the store's send, `status` counts them, `subscribers show` lists a
person's sends from the store and `subscribers purge` scrubs them.

Every test runs against a real throwaway cluster (tests/pgcluster.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.bounce_helpers import fixture, maildir
from tests.send_helpers import ISSUE, run
from tests.test_store_lists import every_row, migrated, statuses, store_env

GONE = "no.such.person@gmail.com"  # the reader tests/fixtures/bounces/gmail-no-such-user.eml names
READERS = [GONE, "ada@example.org", "bob@example.org"]


def sent_from_the_store(tmp_path: Path, pg_url: str) -> Path:
    """A folder whose store has the list `news` of READERS, all sent ISSUE to the outbox."""
    folder = migrated(tmp_path, pg_url)
    source = tmp_path / "news.csv"
    source.write_text("email,name\n" + "".join(f"{e},Reader {e[0]}\n" for e in READERS))
    env = store_env(pg_url)
    done = run(folder, "subscribers", "import", str(source), "--into", "news", env=env)
    assert done.returncode == 0, done.stderr
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 0, done.stderr
    return folder


def status(folder: Path, pg_url: str) -> dict[str, Any]:
    done = run(folder, "status", ISSUE, "--json", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_a_bounce_of_a_store_send_counts_in_status(tmp_path: Path, pg_url: str) -> None:
    """`newsletter bounces` finds the reader in the store's send, records the bounce there
    (once: reading the mailbox again records nothing) and marks them bounced in the store;
    `status --json` counts it in counts.bounced."""
    folder = sent_from_the_store(tmp_path, pg_url)
    assert status(folder, pg_url)["counts"]["bounced"] == 0
    box = maildir(tmp_path, ["gmail-no-such-user.eml"])
    done = run(folder, "bounces", "--maildir", str(box), "--json", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)["messages"]
    assert (outcome["result"], outcome["email"], outcome["status"]) == ("hard", GONE, "5.1.1")
    assert outcome["action"] == "marked bounced"
    counts = status(folder, pg_url)["counts"]
    assert (counts["sent"], counts["bounced"], counts["complained"]) == (3, 1, 0)
    assert statuses(pg_url)[("news", GONE)] == "bounced"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT kind, status FROM send_returns").fetchall() == [
            ("hard", "5.1.1")
        ]
    (box / "new" / "again.eml").write_bytes(fixture("gmail-no-such-user.eml"))  # once more
    again = run(folder, "bounces", "--maildir", str(box), "--json", env=store_env(pg_url))
    [repeated] = json.loads(again.stdout)["messages"]
    assert repeated["action"] == "already recorded"
    assert status(folder, pg_url)["counts"]["bounced"] == 1


def test_show_lists_a_persons_sends_from_the_store(tmp_path: Path, pg_url: str) -> None:
    """`subscribers show --json` with the store: the store's send of ISSUE and its outcome."""
    folder = sent_from_the_store(tmp_path, pg_url)
    done = run(folder, "subscribers", "show", "ADA@example.org", "--json", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    [send] = json.loads(done.stdout)["sends"]
    assert (send["destination"], send["outcome"]) == ("outbox", "sent")
    assert send["ledger"].startswith("send-") and send["at"]


def test_purge_scrubs_the_store_sends(tmp_path: Path, pg_url: str) -> None:
    """`subscribers purge` erases the address, name and reply from the store's send rows (the
    row and its state stay, so no sender mails them again) and says which send it scrubbed."""
    folder = sent_from_the_store(tmp_path, pg_url)
    assert "ada@example.org" in every_row(pg_url)
    done = run(folder, "subscribers", "purge", "ada@example.org", "--yes", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    assert "erased from the record of a send (send-" in done.stdout
    left = every_row(pg_url).casefold()
    assert "ada@example.org" not in left and "reader a" not in left
    with psycopg.connect(pg_url) as conn:
        states = conn.execute("SELECT state, email FROM send_recipients ORDER BY id").fetchall()
    assert [s for s, _ in states] == [2, 2, 2] and sorted(e for _, e in states)[0] == ""
    resumed = run(folder, "send", ISSUE, "--yes", env=store_env(pg_url))
    assert resumed.returncode == 0, resumed.stderr
    assert status(folder, pg_url)["counts"]["sent"] == 3


def test_purge_skips_a_store_send_row_not_yet_sent(tmp_path: Path, pg_url: str) -> None:
    """A purged person still pending in a store send becomes skipped without their address:
    resuming the send mails the others only."""
    folder = sent_from_the_store(tmp_path, pg_url)
    with psycopg.connect(pg_url) as conn:  # as if the send had stopped before them
        conn.execute(
            "UPDATE send_recipients SET state = 0, reply = NULL WHERE email <> %s", (GONE,)
        )
    done = run(folder, "subscribers", "purge", "ada@example.org", "--yes", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT email, state FROM send_recipients ORDER BY id").fetchall()
    assert rows == [(GONE, 2), ("", 6), ("bob@example.org", 0)]

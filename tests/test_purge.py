"""`subscribers purge` leaves only the suppression digest: no file under subscribers/ or
.newsletter/ holds the address in any form afterwards, the sends' ledgers included, and a
resumed send still mails nobody twice (nor the purged person)."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import mailbox
import sqlite3
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from newsletter.addresses import address_key, digest_hash, key_digest
from newsletter.api import Newsletter
from newsletter.cli import app
from newsletter.ledger import Ledger, ledger_path, signed
from newsletter.ledger_people import erase
from newsletter.sends import SendLock
from newsletter.store import Entry, State
from newsletter.subscribers import People, suppressed_path
from tests.send_helpers import ISSUE, make_folder, run, smtp_env, write_list
from tests.smtpd import Fault, SmtpServer

PERSON = "Erase.Me@Example.org"
# Every form in which the person could be left behind: the address as written and as compared,
# its local part alone, their name and a merge field of theirs.
TRACES = [b"Erase.Me@Example.org", b"erase.me@example.org", b"erase.me", b"Erase.Me"]
TRACES += [b"Zedekiah", b"Xyzzyville"]


def traces(folder: Path) -> dict[str, list[bytes]]:
    """The raw bytes of every file under subscribers/ and .newsletter/ that hold a trace."""
    found = {}
    for path in sorted([*folder.glob("subscribers/**/*"), *folder.glob(".newsletter/**/*")]):
        if path.is_file():
            raw = path.read_bytes()
            hits = [t for t in TRACES if t.lower() in raw.lower()]
            if hits:
                found[str(path.relative_to(folder))] = hits
    return found


def outbox(folder: Path) -> list[str]:
    messages = mailbox.Maildir(folder / "outbox", create=False)
    return sorted(email.utils.parseaddr(str(m["To"]))[1] for m in messages)


def person_folder(tmp_path: Path) -> Path:
    """Readers, the person in two lists (one with a merge field the issue uses), and the
    people file's records of them."""
    folder = make_folder(tmp_path, 3)
    (folder / "subscribers" / "members.csv").write_text(
        f"email,name,city\r\nann@example.org,Ann,Oslo\r\n{PERSON},Zedekiah Quux,Xyzzyville\r\n",
        encoding="utf-8",
    )
    news = folder / "subscribers" / "news.csv"
    news.write_text(news.read_text() + "erase.me@example.org,Zedekiah Quux,subscribed\n")
    issue = folder / ISSUE
    text = issue.read_text(encoding="utf-8")
    city = "{{ subscriber.city | default('Europe') }}"
    issue.write_text(text.replace('heading = "Six more months', f'heading = "{city}: six more'))
    with People(folder) as people:
        people.record_consent(
            PERSON,
            list_name="members.csv",
            source="web form",
            text="Yes please",
            at="2026-01-01T00:00:00Z",
            confirmed_at="2026-01-01T00:01:00Z",
        )
        now = dt.datetime.now(dt.UTC)
        people.soft_bounce(PERSON, issue="2021-09-cohes3ion", status="4.2.2", at=now)
    return folder


def purge(folder: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "purge", PERSON.upper(), "--yes"]
    )
    return result.exit_code, result.stdout, result.stderr


def test_purge_leaves_no_trace_in_any_file(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """After an outbox send and an SMTP send that refused the person (the server's reply
    quoting their address), purge leaves no byte of them in lists, the people file, the
    ledgers or their -wal/-shm files: only the suppression digest."""
    folder = person_folder(tmp_path)
    assert run(folder, "send", ISSUE, "--yes").returncode == 0  # to the outbox
    issue = folder / ISSUE  # changed and sent again: the first ledger is kept aside
    issue.write_text(issue.read_text(encoding="utf-8").replace("Cohes3ion: six", "Six"))
    again = run(folder, "send", ISSUE, "--yes", "--on-change", "restart")
    assert again.returncode == 0, again.stderr
    server = make_smtp_server()
    refusal = Fault("RCPT", "550 5.1.1 <erase.me@example.org>: Recipient address rejected", times=0)
    server.add_fault(refusal, recipient="erase.me@example.org")
    sent = run(folder, "send", ISSUE, "--yes", env=smtp_env(server.port))
    assert sent.returncode == 0, sent.stderr
    before = traces(folder)
    assert any(".sqlite" in name for name in before), before  # the ledgers held them
    ledgers = sorted((folder / ".newsletter" / "sends").glob("*.sqlite"))
    assert len(ledgers) == 2
    assert len(list((folder / ".newsletter" / "sends").glob("*.sqlite.replaced-*"))) == 1
    reader = sqlite3.connect(ledgers[0])  # `status` reading meanwhile: -wal and -shm exist
    reader.execute("SELECT count(*) FROM recipients").fetchone()
    code, out, err = purge(folder)
    assert code == 0, err
    assert "warning" not in err
    assert out.count("erased from the record of a send") == 3
    side_files = list((folder / ".newsletter" / "sends").glob("*.sqlite-*"))
    assert traces(folder) == {}, side_files
    reader.close()
    assert traces(folder) == {}
    digest = key_digest(address_key(PERSON))
    assert f"{digest} purged\n" in suppressed_path(folder).read_text()


def test_the_ledger_keeps_the_row_so_a_resumed_send_mails_nobody_twice(tmp_path: Path) -> None:
    """Purged while their send is half done: their row stays (keyed by the suppression
    digest's first 8 bytes), skipped; the resumed send mails the others, not them."""
    folder = make_folder(tmp_path, 0)
    readers = ["reader0@example.org", PERSON, "reader2@example.org", "reader3@example.org"]
    write_list(folder, "news", readers)
    assert run(folder, "send", ISSUE, "--yes", "--limit", "1").returncode == 3
    assert purge(folder)[0] == 0
    done = run(folder, "send", ISSUE, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert outbox(folder) == ["reader0@example.org", "reader2@example.org", "reader3@example.org"]
    again = run(folder, "send", ISSUE, "--yes")
    assert "nothing to send" in again.stderr
    path = ledger_path(folder / ".newsletter", "2021-09-cohes3ion", "outbox")
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT khash, email, name, state, reply FROM recipients").fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    digest = key_digest(address_key(PERSON))
    kept = signed(digest_hash(digest))
    assert (kept, "", None, State.SKIPPED, "erased on request") in rows
    assert traces(folder) == {}


def test_purge_while_a_send_holds_its_lock(tmp_path: Path) -> None:
    """A send running (its lock held, its ledger open and written): purge erases the row in
    the ledger's own transaction, says the file may keep old copies until the send ends, and
    the send goes on without harm; purge again afterwards finishes the job."""
    folder = make_folder(tmp_path, 0)
    write_list(folder, "news", ["reader0@example.org", PERSON, "reader2@example.org"])
    assert run(folder, "send", ISSUE, "--yes", "--limit", "1").returncode == 3
    path = ledger_path(folder / ".newsletter", "2021-09-cohes3ion", "outbox")
    with SendLock(folder / ".newsletter", "2021-09-cohes3ion"):
        sender = Ledger(path, create=False)
        first = sender.pending(0, 10)[0]
        sender.start(first.id)
        sender.commit()  # its data goes out now
        code, _out, err = purge(folder)
        assert code == 0, err
        assert f"warning: {path}: in use (a send of this issue planned or running" in err
        sender.sent(first.id, 250, "2.0.0 Ok")
        assert [row.email for row in sender.pending(0, 10)] == ["reader2@example.org"]
        sender.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM recipients WHERE email = ''").fetchone() == (1,)
    code, _out, err = purge(folder)
    assert (code, "warning" in err) == (0, False)
    assert traces(folder) == {}


def test_an_erased_row_is_never_reported_or_sent_again(tmp_path: Path) -> None:
    """Failed and unknown rows of an erased person: no address in failures (the bounces a
    plan applies), in the unknown list, nor back to pending with --resend-unknown."""
    path = ledger_path(tmp_path, "a", "smtp-x")
    ledger = Ledger(path)
    ledger.add(Entry(e, e) for e in ("gone@example.org", "lost@example.org", "ok@example.org"))
    rows = {row.email: row.id for row in ledger.pending(0, 10)}
    ledger.failed(rows["gone@example.org"], 550, "5.1.1 <gone@example.org>: no such user")
    ledger.unknown(rows["lost@example.org"], "connection lost after data")
    ledger.close()
    for address in ("gone@example.org", "lost@example.org"):
        assert erase(path, address_key(address)) == (1, True)
    ledger = Ledger(path, create=False)
    assert list(ledger.failures()) == []
    assert list(ledger.emails(State.UNKNOWN)) == []
    assert ledger.resend_unknown() == 0
    assert [row.email for row in ledger.pending(0, 10)] == ["ok@example.org"]
    assert ledger.counts()["failed"] == ledger.counts()["unknown"] == 1
    ledger.close()


def test_a_row_erased_while_in_flight_is_not_sent_again(tmp_path: Path) -> None:
    """Erased while its message was out, then deferred by the server: the next run's recovery
    leaves it out, so no resume tries an address that is no longer there."""
    path = ledger_path(tmp_path, "a", "smtp-x")
    ledger = Ledger(path)
    ledger.add([Entry("ann@example.org", "ann@example.org")])
    row = ledger.pending(0, 10)[0]
    ledger.start(row.id)
    ledger.commit()
    assert erase(path, "ann@example.org") == (1, True)
    ledger.defer(row.id, 451, "4.3.0 try later", 0.0)  # the answer to the message in flight
    ledger.close()
    ledger = Ledger(path, create=False)
    ledger.recover()
    assert ledger.deferred() == [] == ledger.pending(0, 10)
    assert ledger.counts()["skipped"] == 1
    ledger.close()


def test_show_after_purge_holds_only_the_digest_and_the_outcomes(tmp_path: Path) -> None:
    """What is left to show: the suppression entry and what each send did, by the hash."""
    folder = person_folder(tmp_path)
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    assert purge(folder)[0] == 0
    done = run(folder, "subscribers", "show", PERSON, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["rows"], doc["history"], doc["consents"], doc["soft_bounces"]) == ([],) * 4
    assert doc["suppressed"] == {"reason": "purged"}
    assert [s["outcome"] for s in doc["sends"]] == ["sent"]


def test_purge_rebuilds_a_ledger_an_older_writer_left_old_copies_in(tmp_path: Path) -> None:
    """A ledger written without secure_delete (older versions, SQLite builds without it) keeps
    copies of replaced rows in its free space: purge rebuilds the file, so none is left."""
    folder = tmp_path
    path = ledger_path(folder / ".newsletter", "a", "outbox")
    ledger = Ledger(path)
    ledger._db.execute("PRAGMA secure_delete=OFF")  # as such a writer did
    people = [PERSON, *(f"reader{i}@example.org" for i in range(300))]
    ledger.add(Entry(address_key(e), e, "Zedekiah Quux") for e in people)
    for row in ledger.pending(0, 1000):
        ledger.start(row.id)
        ledger.defer(row.id, 451, "4.3.0 try again later " * (row.id % 5), 0.0)
    ledger.reset()  # a new plan of a send that had not started
    ledger.add(Entry(address_key(e), e) for e in people[::2])
    ledger.close()
    assert path.read_bytes().count(b"Erase.Me@Example.org") > 1  # the row and older copies
    (folder / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test"\nfrom = "Test <news@example.org>"\n', encoding="utf-8"
    )
    code, _out, err = purge(folder)
    assert code == 0, err
    assert traces(folder) == {}


def test_purge_by_another_spelling_of_an_international_address(tmp_path: Path) -> None:
    """Purged by a spelling of their address with decomposed accents and a punycode domain:
    the row in Unicode, its history and their send's record go all the same."""
    folder = make_folder(tmp_path, 0)
    write_list(folder, "news", ["reader0@example.org", "żaneta@bücher.example.org"])
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    spelling = "Z\u0307aneta@XN--BCHER-KVA.example.org"
    result = CliRunner().invoke(
        app, ["--config", str(folder), "subscribers", "purge", spelling, "--yes"]
    )
    assert result.exit_code == 0, result.output
    for path in [*folder.glob("subscribers/**/*"), *folder.glob(".newsletter/**/*")]:
        if path.is_file():
            raw = path.read_bytes()
            assert b"aneta" not in raw and "bücher".encode() not in raw, path


def test_purge_of_a_name_and_address_held_nowhere_is_refused(tmp_path: Path) -> None:
    """`Ann <ann@…>` pasted from a request's From line is not the address: it matches nothing,
    so purge refuses (exit 1, naming the address to give), writes nothing, and the person's
    rows stay for a purge by the address itself."""
    folder = person_folder(tmp_path)
    lists = sorted(p.read_bytes() for p in folder.glob("subscribers/*.csv"))
    for given in (f"Zedekiah Quux <{PERSON}>", f"<{PERSON}>", f"mailto:{PERSON}"):
        result = CliRunner().invoke(
            app, ["--config", str(folder), "subscribers", "purge", given, "--yes"]
        )
        assert (result.exit_code, result.stdout) == (1, ""), result.output
        assert "not an address, and nothing is held on it" in result.stderr
        assert "give the address alone, as in Erase.Me@example.org" in result.stderr
        assert "nothing was erased" in result.stderr
    assert not suppressed_path(folder).exists()
    assert sorted(p.read_bytes() for p in folder.glob("subscribers/*.csv")) == lists


def test_purge_deletes_the_temp_files_killed_rewrites_left(tmp_path: Path) -> None:
    """A process killed while it replaced a list's journal, or rewrote a list deleted since,
    leaves a hidden temp file that may name the person: purge deletes them too."""
    folder = person_folder(tmp_path)
    lists = folder / "subscribers"
    entry = b'{"op":"status","key":"erase.me@example.org","status":"unsubscribed"}\t0\n'
    (lists / "..news.csv.journal.k1ll3d_a.tmp").write_bytes(b"# newsletter journal 1 x\n" + entry)
    (lists / ".old.csv.k1ll3d_b.tmp").write_bytes(
        b"email,name\r\nErase.Me@Example.org,Zedekiah\r\n"
    )
    code, _out, err = purge(folder)
    assert code == 0, err
    assert traces(folder) == {}


def test_purge_names_the_files_in_subscribers_that_are_no_list_but_hold_them(
    tmp_path: Path,
) -> None:
    """An editor's backup (`members.csv~`) or an export kept beside the lists is no list, so
    purge cannot edit it: it names each such file that holds the address, in any case."""
    folder = person_folder(tmp_path)
    lists = folder / "subscribers"
    (lists / "members.csv~").write_bytes((lists / "members.csv").read_bytes())
    (lists / "old").mkdir()
    (lists / "old" / "export.txt").write_text("ERASE.ME@EXAMPLE.ORG\n", encoding="utf-8")
    (lists / "old" / "other.txt").write_text("ann@example.org\n", encoding="utf-8")
    code, _out, err = purge(folder)
    assert code == 0, err
    for name in ("members.csv~", "old/export.txt"):
        path = lists / name
        assert f"warning: {path}: not a list, but it holds {PERSON.upper()}: " in err
    assert "other.txt" not in err


def test_purge_while_a_first_send_is_shown_for_confirmation(tmp_path: Path) -> None:
    """Purged after a plan was taken (its snapshot holds them; no ledger or lock yet) and
    before it is confirmed: the send mails them not, and its ledger keeps no trace of them."""
    folder = person_folder(tmp_path)
    newsletter = Newsletter.open(folder)
    plan = newsletter.plan(folder / ISSUE)
    assert plan.recipients == 5  # three readers, Ann and them
    assert purge(folder)[0] == 0
    report = newsletter.send(plan)
    assert report.counts.sent == 4
    assert "erase.me@example.org" not in [a.lower() for a in outbox(folder)]
    assert traces(folder) == {}

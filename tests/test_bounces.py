"""`newsletter bounces --maildir`: real bounce messages (tests/fixtures/bounces: Postfix's own,
Exim, Gmail and Exchange style, an ARF complaint) mapped by their VERP return path to the reader
of one send, applied to the lists and the send's ledger, once."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError
from newsletter.ledger import Ledger
from newsletter.verp import ReturnPaths
from tests.bounce_helpers import (
    DESTINATION,
    EXPECTED,
    READERS,
    SCENARIO,
    SLUG,
    bounce_folder,
    fixture,
    maildir,
    sent_ledger,
    statuses,
)
from tests.compose_helpers import run
from tests.send_helpers import ISSUE

OLD_LEDGER = Path(__file__).parent / "fixtures" / "ledgers" / "main-dfc46b3.sqlite"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the fixtures bounced from, as the working directory, with the send's secret."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SCENARIO["secret"])
    found = bounce_folder(tmp_path / "letter")
    monkeypatch.chdir(found)
    return found


def bounces(*args: str | Path, code: int = 0) -> dict[str, Any]:
    result = run("bounces", *args, "--json")
    assert result.exit_code == code, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def by_message(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {m["message"].rpartition("/")[2].partition(":")[0]: m for m in report["messages"]}


def test_each_sample_maps_to_its_reader(folder: Path, tmp_path: Path) -> None:
    """Every fixture maps by its return path to its reader, hard, soft or complaint, with the
    status of the report."""
    found = by_message(bounces("--maildir", maildir(tmp_path)))
    assert {name: (m["email"], m["result"], m["status"]) for name, m in found.items()} == EXPECTED
    assert {m["issue"] for m in found.values()} == {SLUG}


def test_hard_bounces_and_complaints_change_the_lists_soft_ones_count(
    folder: Path, tmp_path: Path
) -> None:
    """Hard: bounced at once; complaint: complained; one soft bounce: still subscribed."""
    bounces("--maildir", maildir(tmp_path))
    shown = statuses(folder)
    for reader, result, _ in EXPECTED.values():
        wanted = {"hard": "bounced", "complaint": "complained", "soft": "subscribed"}[result]
        assert shown[reader] == wanted, reader


def test_a_rerun_changes_nothing(folder: Path, tmp_path: Path) -> None:
    """Each message is moved to cur/ seen and flagged; a second run finds nothing new."""
    box = maildir(tmp_path)
    bounces("--maildir", box)
    before = statuses(folder)
    assert list((box / "new").iterdir()) == []
    flags = {p.name.rpartition(":2,")[2] for p in (box / "cur").iterdir()}
    assert flags == {"Sa"}
    assert "0 NewsletterProcessed" in (box / "dovecot-keywords").read_text()
    again = bounces("--maildir", box)
    assert again["messages"] == [] and statuses(folder) == before


def test_the_ledger_records_them_and_status_counts_them(folder: Path, tmp_path: Path) -> None:
    """status --json of the send counts 7 bounced (5 hard, 2 soft) and 1 complained."""
    bounces("--maildir", maildir(tmp_path))
    result = run("status", ISSUE, "--destination", DESTINATION, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["counts"]
    assert (counts["bounced"], counts["complained"], counts["sent"]) == (7, 1, 8)
    text = run("status", ISSUE, "--destination", DESTINATION).stdout
    assert "pending 0; later: bounced 7, complained 1" in text


def test_soft_bounces_reaching_the_limit_mark_bounced(folder: Path, tmp_path: Path) -> None:
    """The third soft bounce within 30 days (three issues) marks the reader bounced."""
    reader = "full@tempfail.test"
    paths = ReturnPaths(SCENARIO["bounce_address"], SCENARIO["secret"].encode())
    original = fixture("postfix-soft.eml")
    verp = paths.for_send(SLUG, DESTINATION)(3, reader).encode()
    texts = {}
    for n in (1, 2):
        slug = f"2021-1{n}-later"
        sent_ledger(folder, slug, DESTINATION, READERS)
        texts[f"soft{n}"] = original.replace(
            verp, paths.for_send(slug, DESTINATION)(3, reader).encode()
        )
    first = bounces("--maildir", maildir(tmp_path, ["postfix-soft.eml"], {"soft1": texts["soft1"]}))
    assert [m["action"] for m in first["messages"]][-1].startswith("soft bounce 2 of 3")
    assert statuses(folder)[reader] == "subscribed"
    last = bounces("--maildir", maildir(tmp_path, [], {"soft2": texts["soft2"]}))
    assert last["messages"][0]["action"].endswith("marked bounced")
    assert statuses(folder)[reader] == "bounced"


def test_a_forged_return_path_maps_to_nobody(folder: Path, tmp_path: Path) -> None:
    """A VERP address whose MAC does not verify maps to nobody, even though the report names a
    reader of the send; exit 0, nothing changes, the message stays unread for a person."""
    real = b"bounces+thurch-1-sbfclszhg4"
    forged = fixture("postfix-unknown-user.eml").replace(real, b"bounces+thurch-2-sbfclszhg4")
    box = maildir(tmp_path, [], {"forged": forged})
    [outcome] = bounces("--maildir", box)["messages"]
    assert outcome["result"] == "nobody" and "not one we made" in outcome["action"]
    assert statuses(folder)["nosuchuser@local.test"] == "subscribed"
    [moved] = (box / "cur").iterdir()
    assert moved.name.endswith(":2,a")  # processed, not seen


def test_a_relay_changing_the_case_changes_nothing(folder: Path, tmp_path: Path) -> None:
    """The return path is read case-insensitively."""
    text = fixture("postfix-unknown-user.eml")
    upper = text.replace(
        b"bounces+thurch-1-sbfclszhg4@bounce.test", b"BOUNCES+THURCH-1-SBFCLSZHG4@Bounce.TEST"
    )
    [outcome] = bounces("--maildir", maildir(tmp_path, [], {"upper": upper}))["messages"]
    assert (outcome["email"], outcome["result"]) == ("nosuchuser@local.test", "hard")


def _without_verp(name: str) -> bytes:
    text = fixture(name)
    for row in range(1, 9):
        verp = ReturnPaths(SCENARIO["bounce_address"], SCENARIO["secret"].encode()).for_send(
            SLUG, DESTINATION
        )(row, READERS[row - 1])
        text = text.replace(verp.encode(), b"news@cohes3ion.example.org")
    return text


def test_without_verp_a_unique_recipient_is_matched(folder: Path, tmp_path: Path) -> None:
    """An older send (no bounce_address): the DSN's recipient, in exactly one ledger."""
    box = maildir(tmp_path, [], {"old": _without_verp("postfix-refused.eml")})
    [outcome] = bounces("--maildir", box)["messages"]
    assert (outcome["email"], outcome["result"]) == ("someone@refuse.test", "hard")
    assert statuses(folder)["someone@refuse.test"] == "bounced"


def test_without_verp_an_ambiguous_recipient_maps_to_nobody(folder: Path, tmp_path: Path) -> None:
    """The same recipient in two sends' ledgers, no return path and no matching Message-ID:
    reported as mapping to nobody, never guessed."""
    sent_ledger(folder, "2021-10-other", DESTINATION, READERS)
    box = maildir(tmp_path, [], {"old": _without_verp("postfix-refused.eml")})
    [outcome] = bounces("--maildir", box)["messages"]
    assert outcome["result"] == "nobody" and "ambiguous" in outcome["action"]
    assert statuses(folder)["someone@refuse.test"] == "subscribed"


def test_a_malformed_message_is_reported_not_fatal(folder: Path, tmp_path: Path) -> None:
    """A report without recipients and a message that is no bounce are reported; the others are
    still applied and the command exits 0."""
    empty = (
        fixture("postfix-refused.eml")
        .replace(b"Final-Recipient", b"X-Final")
        .replace(b"Original-Recipient", b"X-Original")
    )
    texts = {"empty": empty, "hello": b"From: a@b.example\nSubject: hi\n\nhello\n"}
    found = by_message(bounces("--maildir", maildir(tmp_path, ["gmail-no-such-user.eml"], texts)))
    assert found["empty"]["result"] == "malformed"
    assert found["hello"]["result"] == "not a bounce"
    assert found["gmail-no-such-user.eml"]["result"] == "hard"


def test_dry_run_changes_nothing(folder: Path, tmp_path: Path) -> None:
    """--dry-run says what it would do; lists, ledger and mailbox stay as they were."""
    box = maildir(tmp_path)
    found = by_message(bounces("--maildir", box, "--dry-run"))
    assert found["postfix-refused.eml"]["action"] == "would mark bounced"
    assert found["arf-complaint.eml"]["action"] == "would mark complained"
    assert set(statuses(folder).values()) == {"subscribed"}
    assert len(list((box / "new").iterdir())) == len(EXPECTED)


def test_not_a_maildir_is_one_clear_error(folder: Path, tmp_path: Path) -> None:
    """A folder without new/ and cur/: exit 1 naming the option."""
    result = run("bounces", "--maildir", tmp_path)
    assert result.exit_code == 1
    assert "--maildir: is not a Maildir" in result.output


def test_an_old_ledger_reads_as_nothing_returned(tmp_path: Path) -> None:
    """A ledger made before the returns table: nothing bounced, and a bounce can be recorded."""
    path = tmp_path / "sends" / OLD_LEDGER.name
    path.parent.mkdir()
    shutil.copy(OLD_LEDGER, path)
    ledger = Ledger(path)
    assert ledger.returned() == {"bounced": 0, "complained": 0}
    row = ledger.row(1)
    assert row is not None and ledger.record_return(row.id, "hard", "5.1.1", 0.0)
    assert not ledger.record_return(row.id, "hard", "5.1.1", 0.0)
    assert ledger.returned() == {"bounced": 1, "complained": 0}
    ledger.close()


def test_a_bounce_address_too_long_for_the_id_is_refused(tmp_path: Path) -> None:
    """The local part plus the id must stay within RFC 5321's 64 octets."""
    bounce_folder(tmp_path)
    text = (tmp_path / "newsletter.toml").read_text()
    (tmp_path / "newsletter.toml").write_text(
        text.replace("bounces@bounce.test", "b" * 36 + "@bounce.test")
    )
    with pytest.raises(ConfigError, match="at most 35 characters"):
        load_config(tmp_path)


def test_a_send_gives_each_message_its_return_path(
    tmp_path: Path, make_smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With bounce_address, MAIL FROM is bounces+<id>@domain per message (at most 64 octets
    before @), and each id reads back to that message's recipient; envelope_from loses."""
    from newsletter.api import Newsletter
    from newsletter.verp import MAX_LOCAL
    from tests.send_helpers import smtp_env, write_list

    server = make_smtp_server()
    for name, value in smtp_env(server.port, NEWSLETTER_SECRET=SCENARIO["secret"]).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEWSLETTER_ENVELOPE_FROM", "other@cohes3ion.example.org")
    folder = bounce_folder(tmp_path / "letter")
    shutil.rmtree(folder / ".newsletter")  # no earlier send: this is the first
    write_list(folder, "news", ["a@example.org", "b@example.org"])
    monkeypatch.chdir(folder)
    result = run("send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    paths = ReturnPaths(SCENARIO["bounce_address"], SCENARIO["secret"].encode())
    nl = Newsletter.open(folder)
    ledger = nl.sends.find(SLUG, nl.destination())
    assert ledger is not None
    for message in server.messages:
        local = message.sender.partition("@")[0]
        assert local.startswith("bounces+") and len(local.encode()) <= MAX_LOCAL
        verp = paths.read(message.sender)
        assert verp is not None
        row = ledger.row(verp.row)
        assert row is not None and row.email == message.recipients[0]
        assert paths.verifies(verp, row.email)
    ledger.close()
    assert len(server.messages) == 2


def test_a_delay_warning_changes_nothing(folder: Path, tmp_path: Path) -> None:
    """Action: delayed (the remote side still tries): reported, nothing counted or changed."""
    delayed = fixture("postfix-soft.eml").replace(b"Action: failed", b"Action: delayed")
    [outcome] = bounces("--maildir", maildir(tmp_path, [], {"delayed": delayed}))["messages"]
    assert (outcome["result"], outcome["action"]) == ("delayed", "nothing to do (delayed)")
    assert statuses(folder)["full@tempfail.test"] == "subscribed"
    again = bounces("--maildir", maildir(tmp_path, [], {"delayed2": delayed}))
    assert again["messages"][0]["result"] == "delayed"


def test_the_same_bounce_twice_counts_once(folder: Path, tmp_path: Path) -> None:
    """A second copy of one report (a relay sent it twice) is recorded once: no second soft
    bounce for the same message."""
    box = maildir(tmp_path, ["postfix-soft.eml"], {"copy": fixture("postfix-soft.eml")})
    found = by_message(bounces("--maildir", box))
    actions = sorted(m["action"] for m in found.values())
    assert actions == ["already recorded", "soft bounce 1 of 3 within 30 days"]


def test_a_bounce_of_an_issue_being_sent_waits(folder: Path, tmp_path: Path) -> None:
    """While a send of the issue holds its lock, its bounces are left for the next run."""
    from newsletter.sends import SendLock

    box = maildir(tmp_path, ["postfix-refused.eml"])
    with SendLock(folder / ".newsletter", SLUG):
        [outcome] = bounces("--maildir", box)["messages"]
    assert outcome["result"] == "later"
    assert statuses(folder)["someone@refuse.test"] == "subscribed"
    [outcome] = bounces("--maildir", box)["messages"]
    assert outcome["result"] == "hard" and statuses(folder)["someone@refuse.test"] == "bounced"


def test_check_warns_of_a_bounce_address_at_an_example_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bounce_address is in every message's envelope: `check` warns when it is an example's."""
    found = bounce_folder(tmp_path / "letter")
    text = (found / "newsletter.toml").read_text()
    (found / "newsletter.toml").write_text(text.replace("@bounce.test", "@example.com"))
    monkeypatch.chdir(found)
    result = run("check", ISSUE)
    assert "newsletter.bounce_address: 'bounces@example.com' is at an example host" in result.output


def test_a_return_for_a_reader_erased_since_changes_no_one(folder: Path, tmp_path: Path) -> None:
    """A bounce or complaint (no return path: matched by the recipient's hash) of a reader
    purged since: their erased ledger row keeps no address, so nothing is marked, counted or
    suppressed, and no record about an empty address appears in the people file."""
    erased = ["someone@refuse.test", "full@tempfail.test", "reader@yahoo.com"]
    for email in erased:
        assert run("subscribers", "purge", email, "--yes").exit_code == 0
    names = ["postfix-refused.eml", "postfix-soft.eml", "arf-complaint.eml"]
    box = maildir(tmp_path, [], {name: _without_verp(name) for name in names})
    suppressed = (folder / ".newsletter" / "suppressed").read_text()
    for outcome in bounces("--maildir", box)["messages"]:
        assert outcome["action"] == "erased on request: nothing to change", outcome
    assert (folder / ".newsletter" / "suppressed").read_text() == suppressed
    with contextlib.closing(sqlite3.connect(folder / ".newsletter" / "people.sqlite")) as db:
        for table in ("history", "soft_bounces"):
            assert db.execute(f"SELECT * FROM {table}").fetchall() == []  # noqa: S608

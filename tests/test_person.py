"""`newsletter subscribers show EMAIL`: everything held on an address (a data subject access
request), as text or as JSON of a documented shape (docs/person.schema.json)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from newsletter.api import Newsletter
from newsletter.cli import app
from newsletter.ledger import Ledger, ledger_path
from newsletter.ledger_people import _OUTCOME
from newsletter.store import Entry
from newsletter.subscribers import CsvStore, People, add
from newsletter.subscribers.edits import StatusEdit
from newsletter.subscribers.journal import append
from newsletter.subscribers.rewrite import fold
from tests.send_helpers import ISSUE, make_folder, run, write_list

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "person.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test"\nfrom = "Test <news@example.org>"\n', encoding="utf-8"
    )
    return tmp_path


def show(folder: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(folder), "subscribers", "show", *args])
    return result.exit_code, result.stdout, result.stderr


def shown_json(folder: Path, email: str) -> dict[str, Any]:
    code, out, _err = show(folder, email, "--json")
    assert code == 0
    doc: dict[str, Any] = json.loads(out)  # nothing but the object on stdout
    VALIDATOR.validate(doc)
    return doc


def test_show_gives_every_row_in_every_list_with_all_columns(folder: Path) -> None:
    """Each row of the address (any spelling of it) in each list: file, line, every column."""
    lists = folder / "subscribers"
    lists.mkdir()
    (lists / "members.csv").write_text(
        "email,name,status,city\r\nbob@example.org,Bob,,Oslo\r\n"
        "Ann@Example.ORG,Ann Lee,unsubscribed,Kraków\r\n",
        encoding="utf-8",
    )
    (lists / "events.csv").write_text("Email,Seat\nann@example.org,12\n", encoding="utf-8")
    doc = shown_json(folder, "ANN@example.org")
    assert doc["held"] is True
    assert doc["key"] == "ann@example.org"
    assert doc["rows"] == [
        {
            "file": "subscribers/events.csv",
            "line": 2,
            "columns": {"Email": "ann@example.org", "Seat": "12"},
        },
        {
            "file": "subscribers/members.csv",
            "line": 3,
            "columns": {
                "email": "Ann@Example.ORG",
                "name": "Ann Lee",
                "status": "unsubscribed",
                "city": "Kraków",
            },
        },
    ]
    code, out, _err = show(folder, "ann@example.org")
    assert code == 0
    assert "  subscribers/members.csv:3\n    email: Ann@Example.ORG\n    name: Ann Lee\n" in out
    assert "    city: Kraków\n" in out
    assert "bob@example.org" not in out


def test_show_gives_history_consent_soft_bounces_and_the_suppression_reason(
    folder: Path,
) -> None:
    """The people file's records of the address and its suppression entry, with the reason."""
    add(folder, "ann@example.org", source="cli")
    CsvStore(folder).set_status("Ann@example.org", "complained", source="feedback loop")
    CsvStore(folder).suppress("ann@example.org", "complained")
    with People(folder) as people:
        people.record_consent(
            "ann@example.org",
            list_name="subscribers.csv",
            source="web form",
            text="Yes, send me the newsletter",
            at="2026-01-01T00:00:00Z",
            confirmed_at="2026-01-01T00:05:00Z",
        )
        at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
        people.soft_bounce("ann@example.org", issue="2026-02", status="4.2.2", at=at)
    doc = shown_json(folder, "ann@example.org")
    assert [(e["list"], e["status"], e["source"]) for e in doc["history"]] == [
        ("subscribers.csv", "subscribed", "cli"),
        ("subscribers.csv", "complained", "feedback loop"),
    ]
    assert doc["consents"] == [
        {
            "list": "subscribers.csv",
            "at": "2026-01-01T00:00:00Z",
            "source": "web form",
            "text": "Yes, send me the newsletter",
            "confirmed_at": "2026-01-01T00:05:00Z",
        }
    ]
    assert doc["soft_bounces"] == [
        {"at": "2026-02-01T00:00:00Z", "issue": "2026-02", "status": "4.2.2"}
    ]
    assert doc["suppressed"] == {"reason": "complained"}
    out = show(folder, "ann@example.org")[1]
    assert "suppression file: an entry (a digest), reason: complained\n" in out
    assert (
        "  2026-01-01T00:00:00Z  subscribers.csv, by web form, confirmed 2026-01-01T00:05:00Z\n"
        in out
    )
    assert "    shown: Yes, send me the newsletter\n" in out
    assert "  2026-02-01T00:00:00Z  4.2.2 (issue 2026-02)\n" in out


def test_an_address_held_nowhere_is_an_answer_exit_0(folder: Path) -> None:
    """Nothing held: it says so (text) or `held: false` with every list empty (JSON); exit 0;
    looking creates no file."""
    add(folder, "bob@example.org")
    code, out, err = show(folder, "nobody@example.org")
    assert (code, err) == (0, "")
    assert out.startswith("nothing is held on nobody@example.org: ")
    doc = shown_json(folder, "nobody@example.org")
    assert doc == {
        "email": "nobody@example.org",
        "key": "nobody@example.org",
        "held": False,
        "rows": [],
        "suppressed": None,
        "history": [],
        "consents": [],
        "soft_bounces": [],
        "signups": [],
        "sends": [],
    }
    empty = folder / "empty"
    empty.mkdir()
    (empty / "newsletter.toml").write_text((folder / "newsletter.toml").read_text())
    assert show(empty, "nobody@example.org")[0] == 0
    assert sorted(p.name for p in empty.iterdir()) == ["newsletter.toml"]


def test_show_gives_the_outcome_of_every_send(tmp_path: Path) -> None:
    """A real send to the outbox, interrupted (--limit), then resumed: the person's outcome in
    each ledger as {issue, destination, outcome, at, ledger}."""
    folder = make_folder(tmp_path, 3)
    write_list(folder, "news", ["reader0@example.org", "Reader1@Example.org", "r2@example.org"])
    assert run(folder, "send", ISSUE, "--yes", "--limit", "1").returncode == 3
    done = run(folder, "subscribers", "show", "reader1@example.org", "--json")
    assert done.returncode == 0, done.stderr
    VALIDATOR.validate(doc := json.loads(done.stdout))
    sends = doc["sends"]
    ledger = ".newsletter/sends/2021-09-cohes3ion@outbox-" in sends[0]["ledger"]
    assert ledger and sends[0]["at"] is None
    assert [(s["issue"], s["destination"], s["outcome"]) for s in sends] == [
        ("2021-09-cohes3ion", "outbox", "pending")
    ]
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    doc = json.loads(run(folder, "subscribers", "show", "READER1@example.org", "--json").stdout)
    assert [s["outcome"] for s in doc["sends"]] == ["sent"]
    assert doc["sends"][0]["at"].endswith("Z")
    text = run(folder, "subscribers", "show", "reader1@example.org").stdout
    assert "sends: 1\n  2021-09-cohes3ion to outbox: sent 20" in text


def test_the_outcome_is_one_index_probe_not_a_read_of_the_ledger(tmp_path: Path) -> None:
    """The lookup searches the address hash's index: it scales with the number of sends, not
    the size of each."""
    path = ledger_path(tmp_path, "a", "outbox")
    ledger = Ledger(path)
    ledger.add(Entry(f"p{i}@example.org", f"p{i}@example.org") for i in range(100))
    ledger.close()
    with sqlite3.connect(path) as db:
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {_OUTCOME}", (1,)))
    assert "USING INDEX recipients_khash (khash=?)" in plan, plan


def test_the_api_gives_the_same_as_the_command(folder: Path) -> None:
    """`Newsletter.person(email).to_json()` is what `show --json` prints."""
    add(folder, "ann@example.org", name="Ann")
    person = Newsletter.open(folder).person("Ann@example.org")
    assert person.held
    assert [row.columns["name"] for row in person.rows] == ["Ann"]
    assert person.to_json() == shown_json(folder, "Ann@example.org")


def test_a_control_character_in_a_cell_stays_on_its_line(folder: Path) -> None:
    """A quoted line break or an escape sequence in a cell is shown escaped in the text."""
    lists = folder / "subscribers"
    lists.mkdir()
    (lists / "a.csv").write_text(
        'email,note\nann@example.org,"two\nlines \x1b[31mred"\n', encoding="utf-8"
    )
    out = show(folder, "ann@example.org")[1]
    assert "    note: two\\nlines \\x1b[31mred\n" in out
    assert "\x1b" not in out


def test_show_without_an_address_is_an_error(folder: Path) -> None:
    """A blank address is refused (exit 1, one line) rather than matched against empty cells."""
    code, out, err = show(folder, " ")
    assert (code, out) == (1, "")
    assert err == "error: ' ': no address given\n"


def test_any_spelling_of_an_international_address_finds_the_same_person(folder: Path) -> None:
    """Decomposed accents, another case and the punycode domain all find the row written in
    Unicode NFC (addresses compare as `address_key`)."""
    add(folder, "żaneta@bücher.example.org", name="Żaneta")
    spelling = "Z\u0307aneta@XN--BCHER-KVA.example.org"  # Ż decomposed, domain in punycode
    doc = shown_json(folder, spelling)
    assert [row["columns"]["email"] for row in doc["rows"]] == ["żaneta@bücher.example.org"]
    assert [event["status"] for event in doc["history"]] == ["subscribed"]
    assert doc["key"] == "żaneta@bücher.example.org"


def test_show_gives_sign_up_requests_confirmed_or_not(tmp_path: Path) -> None:
    """A sign-up from the web form holds the address, the name typed and the sentence shown,
    before and after it is confirmed: a data subject access request must see it."""
    from tests.signup_helpers import app_for, call, folder_with, link_for, sign_up

    root = folder_with(tmp_path)
    app, _config = app_for(root)
    assert sign_up(app, "Wanda@example.org", name="Wanda W").status_code == 200
    asked = shown_json(root, "wanda@example.org")
    assert [(s["name"], s["confirmed_at"]) for s in asked["signups"]] == [("Wanda W", "")]
    assert asked["signups"][0]["consent"]
    code, out, _err = show(root, "wanda@example.org")
    assert code == 0 and "sign-up requests: 1" in out and "as Wanda W" in out
    assert call(app, "POST", link_for(root, "Wanda@example.org")).status_code == 200
    confirmed = shown_json(root, "wanda@example.org")["signups"]
    assert confirmed[0]["confirmed_at"] >= confirmed[0]["asked_at"] != ""


def test_show_gives_a_journaled_unsubscribe_not_folded_yet_in_the_history(folder: Path) -> None:
    """An unsubscribe `serve` journaled (its fold, which writes the history, still to come)
    is in the history with its source, as the row already shows it; once, after the fold."""
    add(folder, "ann@example.org", source="cli")
    path = folder / "subscribers" / "subscribers.csv"
    when = "2026-03-01T00:00:00Z"
    append(path, [StatusEdit("ann@example.org", "unsubscribed", when, source="unsubscribe link")])
    event = {"list": "subscribers.csv", "status": "unsubscribed", "at": when}
    event["source"] = "unsubscribe link"
    doc = shown_json(folder, "Ann@example.org")
    assert doc["rows"][0]["columns"]["status"] == "unsubscribed"
    assert doc["history"][1:] == [event]
    out = show(folder, "ann@example.org")[1]
    assert f"  {when}  unsubscribed in subscribers.csv (by unsubscribe link)\n" in out
    fold(path)
    assert shown_json(folder, "ann@example.org")["history"][1:] == [event]


def test_show_gives_the_bounces_and_complaints_a_send_recorded(folder: Path) -> None:
    """What came back from the bounce mailbox for a send (a ledger's returns) is shown with
    that send: kind, status and time."""
    path = ledger_path(folder / ".newsletter", "2026-03", "outbox")
    ledger = Ledger(path)
    ledger.add([Entry("ann@example.org", "ann@example.org")])
    ledger.start(1)
    ledger.sent(1, 250, "ok")
    at = dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp()
    ledger.record_return(1, "hard", "5.1.1", at)
    ledger.record_return(1, "complaint", "", at + 60)
    ledger.close()
    doc = shown_json(folder, "ann@example.org")
    assert doc["sends"][0]["returns"] == [
        {"kind": "hard", "status": "5.1.1", "at": "2026-03-02T00:00:00Z"},
        {"kind": "complaint", "status": "", "at": "2026-03-02T00:01:00Z"},
    ]
    out = show(folder, "ann@example.org")[1]
    assert "    then a hard bounce 5.1.1 2026-03-02T00:00:00Z\n" in out
    assert "    then a complaint 2026-03-02T00:01:00Z\n" in out


def test_a_control_character_in_a_list_name_stays_on_its_line(folder: Path) -> None:
    """A list file named with a line break or an escape sequence is shown escaped, in its
    row and in the history."""
    lists = folder / "subscribers"
    lists.mkdir()
    name = "a\nb\x1b[2J.csv"
    add(folder, "ann@example.org", list_path=lists / name)
    out = show(folder, "ann@example.org")[1]
    assert "  subscribers/a\\nb\\x1b[2J.csv:2\n" in out
    assert " subscribed in a\\nb\\x1b[2J.csv (by cli)\n" in out
    assert "\x1b" not in out


def test_a_list_that_cannot_be_read_gives_no_answer_but_its_file_and_line(folder: Path) -> None:
    """A broken list is not skipped (the answer would look complete without its rows): the
    error names the file and line, nothing is printed on stdout, exit 1."""
    add(folder, "ann@example.org")
    broken = folder / "subscribers" / "old.csv"
    broken.write_text('email,name\nann@example.org,"Ann\nbob@example.org,Bob\n', encoding="utf-8")
    for args in (["ann@example.org"], ["ann@example.org", "--json"]):
        code, out, err = show(folder, *args)
        assert (code, out) == (1, "")
        assert f"{broken}:2: a quoted field opens here and is never closed" in err


def test_show_of_a_name_and_address_held_nowhere_is_refused(folder: Path) -> None:
    """`Ann <ann@…>` pasted from a request's From line matches nothing: not "nothing is
    held" (which a data subject would be told), but an error naming the address to give."""
    add(folder, "ann@example.org")
    code, out, err = show(folder, "Ann Lee <ann@example.org>")
    assert (code, out) == (1, "")
    assert err == (
        "error: 'Ann Lee <ann@example.org>': not an address, and nothing is held on it: "
        "give the address alone, as in ann@example.org\n"
    )
    lists = folder / "subscribers"
    (lists / "odd.csv").write_text("email\nnot an address\n", encoding="utf-8")
    assert shown_json(folder, "not an address")["held"] is True  # a malformed row is someone's

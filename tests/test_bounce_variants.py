"""`newsletter bounces` on the variants a real bounce mailbox holds: encoded and nested reports,
feedback reports that are no complaint, forwarded reports, odd Maildir entries."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

from newsletter.bounces import read_report
from tests.bounce_helpers import DESTINATION, READERS, fixture, maildir, sent_ledger, statuses
from tests.compose_helpers import run
from tests.send_helpers import ISSUE, NEWSLETTER
from tests.test_bounces import bounces, by_message, folder
from tests.waits import HANG

__all__ = ["folder"]  # the fixture, used by name

_FIELDS = re.compile(rb"(Content-Type: message/delivery-status\n)\n(.*?)\n(--)", re.DOTALL)


def _encoded_fields(name: str) -> bytes:
    """The fixture with its message/delivery-status part sent base64-encoded."""

    def encode(found: re.Match[bytes]) -> bytes:
        body = base64.encodebytes(found[2] + b"\n")
        return found[1] + b"Content-Transfer-Encoding: base64\n\n" + body + b"\n" + found[3]

    text, count = _FIELDS.subn(encode, fixture(name), count=1)
    assert count == 1
    return text


def test_a_base64_encoded_delivery_status_is_read() -> None:
    """A DSN whose delivery-status part is base64 (some MTAs encode every part) names its
    recipient and status like a plain one."""
    report = read_report(_encoded_fields("postfix-refused.eml"))
    assert report.problem == ""
    assert [(r.email, r.action, r.status) for r in report.recipients] == [
        ("someone@refuse.test", "failed", "5.1.1")
    ]


def test_a_report_returned_inside_a_bounce_is_not_read_as_its_own() -> None:
    """A DSN whose returned original is itself a DSN (a bounce of a bounce) is about its own
    recipient only, not the one of the report it returned."""
    outer = fixture("postfix-unknown-user.eml")
    head = outer.split(b"Content-Type: message/rfc822\n")[0]
    nested = (
        head
        + b"Content-Type: message/rfc822\n\n"
        + fixture("postfix-refused.eml")
        + b"\n--9798A25804C.1796016717/mx.local.test--\n"
    )
    report = read_report(nested)
    assert [r.email for r in report.recipients] == ["nosuchuser@local.test"]


def test_feedback_that_is_no_complaint_marks_nobody(folder: Path, tmp_path: Path) -> None:
    """ARF reports of Feedback-Type not-spam or auth-failure (a DMARC failure report) are not a
    reader's complaint: nobody is marked, nothing is recorded; fraud is a complaint."""
    arf = fixture("arf-complaint.eml")
    texts = {
        kind: arf.replace(b"Feedback-Type: abuse", b"Feedback-Type: " + kind.encode())
        for kind in ("not-spam", "auth-failure")
    }
    found = by_message(bounces("--maildir", maildir(tmp_path, [], texts)))
    assert {m["result"] for m in found.values()} == {"not a bounce"}
    assert statuses(folder)["reader@yahoo.com"] == "subscribed"
    fraud = {"fraud": arf.replace(b"Feedback-Type: abuse", b"Feedback-Type: Fraud")}
    [outcome] = bounces("--maildir", maildir(tmp_path, [], fraud))["messages"]
    assert (outcome["result"], outcome["action"]) == ("complaint", "marked complained")


def test_a_forwarded_report_is_read_by_its_return_path(folder: Path, tmp_path: Path) -> None:
    """A DSN forwarded to the bounce mailbox as an attachment is read as the DSN it holds: its
    VERP address decides (the reader is in two sends), with the DSN's own status."""
    sent_ledger(folder, "2021-10-other", DESTINATION, READERS)
    forward = (
        b"From: Owner <owner@bounce.test>\nTo: bounces@bounce.test\n"
        b"Subject: Fwd: Delivery Status Notification (Failure)\n"
        b"Date: Tue, 01 Dec 2026 09:14:20 +0000\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="XX"\n\n--XX\nContent-Type: text/plain\n\n'
        b"This one landed in my inbox.\n--XX\nContent-Type: message/rfc822\n\n"
        + fixture("gmail-no-such-user.eml")
        + b"\n--XX--\n"
    )
    [outcome] = bounces("--maildir", maildir(tmp_path, [], {"fwd": forward}))["messages"]
    found = (outcome["email"], outcome["issue"], outcome["result"], outcome["status"])
    assert found == ("no.such.person@gmail.com", "2021-09-cohes3ion", "hard", "5.1.1")


def test_a_folder_in_new_is_passed_by(folder: Path, tmp_path: Path) -> None:
    """A folder (not a message) inside new/ does not stop the run: the bounces are applied."""
    box = maildir(tmp_path, ["postfix-refused.eml"])
    (box / "new" / "stray").mkdir()
    result = run("bounces", "--maildir", box)
    assert result.exit_code == 0, result.output
    assert statuses(folder)["someone@refuse.test"] == "bounced"
    assert (box / "new" / "stray").is_dir()


def _subscribed_again(folder: Path, email: str, at: str) -> None:
    """The reader's row says they subscribed (again) at `at`."""
    path = folder / "subscribers" / "news.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [f"{line},{at if line.startswith(email + ',') else ''}" for line in lines[1:]]
    path.write_text("\n".join([lines[0] + ",subscribed_at", *rows]) + "\n", encoding="utf-8")


def test_a_bounce_older_than_a_new_subscription_leaves_the_reader_alone(
    folder: Path, tmp_path: Path
) -> None:
    """A bounce dated before the reader subscribed again (a later subscribed_at) does not mark
    them, as with a refusal during a send; the send's ledger still records it."""
    _subscribed_again(folder, "someone@refuse.test", "2026-11-30T05:45:00Z")  # bounce: 05:31:57
    [outcome] = bounces("--maildir", maildir(tmp_path, ["postfix-refused.eml"]))["messages"]
    assert outcome["result"] == "hard" and "subscribed again since" in outcome["action"]
    assert statuses(folder)["someone@refuse.test"] == "subscribed"
    report = json.loads(run("status", ISSUE, "--json").stdout)
    assert report["counts"]["bounced"] == 1


def test_a_soft_bounce_older_than_a_new_subscription_is_not_counted(
    folder: Path, tmp_path: Path
) -> None:
    """A soft bounce dated before the reader subscribed again does not count toward the limit."""
    _subscribed_again(folder, "full@tempfail.test", "2026-11-30T05:45:00Z")  # bounce: 05:31:57
    box = maildir(tmp_path, ["postfix-soft.eml"])
    [outcome] = bounces("--maildir", box, "--dry-run")["messages"]
    assert "subscribed again since" in outcome["action"]
    [outcome] = bounces("--maildir", box)["messages"]
    assert "subscribed again since" in outcome["action"]
    from newsletter.subscribers.people import People

    with People(folder) as people:
        assert people.soft_bounces("full@tempfail.test") == []


def test_an_empty_message_is_one_line_no_traceback(folder: Path, tmp_path: Path) -> None:
    """A zero-byte file in the Maildir (a message without From, which a detector of flufl.bounce
    trips on): one `malformed` line in a real process, no traceback on stderr, exit 0."""
    box = maildir(tmp_path, ["postfix-refused.eml"], {"zero": b""})
    result = subprocess.run(
        [*NEWSLETTER, "bounces", "--maildir", str(box)],
        capture_output=True, text=True, timeout=HANG, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "new/zero: malformed" in result.stdout
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr, result.stderr


def test_a_feedback_type_with_a_comment_is_a_complaint() -> None:
    """`Feedback-Type: abuse (spam)`: a comment after the type (RFC 5322 CFWS) changes nothing."""
    arf = fixture("arf-complaint.eml").replace(b"abuse\n", b"Abuse (spam)\n", 1)
    assert [r.action for r in read_report(arf).recipients] == ["complaint"]


def test_a_success_notice_has_a_documented_result(folder: Path, tmp_path: Path) -> None:
    """DSNs with Action relayed, expanded or delivered (a relay without DSNs, an alias, a
    NOTIFY=SUCCESS) are `delivered` (docs/api.md lists every result); nothing changes."""
    ok = fixture("postfix-refused.eml").replace(b"Status: 5.1.1", b"Status: 2.0.0")
    texts = {a: ok.replace(b"Action: failed", b"Action: " + a.encode()) for a in
             ("relayed", "expanded", "delivered")}  # fmt: skip
    found = by_message(bounces("--maildir", maildir(tmp_path, [], texts)))
    assert {(m["result"], m["action"]) for m in found.values()} == {
        ("delivered", f"nothing to do ({action})") for action in texts
    }
    assert statuses(folder)["someone@refuse.test"] == "subscribed"


def test_a_bounce_a_broken_list_stopped_is_applied_on_the_rerun(
    folder: Path, tmp_path: Path
) -> None:
    """A list the store cannot read stops the run with an error naming it; once it is fixed,
    the rerun marks the reader (the ledger had recorded the bounce; that is no reason to skip
    the lists)."""
    broken = folder / "subscribers" / "other.csv"
    broken.write_text("name,status\nx,subscribed\n", encoding="utf-8")
    box = maildir(tmp_path, ["postfix-refused.eml"])
    first = run("bounces", "--maildir", box)
    assert first.exit_code == 1 and "other.csv:1: no 'email' column" in first.output
    broken.unlink()
    [outcome] = bounces("--maildir", box)["messages"]
    assert outcome["action"] == "already recorded: marked bounced"
    assert statuses(folder)["someone@refuse.test"] == "bounced"


def test_a_second_copy_of_a_complaint_leaves_a_later_subscription_alone(
    folder: Path, tmp_path: Path
) -> None:
    """A complaint read again (a feedback loop sent it twice) after the reader subscribed again
    changes nothing."""
    bounces("--maildir", maildir(tmp_path, ["arf-complaint.eml"]))
    assert statuses(folder)["reader@yahoo.com"] == "complained"
    path = folder / "subscribers" / "news.csv"
    path.write_text(path.read_text().replace("Reader 6,complained", "Reader 6,subscribed"))
    _subscribed_again(folder, "reader@yahoo.com", "2026-12-02T00:00:00Z")  # report: 12-01
    [outcome] = bounces("--maildir", maildir(tmp_path, [], {"copy": fixture("arf-complaint.eml")}))[
        "messages"
    ]
    assert outcome["action"] == "already recorded"
    assert statuses(folder)["reader@yahoo.com"] == "subscribed"

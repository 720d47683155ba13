"""Resume keeps its promises: bounces applied, the selection kept, a plan that writes nothing."""

from __future__ import annotations

import json
import mailbox
import os
import pty
import re
import sqlite3
import subprocess
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.tokens import verify_token
from tests.send_helpers import ISSUE, command, env_for, make_folder, run, smtp_env, write_list
from tests.smtpd import SmtpServer, no_such_user

# ---------------------------------------------------------------------------------------------
# A bounce is never forgotten


def _bounced_then_killed(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> tuple[Path, dict[str, str], str]:
    """A real send where reader1 gets 550 5.1.1 and reader2 is left for later, then the list
    as a kill right after the refusal leaves it: the ledger says failed, the list subscribed."""
    server = make_smtp_server()
    server.add_fault(no_such_user(), recipient="reader1@example.org")
    folder = make_folder(tmp_path, 3)
    news = folder / "subscribers/news.csv"
    before = news.read_text()
    env = smtp_env(server.port)
    done = run(folder, "send", ISSUE, "--yes", "--limit", "2", env=env)
    assert done.returncode == 3, done.stderr
    assert "reader1@example.org,Reader 1,bounced" in news.read_text()
    news.write_text(before)
    return folder, env, before


def test_status_applies_a_bounce_the_list_does_not_show(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """status marks a 5.1.1 refusal of the ledger bounced in the list, once; again: no change."""
    folder, env, _before = _bounced_then_killed(make_smtp_server, tmp_path)
    news = folder / "subscribers/news.csv"
    first = run(folder, "status", ISSUE, env=env)
    assert first.returncode == 0, first.stderr
    assert "reader1@example.org: marked bounced in" in first.stderr
    assert "reader1@example.org,Reader 1,bounced" in news.read_text()
    after = news.read_bytes()
    again = run(folder, "status", ISSUE, env=env)
    assert "marked bounced" not in again.stderr
    assert news.read_bytes() == after


def test_resume_applies_a_bounce_and_never_mails_it(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """The resume marks the refused reader bounced before it sends the rest; twice: no change."""
    folder, env, _before = _bounced_then_killed(make_smtp_server, tmp_path)
    news = folder / "subscribers/news.csv"
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "reader1@example.org: marked bounced in" in done.stderr
    assert "reader1@example.org,Reader 1,bounced" in news.read_text()
    after = news.read_bytes()
    again = run(folder, "send", ISSUE, "--yes", env=env)
    assert again.returncode == 0, again.stderr
    assert "marked bounced" not in again.stderr
    assert news.read_bytes() == after


def test_the_next_issue_applies_a_bounce_an_earlier_send_left(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Never resumed nor asked about, the first issue's 5.1.1 refusal still counts: the next
    issue's send marks the reader bounced before it reads the lists, and never tries them."""
    folder, env, _before = _bounced_then_killed(make_smtp_server, tmp_path)
    text = (folder / ISSUE).read_text().replace('subject = "', 'subject = "Next: ', 1)
    (folder / "issues/2021-10-next.toml").write_text(text)
    done = run(folder, "send", "issues/2021-10-next.toml", "--yes", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert "reader1@example.org: marked bounced in" in done.stderr
    assert "reader1@example.org,Reader 1,bounced" in (folder / "subscribers/news.csv").read_text()
    report = json.loads(done.stdout)
    assert report["failed"] == [] and report["counts"]["sent"] == 2


def test_status_with_an_unreadable_list_still_records_the_bounce(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Another list cannot be read: status still reports, marks the readable list, puts the
    address in the suppression file (the broken list may hold it) and names that list; once."""
    folder, env, _before = _bounced_then_killed(make_smtp_server, tmp_path)
    broken = folder / "subscribers/other.csv"
    broken.write_bytes(b'email,name\r\nx@example.org,"Stray\r\n')
    first = run(folder, "status", ISSUE, "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["failed"] == 1
    assert f"{broken}:2: a quoted field opens here" in first.stderr
    assert "reader1@example.org,Reader 1,bounced" in (folder / "subscribers/news.csv").read_text()
    suppressed = (folder / ".newsletter/suppressed").read_text()
    assert " bounced" in suppressed
    again = run(folder, "status", ISSUE, env=env)
    assert again.returncode == 0, again.stderr
    assert "marked bounced" not in again.stderr
    assert (folder / ".newsletter/suppressed").read_text() == suppressed
    assert broken.read_bytes() == b'email,name\r\nx@example.org,"Stray\r\n'


def test_a_send_stopped_by_a_changed_issue_still_applies_the_bounce(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """The issue changed since: send stops to ask (exit 1), the bounce is applied all the same."""
    folder, env, _before = _bounced_then_killed(make_smtp_server, tmp_path)
    issue = folder / ISSUE
    issue.write_text(issue.read_text().replace('subject = "', 'subject = "Corrected: ', 1))
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 1
    assert "--on-change continue" in done.stderr
    assert "reader1@example.org,Reader 1,bounced" in (folder / "subscribers/news.csv").read_text()


def test_bounce_of_an_address_in_no_list_goes_to_the_suppression_file(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Refused, then its row vanished (edited out by hand): suppressed once, not twice."""
    folder, env, before = _bounced_then_killed(make_smtp_server, tmp_path)
    news = folder / "subscribers/news.csv"
    news.write_text("".join(x for x in before.splitlines(True) if "reader1@" not in x))
    first = run(folder, "status", ISSUE, env=env)
    assert "reader1@example.org: marked bounced in the suppression file" in first.stderr
    suppressed = (folder / ".newsletter/suppressed").read_bytes()
    again = run(folder, "status", ISSUE, env=env)
    assert "marked bounced" not in again.stderr
    assert (folder / ".newsletter/suppressed").read_bytes() == suppressed


def test_a_reader_who_subscribed_again_after_the_bounce_is_left_alone(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """subscribed_at after the refusal: they came back, status does not bounce them again."""
    folder, env, before = _bounced_then_killed(make_smtp_server, tmp_path)
    news = folder / "subscribers/news.csv"
    lines = before.splitlines(True)
    lines[0] = "email,name,status,subscribed_at\n"
    rows = [
        line.rstrip("\n") + (",2099-01-01T00:00:00Z\n" if "reader1@" in line else ",2000-01-01\n")
        for line in lines[1:]
    ]
    news.write_text(lines[0] + "".join(rows))
    after = news.read_bytes()
    done = run(folder, "status", ISSUE, env=env)
    assert done.returncode == 0, done.stderr
    assert "marked bounced" not in done.stderr
    assert news.read_bytes() == after


# ---------------------------------------------------------------------------------------------
# A plan writes nothing


def _outbox(folder: Path) -> list[str]:
    return sorted(str(m["To"]) for m in mailbox.Maildir(folder / "outbox", create=False))


def test_a_plan_creates_no_ledger_and_status_shows_no_send(tmp_path: Path) -> None:
    """send without --yes: the plan is shown, no sends/ folder appears, status: nothing sent."""
    folder = make_folder(tmp_path, 3)
    done = run(folder, "send", ISSUE)
    assert done.returncode == 5, done.stderr
    assert "recipients: 3 after dedupe and suppression" in done.stderr
    assert not (folder / ".newsletter/sends").exists()
    status = run(folder, "status", ISSUE)
    assert status.returncode == 1
    assert "nothing has been sent" in status.stderr


def test_a_plan_on_a_partial_send_changes_nothing(tmp_path: Path) -> None:
    """A plan with --add-new (not sent) adds nobody: the plain resume mails the snapshot only."""
    folder = make_folder(tmp_path, 3)
    assert run(folder, "send", ISSUE, "--yes", "--limit", "1").returncode == 3
    ledgers = {p: p.read_bytes() for p in (folder / ".newsletter/sends").glob("*.sqlite")}
    news = folder / "subscribers/news.csv"
    news.write_text(news.read_text() + "late@example.org,Late,subscribed\n")
    plan = run(folder, "send", ISSUE, "--add-new")
    assert plan.returncode == 5, plan.stderr
    assert "--add-new: adds 1 not in the snapshot" in plan.stderr
    assert {p: p.read_bytes() for p in ledgers} == ledgers
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    assert "late@example.org" not in _outbox(folder)
    assert len(_outbox(folder)) == 3


def test_restart_is_only_planned_until_confirmed(tmp_path: Path) -> None:
    """--on-change restart without --yes keeps the old ledger in place; with --yes it is
    kept aside and everyone gets the new version."""
    folder = make_folder(tmp_path, 2)
    assert run(folder, "send", ISSUE, "--yes", "--limit", "1").returncode == 3
    issue = folder / ISSUE
    issue.write_text(issue.read_text().replace('subject = "', 'subject = "Corrected: ', 1))
    sends = folder / ".newsletter/sends"
    before = sorted(p.name for p in sends.iterdir())
    plan = run(folder, "send", ISSUE, "--on-change", "restart")
    assert plan.returncode == 5, plan.stderr
    assert sorted(p.name for p in sends.iterdir()) == before
    done = run(folder, "send", ISSUE, "--yes", "--on-change", "restart")
    assert done.returncode == 0, done.stderr
    assert len(list(sends.glob("*.replaced-*"))) == 1
    assert len(_outbox(folder)) == 3


@pytest.mark.parametrize("yes", [[], ["--yes"]])
def test_a_tag_nobody_has_is_an_error(tmp_path: Path, yes: list[str]) -> None:
    """--tag that no subscribed reader has: exit 1 naming the tag, in plan and with --yes."""
    folder = make_folder(tmp_path, 2)
    done = run(folder, "send", ISSUE, "--tag", "Nosuch", *yes)
    assert done.returncode == 1
    assert (
        "error: nobody to send to: no subscribed reader of subscribers/news.csv has tag "
        "'nosuch' (left out: 2 tag)"
    ) in done.stderr
    assert not (folder / ".newsletter/sends").exists()


@pytest.mark.parametrize("yes", [[], ["--yes"]])
def test_a_list_without_subscribed_readers_is_an_error(tmp_path: Path, yes: list[str]) -> None:
    """--list b where nobody is subscribed: exit 1 saying so, in plan and with --yes."""
    folder = make_folder(tmp_path, 2)
    write_list(folder, "b", ["gone@example.org", "left@example.org"], status="unsubscribed")
    done = run(folder, "send", ISSUE, "--list", "b", *yes)
    assert done.returncode == 1
    assert (
        "error: nobody to send to: subscribers/b.csv has no subscribed reader (2 unsubscribed)"
    ) in done.stderr
    assert not (folder / ".newsletter/sends").exists()


def test_no_list_at_all_is_an_error(tmp_path: Path) -> None:
    """No list in subscribers/: exit 1 saying there is no list."""
    folder = make_folder(tmp_path, 0)
    (folder / "subscribers/news.csv").unlink()
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 1
    assert "nobody to send to: no list to send to" in done.stderr


# ---------------------------------------------------------------------------------------------
# A resume never ignores what you asked


def _two_lists(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path, 3, name="a")
    write_list(folder, "b", ["b0@example.org", "b1@example.org"])
    return folder


def test_a_resume_with_another_list_is_refused(tmp_path: Path) -> None:
    """--list a --limit 1, then --list b: exit 1 naming the snapshot's lists and the ways on;
    nobody more is mailed."""
    folder = _two_lists(tmp_path)
    assert run(folder, "send", ISSUE, "--list", "a", "--limit", "1", "--yes").returncode == 3
    done = run(folder, "send", ISSUE, "--list", "b", "--yes")
    assert done.returncode == 1, done.stderr
    assert (
        "this send was started with list(s) subscribers/a.csv and no tag filter; this command "
        "asks for list(s) subscribers/b.csv and no tag filter"
    ) in done.stderr
    assert f"`newsletter send {ISSUE} --list a.csv --yes`" in done.stderr
    assert f"`newsletter send {ISSUE} --list a.csv --list b.csv --add-new --yes`" in done.stderr
    assert len(_outbox(folder)) == 1


def test_a_resume_without_list_after_a_named_list_is_refused(tmp_path: Path) -> None:
    """No --list means every list: not the same as a first run with --list a. The command the
    first run printed (with --list) resumes it."""
    folder = _two_lists(tmp_path)
    first = run(folder, "send", ISSUE, "--list", "a", "--limit", "1", "--yes")
    assert f"resume with `newsletter send {ISSUE} --list a.csv --yes`" in first.stderr
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 1
    assert "this send was started with list(s) subscribers/a.csv and" in done.stderr
    assert "asks for every list (now: subscribers/a.csv, subscribers/b.csv)" in done.stderr
    assert run(folder, "send", ISSUE, "--list", "a.csv", "--yes").returncode == 0
    assert _outbox(folder) == [f"Reader {i} <reader{i}@example.org>" for i in range(3)]


def test_the_same_list_spelled_otherwise_resumes(tmp_path: Path) -> None:
    """`a`, `a.csv`, `subscribers/a.csv` and its absolute path are one list: the resume runs."""
    folder = _two_lists(tmp_path)
    assert run(folder, "send", ISSUE, "--list", "a", "--limit", "1", "--yes").returncode == 3
    again = run(folder, "send", ISSUE, "--list", "subscribers/a.csv", "--limit", "1", "--yes")
    assert again.returncode == 3, again.stderr
    absolute = str(folder / "subscribers/a.csv")
    assert run(folder, "send", ISSUE, "--list", absolute, "--yes").returncode == 0
    assert len(_outbox(folder)) == 3


def test_a_resume_with_other_tags_is_refused(tmp_path: Path) -> None:
    """--tag x, then no tag: refused naming the tag; --tag X (case folded) resumes."""
    folder = make_folder(tmp_path, 0)
    news = folder / "subscribers/news.csv"
    news.write_text(
        "email,name,status,tags\n"
        + "".join(f"t{i}@example.org,T {i},subscribed,x\n" for i in range(3))
        + "other@example.org,Other,subscribed,y\n"
    )
    assert run(folder, "send", ISSUE, "--tag", "x", "--limit", "1", "--yes").returncode == 3
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 1
    assert "started with every list (then: subscribers/news.csv) and tag(s) 'x';" in (done.stderr)
    assert f"`newsletter send {ISSUE} --tag x --yes`" in done.stderr
    assert run(folder, "send", ISSUE, "--tag", "X", "--yes").returncode == 0
    assert "other@example.org" not in " ".join(_outbox(folder))


def test_add_new_says_who_it_adds_and_why(tmp_path: Path) -> None:
    """--add-new widening the lists: each added reader with the reason, all then mailed."""
    folder = _two_lists(tmp_path)
    assert run(folder, "send", ISSUE, "--list", "a", "--limit", "1", "--yes").returncode == 3
    a = folder / "subscribers/a.csv"
    a.write_text(
        a.read_text().replace("email,name,status", "email,name,status,subscribed_at")
        + "new@example.org,New,subscribed,2099-01-01T00:00:00Z\n"
    )
    done = run(folder, "send", ISSUE, "--list", "a", "--list", "b", "--add-new", "--yes")
    assert done.returncode == 0, done.stderr
    assert "--add-new: adds 3 not in the snapshot" in done.stderr
    assert "  1 on subscribers/a.csv, subscribed since the first run: new@example.org" in (
        done.stderr
    )
    assert (
        "  2 on subscribers/b.csv, a list the snapshot did not include: "
        "b0@example.org, b1@example.org"
    ) in done.stderr
    assert len(_outbox(folder)) == 6
    assert run(folder, "send", ISSUE, "--list", "a", "--list", "b", "--yes").returncode == 0


def test_add_new_never_narrows(tmp_path: Path) -> None:
    """--add-new with a selection that leaves out part of the snapshot is refused too."""
    folder = _two_lists(tmp_path)
    run(folder, "send", ISSUE, "--list", "a", "--list", "b", "--limit", "1", "--yes")
    done = run(folder, "send", ISSUE, "--list", "b", "--add-new", "--yes")
    assert done.returncode == 1
    assert "started with list(s) subscribers/a.csv, subscribers/b.csv and" in done.stderr


def test_a_list_added_since_a_default_send_waits_for_add_new(tmp_path: Path) -> None:
    """No --list twice is the same default; a list created since is named by --add-new."""
    folder = make_folder(tmp_path, 2)
    assert run(folder, "send", ISSUE, "--limit", "1", "--yes").returncode == 3
    write_list(folder, "c", ["c0@example.org"])
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    assert len(_outbox(folder)) == 2
    done = run(folder, "send", ISSUE, "--add-new", "--yes")
    assert "  1 on subscribers/c.csv, a list the snapshot did not include: c0@example.org" in (
        done.stderr
    )
    assert len(_outbox(folder)) == 3


def test_a_ledger_without_a_recorded_selection_checks_its_lists(tmp_path: Path) -> None:
    """Ledgers of older versions hold the list paths only: those are checked, tags are not."""
    folder = _two_lists(tmp_path)
    assert run(folder, "send", ISSUE, "--list", "a", "--limit", "1", "--yes").returncode == 3
    (ledger,) = (folder / ".newsletter/sends").glob("*.sqlite")
    with sqlite3.connect(ledger) as db:
        db.execute("DELETE FROM meta WHERE name IN ('selection', 'snapshot_at')")
    db.close()
    refused = run(folder, "send", ISSUE, "--list", "b", "--yes")
    assert refused.returncode == 1
    assert "this send was started with" in refused.stderr
    done = run(folder, "send", ISSUE, "--list", "a", "--yes")
    assert done.returncode == 0, done.stderr
    assert "does not record its tags: not checked" in done.stderr
    assert len(_outbox(folder)) == 3


def _answer_prompt(
    folder: Path, answer: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`send` with a terminal on stdin (a pty), answering its prompt."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        return subprocess.run(
            command(folder, "send", ISSUE), cwd=folder, env=env_for(env), stdin=terminal,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(controller)
        os.close(terminal)


def test_a_plan_confirmed_at_the_prompt_is_sent_and_recorded(tmp_path: Path) -> None:
    """At a terminal, "n" writes nothing; "y" creates the ledger and sends the plan."""
    folder = make_folder(tmp_path, 3)
    declined = _answer_prompt(folder, "n")
    assert declined.returncode == 0, declined.stderr
    assert "not sent" in declined.stderr
    assert not (folder / ".newsletter/sends").exists()
    accepted = _answer_prompt(folder, "y")
    assert accepted.returncode == 0, accepted.stderr
    assert len(_outbox(folder)) == 3
    assert run(folder, "status", ISSUE).returncode == 0


def test_an_outbox_plan_without_a_secret_writes_no_secret(tmp_path: Path) -> None:
    """Without NEWSLETTER_SECRET an outbox plan (declined too) leaves no .newsletter/ at all;
    confirmed, .newsletter/secret is made then, and the links sent verify with it."""
    folder = make_folder(tmp_path, 2)
    unset = {"NEWSLETTER_SECRET": ""}
    plan = run(folder, "send", ISSUE, "--add-new", "--resend-unknown", env=unset)
    assert plan.returncode == 5, plan.stderr
    assert "recipients: 2" in plan.stderr
    assert _answer_prompt(folder, "n", unset).returncode == 0
    assert not (folder / ".newsletter").exists()
    accepted = _answer_prompt(folder, "y", unset)
    assert accepted.returncode == 0, accepted.stderr
    secret = (folder / ".newsletter/secret").read_bytes().strip()
    list_id = load_config(explicit=folder).list_id
    for message in mailbox.Maildir(folder / "outbox", create=False):
        [token] = re.findall(r"/unsubscribe/([\w-]+)>", str(message["List-Unsubscribe"]))
        assert verify_token(secret, list_id, token) == parseaddr(str(message["To"]))[1]


def test_a_named_list_that_gives_nobody_is_named_in_the_plan(tmp_path: Path) -> None:
    """--list a --list b where b gives nobody: the plan warns about b and sends to a."""
    folder = make_folder(tmp_path, 2, name="a")
    write_list(folder, "b", ["gone@example.org"], status="unsubscribed")
    done = run(folder, "send", ISSUE, "--list", "a", "--list", "b", "--yes")
    assert done.returncode == 0, done.stderr
    assert "warning: subscribers/b.csv: nobody from this list is in the plan" in done.stderr
    assert len(_outbox(folder)) == 2

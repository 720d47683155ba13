"""Resume keeps its promises: bounces applied, the selection kept, a plan that writes nothing."""

from __future__ import annotations

import mailbox
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.send_helpers import ISSUE, make_folder, run, smtp_env, write_list
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
    assert done.returncode == 0, done.stderr
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
    assert plan.returncode == 0, plan.stderr
    assert "added 1" in plan.stderr
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
    assert plan.returncode == 0, plan.stderr
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

"""`newsletter send` and `newsletter status` as a user runs them: plan, exit codes, JSON, resume."""

from __future__ import annotations

import json
import mailbox
import re
from collections.abc import Callable
from pathlib import Path

from newsletter.sends import SendLock
from tests.send_helpers import ISSUE, make_folder, run, smtp_env, write_list
from tests.smtpd import SmtpServer, drop_after_data, no_such_user

SCHEMA = {"issue", "destination", "counts", "unknown", "failed", "deferred", "duration_s",
          "messages_per_second", "workers"}  # fmt: skip


def outbox(folder: Path) -> list[str]:
    return sorted(str(m["To"]) for m in mailbox.Maildir(folder / "outbox", create=False))


def test_without_yes_and_terminal_shows_plan_sends_nothing(tmp_path: Path) -> None:
    """No --yes and no terminal: the plan is printed, exit 5 saying why, nothing is sent."""
    folder = make_folder(tmp_path, 3)
    done = run(folder, "send", ISSUE)
    assert done.returncode == 5, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "error: not sent: nothing was sent (no --yes, and no terminal to ask on); "
        "run again with --yes to send"
    )
    assert "recipients: 3 after dedupe and suppression" in done.stderr
    assert "to: outbox" in done.stderr
    assert not (folder / "outbox").exists() or outbox(folder) == []


def test_plan_estimates_duration_from_the_rate(tmp_path: Path) -> None:
    """With [smtp] rate set, the plan estimates the duration: 120 messages at 2/s is 60 s."""
    folder = make_folder(tmp_path, 120)
    done = run(folder, "send", ISSUE, env=smtp_env(25, NEWSLETTER_SMTP_RATE="2"))
    assert done.returncode == 5, done.stderr
    assert "sending: 120 message(s) of ~" in done.stderr
    assert "4 connection(s), 2/s" in done.stderr
    assert "estimated duration: 60 s" in done.stderr


def test_send_into_outbox_then_rerun_sends_nobody_again(tmp_path: Path) -> None:
    """--yes --json: one JSON object on stdout with every reader sent; a rerun mails no one."""
    folder = make_folder(tmp_path, 5)
    done = run(folder, "send", ISSUE, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == SCHEMA
    assert doc["counts"]["sent"] == 5
    assert len(outbox(folder)) == 5
    again = run(folder, "send", ISSUE, "--yes")
    assert again.returncode == 0
    assert "nothing to send" in again.stderr
    assert len(outbox(folder)) == 5


def test_limit_sends_a_first_batch_then_exit_3_and_resume(tmp_path: Path) -> None:
    """--limit 2 sends two and exits 3 with the resume command; the rerun sends the rest."""
    folder = make_folder(tmp_path, 6)
    first = run(folder, "send", ISSUE, "--yes", "--limit", "2")
    assert first.returncode == 3, first.stderr
    assert f"resume with `newsletter send {ISSUE} --yes`" in first.stderr
    assert len(outbox(folder)) == 2
    rest = run(folder, "send", ISSUE, "--yes")
    assert rest.returncode == 0, rest.stderr
    assert len(outbox(folder)) == 6


def test_second_concurrent_send_exits_1(tmp_path: Path) -> None:
    """While another process holds the issue's send lock, `send` exits 1 saying why."""
    folder = make_folder(tmp_path, 2)
    with SendLock(folder / ".newsletter", "2021-09-cohes3ion"):
        done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 1
    assert "another `newsletter send` of this issue is running" in done.stderr


def test_no_recipients_is_an_error(tmp_path: Path) -> None:
    """A list where nobody is subscribed: exit 1 saying so (a send of zero is a mistake)."""
    folder = make_folder(tmp_path, 0)
    write_list(folder, "news", ["gone@example.org"], status="unsubscribed")
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 1, done.stderr
    assert "subscribers/news.csv has no subscribed reader (1 unsubscribed)" in done.stderr


def test_status_json_matches_send_json(tmp_path: Path) -> None:
    """`status --json` prints the same schema and counts as the send's report."""
    folder = make_folder(tmp_path, 3)
    sent = json.loads(run(folder, "send", ISSUE, "--yes", "--json").stdout)
    status = run(folder, "status", ISSUE, "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout) == sent


def test_status_without_a_send_is_a_clear_error(tmp_path: Path) -> None:
    """status before any send: one line saying nothing was sent, non-zero."""
    folder = make_folder(tmp_path, 1)
    done = run(folder, "status", ISSUE)
    assert done.returncode == 1
    assert "nothing has been sent" in done.stderr
    assert "Traceback" not in done.stderr


def test_bounce_marks_subscriber_and_failed_csv(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """550 5.1.1: failed, the list row becomes bounced, and `status --failed --csv` exports it."""
    server = make_smtp_server()
    server.add_fault(no_such_user(), recipient="reader1@example.org")
    folder = make_folder(tmp_path, 3)
    done = run(folder, "send", ISSUE, "--yes", env=smtp_env(server.port))
    assert done.returncode == 0, done.stderr
    assert "reader1@example.org,Reader 1,bounced" in (folder / "subscribers/news.csv").read_text()
    csv = run(folder, "status", ISSUE, "--failed", "--csv", env=smtp_env(server.port)).stdout
    assert csv.splitlines() == [
        "email,code,reply",
        "reader1@example.org,550,5.1.1 No such user here",
    ]
    assert sorted(server.delivered()) == ["reader0@example.org", "reader2@example.org"]


def test_unknown_listed_and_resent_only_on_request(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Drop after data: unknown, listed by status, not resent; --resend-unknown sends it."""
    server = make_smtp_server()
    server.add_fault(drop_after_data(), recipient="reader0@example.org")
    folder = make_folder(tmp_path, 2)
    env = smtp_env(server.port)
    assert run(folder, "send", ISSUE, "--yes", env=env).returncode == 0
    assert "unknown: reader0@example.org" in run(folder, "status", ISSUE, env=env).stdout
    run(folder, "send", ISSUE, "--yes", env=env)
    assert server.delivered()["reader0@example.org"] == 1
    assert run(folder, "send", ISSUE, "--yes", "--resend-unknown", env=env).returncode == 0
    assert server.delivered()["reader0@example.org"] == 2


def test_outbox_send_does_not_count_for_smtp(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """After a send into the outbox, a send over SMTP still mails everyone (separate ledger)."""
    server = make_smtp_server()
    folder = make_folder(tmp_path, 2)
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    assert run(folder, "send", ISSUE, "--yes", env=smtp_env(server.port)).returncode == 0
    assert sorted(server.delivered()) == ["reader0@example.org", "reader1@example.org"]


def test_changed_issue_after_partial_send_asks_for_a_choice(tmp_path: Path) -> None:
    """Content changed after some were sent: exit 1 naming both choices; `continue` goes on."""
    folder = make_folder(tmp_path, 4)
    run(folder, "send", ISSUE, "--yes", "--limit", "1")
    issue = folder / ISSUE
    issue.write_text(issue.read_text().replace('subject = "', 'subject = "Corrected: ', 1))
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 1
    assert "--on-change continue" in done.stderr
    assert len(outbox(folder)) == 1
    assert run(folder, "send", ISSUE, "--yes", "--on-change", "continue").returncode == 0
    assert len(outbox(folder)) == 4


def test_results_on_stdout_so_they_can_be_piped(tmp_path: Path) -> None:
    """`status X | grep sent` finds the counts; the send's own report is on stdout too, and
    its plan and progress on stderr."""
    folder = make_folder(tmp_path, 4)
    done = run(folder, "send", ISSUE, "--yes")
    assert done.stdout.splitlines()[0] == "sent 4, failed 0, deferred 0, unknown 0, left out 0, " \
        "pending 0"  # fmt: skip
    assert "recipients: 4" in done.stderr and "recipients" not in done.stdout
    status = run(folder, "status", ISSUE)
    assert status.returncode == 0, status.stderr
    assert [line for line in status.stdout.splitlines() if "sent" in line] == [
        "sent 4, failed 0, deferred 0, unknown 0, left out 0, pending 0"
    ]


def test_with_json_stdout_is_the_one_object(tmp_path: Path) -> None:
    """send --json and status --json: stdout parses as one JSON object; the summary lines
    went to stderr."""
    folder = make_folder(tmp_path, 2)
    sent = run(folder, "send", ISSUE, "--yes", "--json")
    assert json.loads(sent.stdout)["counts"]["sent"] == 2, sent.stdout
    assert "sent 2, failed 0" in sent.stderr
    status = run(folder, "status", ISSUE, "--json")
    assert json.loads(status.stdout)["counts"]["sent"] == 2, status.stdout


def test_one_rate_figure_and_an_outbox_plan_without_connections(tmp_path: Path) -> None:
    """A send into the outbox: the plan names no connections and no rate; the run prints one
    rate figure (the report's), however many progress lines."""
    folder = make_folder(tmp_path, 30)
    done = run(folder, "send", ISSUE, "--yes", env={"NEWSLETTER_SMTP_RATE": "1000"})
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "connection" not in output
    assert "writing: 30 message(s) of ~" in done.stderr
    assert len(re.findall(r"/s\b", output)) == 1, output
    assert re.search(r"^last run: [\d.]+ s, \d+ messages/s$", done.stdout, re.M), done.stdout


def test_a_rerun_with_nothing_to_send_repeats_no_figures(tmp_path: Path) -> None:
    """A rerun that sends nothing says so and shows no duration or rate (they were the first
    run's)."""
    folder = make_folder(tmp_path, 3)
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    again = run(folder, "send", ISSUE, "--yes")
    assert again.returncode == 0, again.stderr
    assert "nothing to send" in again.stderr
    assert "last run" not in again.stdout + again.stderr
    assert not re.search(r"\d/s\b", again.stdout + again.stderr)
    assert "message(s) of" not in again.stderr


def test_status_failed_alone_prints_only_the_failures(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """`status --failed` (no --csv) prints the failures, one a line, not the whole report;
    `--csv` without --failed is a usage error, not the report in a file meant to be CSV."""
    server = make_smtp_server()
    server.add_fault(no_such_user(), recipient="reader1@example.org")
    folder = make_folder(tmp_path, 3)
    assert run(folder, "send", ISSUE, "--yes", env=smtp_env(server.port)).returncode == 0
    failed = run(folder, "status", ISSUE, "--failed", env=smtp_env(server.port))
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout.splitlines() == [
        "failed: reader1@example.org: 550 5.1.1 No such user here"
    ]
    csv = run(folder, "status", ISSUE, "--csv", env=smtp_env(server.port))
    assert csv.returncode == 2
    assert csv.stdout == ""
    assert "--csv needs --failed" in csv.stderr


def test_progress_line_is_not_repeated_at_the_end(tmp_path: Path) -> None:
    """Without a terminal, the last progress line is printed once, not again by the final
    event when nothing changed since."""
    folder = make_folder(tmp_path, 1)
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if " done: " in line]
    assert lines == ["1/1 done: 1 sent, 0 failed, 0 deferred, 0 unknown"]


def test_a_setting_the_server_refuses_pauses_at_once(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """security = starttls to a server that offers no STARTTLS: retrying cannot help, so the
    send pauses after the first refusal (no "trying again"), says what to fix, mails nobody,
    and the same command resumes once the setting is right."""
    folder = make_folder(tmp_path, 3)
    env = smtp_env(plain_smtp_server.port, NEWSLETTER_SMTP_SECURITY="starttls")
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 3, done.stderr
    said = done.stdout + done.stderr
    assert "trying again" not in said
    assert "does not offer STARTTLS" in said and "fix the setting" in said
    assert plain_smtp_server.messages == []
    fixed = run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port))
    assert fixed.returncode == 0, fixed.stderr
    assert len(plain_smtp_server.messages) == 3

"""The Python API (docs/api.md): the calls a cron job or a worker makes, against real parts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import Newsletter, NewsletterError, Plan, SendReport, Severity
from newsletter.api import Counts
from newsletter.cli import app
from newsletter.dispatch import Progress
from newsletter.errors import BadOption, InvalidInput, LedgerMissing, PlanUsed
from tests.report_schema import validate_report
from tests.send_helpers import REPO, make_folder, smtp_env, write_list
from tests.smtpd import SmtpServer, no_such_user
from tests.waits import HANG

ISSUE = "issues/2021-09-cohes3ion.toml"


def open_smtp(folder: Path, server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Newsletter:
    for name, value in smtp_env(server.port).items():
        monkeypatch.setenv(name, value)
    return Newsletter.open(folder)


def subject_of(data: bytes) -> str:
    return str(BytesParser(policy=policy.default).parsebytes(data)["Subject"])


def sends_folder(folder: Path) -> list[Path]:
    sends = folder / ".newsletter" / "sends"
    return sorted(p for p in sends.iterdir() if p.suffix == ".sqlite") if sends.is_dir() else []


def test_import_loads_no_cli_or_web_stack() -> None:
    """`import newsletter` (and the API's names) load neither Typer/Rich nor Starlette/uvicorn."""
    code = (
        "import newsletter, sys\n"
        "from newsletter import Newsletter, SendReport, Plan, Finding, Severity\n"
        "loaded = {'typer', 'rich', 'uvicorn', 'starlette'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_plan_then_send_over_smtp(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan shows the send and writes nothing; send(plan) mails each reader once."""
    folder = make_folder(tmp_path, 5)
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    with nl.plan(ISSUE) as plan:
        assert isinstance(plan, Plan)
        assert (plan.recipients, plan.to_send, plan.waiting) == (5, 5, 5)
        assert plan.destination == f"smtp://127.0.0.1:{plain_smtp_server.port}"
        assert plan.lists == (str(folder / "subscribers" / "news.csv"),)
        assert plan.message_size > 10_000 and plan.connections >= 1
        assert sends_folder(folder) == []  # a plan writes no ledger
        events: list[object] = []
        report = nl.send(plan, on_progress=events.append)
    assert isinstance(report, SendReport)
    assert report.counts == Counts(pending=0, sent=5, deferred=0, failed=0, unknown=0, left_out=0)
    assert report.remaining == 0 and report.stopped is None
    assert sorted(plain_smtp_server.delivered()) == [f"reader{i}@example.org" for i in range(5)]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].done == progress[-1].total == 5
    validate_report(report.to_json())


def test_refused_reader_is_a_failed_recipient(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5.1.1 refusal is in report.failed with its code, and the reader is marked bounced."""
    folder = make_folder(tmp_path, 3)
    plain_smtp_server.add_fault(no_such_user(), recipient="reader1@example.org")
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    with nl.plan(ISSUE) as plan:
        report = nl.send(plan)
    assert [(f.email, f.code) for f in report.failed] == [("reader1@example.org", 550)]
    assert report.counts.sent == 2 and report.counts.failed == 1
    assert "reader1@example.org,Reader 1,bounced" in (folder / "subscribers/news.csv").read_text()
    validate_report(report.to_json())


def test_to_json_is_what_the_cli_prints(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status().to_json() is the object `newsletter status --json` prints, key for key."""
    folder = make_folder(tmp_path, 4)
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    with nl.plan(ISSUE, limit=3) as plan:
        sent = nl.send(plan)
    assert sent.remaining == 1 and sent.counts.pending == 1
    monkeypatch.chdir(folder)
    printed = CliRunner().invoke(app, ["status", ISSUE, "--json"])
    assert printed.exit_code == 0, printed.output
    from_cli = json.loads(printed.stdout)
    assert nl.status(ISSUE).to_json() == from_cli
    assert list(sent.to_json()) == list(from_cli)
    validate_report(from_cli)


def test_status_without_a_send_raises_ledger_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing sent to this destination: LedgerMissing carries the path and destination."""
    folder = make_folder(tmp_path, 2)
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    with pytest.raises(LedgerMissing) as caught:
        Newsletter.open(folder).status(ISSUE)
    assert caught.value.destination == "outbox"
    assert caught.value.path.parent == folder / ".newsletter" / "sends"


def test_check_returns_findings_with_enum_severity(tmp_path: Path) -> None:
    """check() finds the blank links of the seed as errors, each with its file, line and key."""
    folder = make_folder(tmp_path, 1)
    issue = folder / "issues" / "blank.toml"
    text = (folder / ISSUE).read_text(encoding="utf-8")
    issue.write_text(re.sub(r'url = "https://[^"]*"', 'url = "#"', text, count=1), "utf-8")
    findings = Newsletter.open(folder).check(issue)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    assert errors, findings
    assert all(f.file == issue and f.line and f.key.endswith("url") for f in errors)
    assert all(isinstance(f.severity, Severity) for f in findings)


def test_plan_refuses_an_issue_with_errors(tmp_path: Path) -> None:
    """plan() raises InvalidInput with the findings; nothing is written."""
    folder = make_folder(tmp_path, 1)
    issue = folder / "issues" / "broken.toml"
    issue.write_text('title = "x"\n', encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        Newsletter.open(folder).plan(issue)
    assert caught.value.problems and all(p.file == issue for p in caught.value.problems)
    assert not (folder / ".newsletter").exists()


def test_a_closed_plan_can_be_made_again_and_not_sent_twice(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a plan releases its lock; a plan is sent at most once."""
    folder = make_folder(tmp_path, 2)
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    with nl.plan(ISSUE) as plan:
        nl.send(plan)
    with nl.plan(ISSUE) as again:  # the lock of the first was released
        assert again.nothing_to_send and again.done["sent"] == 2
        report = nl.send(again)
    assert report.counts.sent == 2 and len(plain_smtp_server.messages) == 2
    with pytest.raises(NewsletterError, match="already sent"):
        nl.send(again)


def test_test_copy_goes_to_the_outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """test() returns where the copy went; the outbox holds one [TEST] message for `to`."""
    folder = make_folder(tmp_path, 1)
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    result = Newsletter.open(folder).test(ISSUE, to="me@example.org")
    assert result.to == "me@example.org" and result.target.startswith("outbox ")
    (message,) = (folder / "outbox" / "new").iterdir()
    head = message.read_bytes().split(b"\r\n\r\n")[0]
    assert b"Subject: [TEST] " in head and b"To: me@example.org" in head


def test_notes_go_to_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a plan decides reaches notify and plan.notes (here: a list that gave nobody)."""
    folder = make_folder(tmp_path, 2)
    write_list(folder, "empty", ["gone@example.org"], status="unsubscribed")
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    heard: list[str] = []
    nl = Newsletter.open(folder, notify=heard.append)
    with nl.plan(ISSUE, lists=["news", "empty"]) as plan:
        assert plan.notes == tuple(heard)
    assert any("subscribers/empty.csv: nobody from this list" in n for n in heard), heard


# ---------------------------------------------------------------------------------------------
# The cron job of docs/api.md, run as written


def cron_script() -> str:
    """The first complete script in docs/api.md (the one with `if __name__ == "__main__":`)."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), re.S)
    return next(b for b in blocks if 'if __name__ == "__main__":' in b)


def run_cron(folder: Path, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "send_newest.py"
    script.write_text(cron_script(), encoding="utf-8")
    from tests.send_helpers import env_for

    return subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=env_for(env),
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )


def test_cron_example_sends_the_newest_issue_once(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """The documented cron job sends the newest issue; run again, it mails nobody twice."""
    folder = make_folder(tmp_path, 3)
    older = (folder / ISSUE).read_text(encoding="utf-8")
    older = re.sub(r"^date = .*$", "date = 2020-01-01", older, count=1, flags=re.M)
    (folder / "issues" / "2020-01-older.toml").write_text(older, encoding="utf-8")
    env = smtp_env(plain_smtp_server.port)
    first = run_cron(folder, tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert "sent 3, failed 0" in first.stdout
    subjects = {subject_of(m.data) for m in plain_smtp_server.messages}
    assert len(plain_smtp_server.messages) == 3 and len(subjects) == 1
    second = run_cron(folder, tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert len(plain_smtp_server.messages) == 3


def test_cron_example_fails_on_a_lint_error(tmp_path: Path, plain_smtp_server: SmtpServer) -> None:
    """A blank link in the newest issue: non-zero exit, the finding printed, nothing sent."""
    folder = make_folder(tmp_path, 2)
    path = folder / ISSUE
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r'url = "https://[^"]*"', 'url = "#"', text, count=1), "utf-8")
    done = run_cron(folder, tmp_path, smtp_env(plain_smtp_server.port))
    assert done.returncode == 1 and "error:" in done.stderr and "url" in done.stderr
    assert plain_smtp_server.messages == []


def test_cron_example_fails_when_a_reader_is_refused(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """A refused reader makes the run exit non-zero (cron mails the output)."""
    folder = make_folder(tmp_path, 2)
    plain_smtp_server.add_fault(no_such_user(), recipient="reader0@example.org")
    done = run_cron(folder, tmp_path, smtp_env(plain_smtp_server.port))
    assert done.returncode == 1, done.stderr
    assert "failed 1" in done.stdout and len(plain_smtp_server.messages) == 1


@pytest.mark.parametrize("how", ["closed", "with"])
def test_a_closed_plan_is_not_sent(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """send() of a plan already closed (twice, or by its with block) raises PlanUsed, mails
    nobody and writes no ledger."""
    folder = make_folder(tmp_path, 2)
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    if how == "closed":
        plan = nl.plan(ISSUE)
        plan.close()
        plan.close()  # closing twice is harmless
    else:
        with nl.plan(ISSUE) as plan:
            pass
    with pytest.raises(PlanUsed):
        nl.send(plan)
    assert plain_smtp_server.messages == [] and sends_folder(folder) == []


def test_status_finds_a_send_however_its_server_is_spelled(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status(destination=...) names the same ledger for any spelling of the server that a
    send would share it under (case, a trailing dot, a short IP, the port left out)."""
    folder = make_folder(tmp_path, 2)
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    with nl.plan(ISSUE) as plan:
        nl.send(plan)
    port = plain_smtp_server.port
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST")
    outbox = Newsletter.open(folder)  # configured: the outbox, where nothing was sent
    canonical = f"smtp://127.0.0.1:{port}"
    for spelled in (f"SMTP://127.0.0.1.:{port}", f"smtp://[::ffff:127.0.0.1]:{port}",
                    f"smtp://127.1:{port}", "smtp://127.0.0.1"):  # fmt: skip
        report = outbox.status(ISSUE, destination=spelled)
        assert (report.destination, report.counts.sent) == (canonical, 2), spelled


def test_one_tag_or_list_given_as_a_string_is_one_name(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan(tags="vip") selects the readers tagged vip (not those tagged 'v', 'i' or 'p'), and
    lists="news" (or a Path) is the list news, as a one-item sequence would be."""
    folder = make_folder(tmp_path, 0)
    (folder / "subscribers" / "news.csv").write_text(
        "email,name,status,tags\n"
        "vip@example.org,V,subscribed,vip\n"
        "letter@example.org,L,subscribed,i\n",
        encoding="utf-8",
    )
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    with nl.plan(ISSUE, tags="vip") as plan:
        assert plan.recipients == 1
        nl.send(plan)
    assert list(plain_smtp_server.delivered()) == ["vip@example.org"]
    for lists in ("news", folder / "subscribers" / "news.csv"):
        with nl.plan(ISSUE, lists=lists, tags="vip") as plan:
            assert plan.lists == (str(folder / "subscribers" / "news.csv"),)


SIGNAL_SCRIPT = """
import signal
from newsletter import Newsletter

def mine(signum, frame):
    pass

signal.signal(signal.SIGINT, mine)
signal.signal(signal.SIGTERM, mine)
nl = Newsletter.open(".")
with nl.plan("{issue}") as plan:
    nl.send(plan)
print(signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGTERM) is mine)
"""


def test_send_gives_the_callers_signal_handlers_back(tmp_path: Path) -> None:
    """A script's own SIGINT and SIGTERM handlers are in place again after send() (which
    takes both while it runs, to stop cleanly)."""
    from tests.send_helpers import env_for

    folder = make_folder(tmp_path, 2)
    script = tmp_path / "handlers.py"
    script.write_text(SIGNAL_SCRIPT.format(issue=ISSUE), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=env_for({"NEWSLETTER_SECRET": "a-test-secret-that-is-long-enough"}),
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"], done.stdout
    assert len(list((folder / "outbox" / "new").iterdir())) == 2


def test_an_empty_list_of_lists_selects_no_list_not_every_list(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan(lists=[]) (a script's selection that came out empty) is refused as BadOption
    naming `lists`; only lists=None means every list. Nothing is sent, no ledger written."""
    folder = make_folder(tmp_path, 2)
    nl = open_smtp(folder, plain_smtp_server, monkeypatch)
    for empty in ([], ()):
        with pytest.raises(BadOption) as caught:
            nl.plan(ISSUE, lists=empty)
        assert caught.value.option == "lists"
    assert plain_smtp_server.messages == [] and sends_folder(folder) == []


def test_continue_from_one_ledger_given_alone(
    tmp_path: Path, make_smtp_server: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """continue_from="<ledger>" (a str, not a list) continues that send: the rest only."""
    folder = make_folder(tmp_path, 3)
    first, second = make_smtp_server(), make_smtp_server()
    through_first = open_smtp(folder, first, monkeypatch)
    with through_first.plan(ISSUE, limit=1) as plan:
        through_first.send(plan)
    [ledger] = sends_folder(folder)
    nl = open_smtp(folder, second, monkeypatch)
    with nl.plan(ISSUE, continue_from=str(ledger)) as plan:
        report = nl.send(plan)
    assert report.counts.sent == 3 and len(second.messages) == 2 and len(first.messages) == 1

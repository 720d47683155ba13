"""Resume keeps its promises: bounces applied, the selection kept, a plan that writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.send_helpers import ISSUE, make_folder, run, smtp_env
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

"""`newsletter test`: one [TEST] copy over real SMTP (STARTTLS, AUTH) or into the outbox."""

from __future__ import annotations

import email
import email.policy
import mailbox
import shutil
from pathlib import Path

import pytest
import trustme

from newsletter.config import load_config, secret
from newsletter.tokens import verify_token
from tests.compose_helpers import ROOT, SAMPLE, run
from tests.smtpd import PASSWORD, USER, SmtpServer

SECRET = "a-test-secret-that-is-long-enough"  # noqa: S105  # a throwaway test value


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    (tmp_path / "subscribers").mkdir()
    shutil.copy(ROOT / "subscribers" / "example.csv", tmp_path / "subscribers" / "example.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return tmp_path


def _smtp_env(
    monkeypatch: pytest.MonkeyPatch,
    server: SmtpServer,
    ca: trustme.CA,
    tmp: Path,
    password: str = PASSWORD,
) -> None:
    bundle = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # the system trust store, as users have it
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", server.host)
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", str(server.port))
    monkeypatch.setenv("NEWSLETTER_SMTP_USERNAME", USER)
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", password)


def test_over_starttls_with_auth(folder, smtp_server, ca, monkeypatch) -> None:
    """The copy goes over STARTTLS + AUTH, to --to only, subject prefixed, token for --to."""
    _smtp_env(monkeypatch, smtp_server, ca, folder)
    result = run("test", SAMPLE, "--to", "editor@example.net", "--as", "zofia.wojcik@example.net")
    assert result.exit_code == 0, result.output
    assert f"SMTP {smtp_server.host}:{smtp_server.port}" in result.output
    [received] = smtp_server.messages
    assert received.tls and received.login == USER
    assert received.recipients == ("editor@example.net",)
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"].startswith("[TEST] Cohes3ion:")
    assert message["To"] == "editor@example.net"
    token = message["List-Unsubscribe"].split("/unsubscribe/")[1].split(">")[0]
    config = load_config()
    assert verify_token(secret(config, create=False), config.list_id, token) == "editor@example.net"


def test_merge_fields_come_from_as(folder, plain_smtp_server, monkeypatch) -> None:
    """--as fills merge fields from that subscriber's row; non-ASCII survives."""
    issue = folder / "hello.toml"
    issue.write_text(
        SAMPLE.read_text().replace(
            'subject = "Cohes3ion:',
            "subject = \"{{ subscriber.name | default('Reader') }}, Cohes3ion:",
        )
    )
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", plain_smtp_server.host)
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", str(plain_smtp_server.port))
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")
    assert (
        run("test", issue, "--to", "me@example.org", "--as", "zofia.wojcik@example.net").exit_code
        == 0
    )
    assert run("test", issue, "--to", "me@example.org").exit_code == 0
    first, second = (
        email.message_from_bytes(m.data, policy=email.policy.default)
        for m in plain_smtp_server.messages
    )
    assert first["Subject"].startswith("[TEST] Zofia Wójcik, Cohes3ion:")
    assert second["Subject"].startswith("[TEST] Reader, Cohes3ion:")


def test_wrong_password_is_one_clear_line(folder, smtp_server, ca, monkeypatch) -> None:
    """A refused login exits 1 with one line naming the server, never the password."""
    wrong = "not-the-password-123"
    _smtp_env(monkeypatch, smtp_server, ca, folder, password=wrong)
    result = run("test", SAMPLE, "--to", "me@example.org")
    assert result.exit_code == 1
    assert f"{smtp_server.host}:{smtp_server.port}" in result.output
    assert wrong not in result.output
    assert "Traceback" not in result.output
    assert smtp_server.messages == []


def test_connection_refused_is_one_clear_line(folder, monkeypatch) -> None:
    """Nothing listening: exit 1 and one line, no traceback."""
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", "9")  # discard: nothing listens there
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")
    result = run("test", SAMPLE, "--to", "me@example.org")
    assert result.exit_code == 1
    assert "error: 127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


def test_outbox_by_default_and_lint_errors_only_warn(folder, monkeypatch) -> None:
    """Without SMTP the copy lands in outbox/; lint errors (blank links) do not block a test."""
    from tests.compose_helpers import BLANK_LINKS

    monkeypatch.delenv("NEWSLETTER_SECRET")
    result = run("test", BLANK_LINKS, "--to", "me@example.org")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "placeholder link" in result.output
    assert "created" in result.output and ".newsletter/secret" in result.output
    assert oct((folder / ".newsletter" / "secret").stat().st_mode & 0o777) == "0o600"
    [message] = mailbox.Maildir(folder / "outbox", create=False)
    assert message["Subject"].startswith("[TEST] ")
    assert str(folder / "outbox" / "new") in result.output


def test_needs_a_recipient(folder, monkeypatch) -> None:
    """With neither --to nor test_to the command says what to set."""
    monkeypatch.setenv("NEWSLETTER_TEST_TO", "")
    result = run("test", SAMPLE)
    assert result.exit_code == 1
    assert "pass --to ADDRESS or set [newsletter] test_to" in result.output


def test_smtp_send_without_secret_refuses(folder, plain_smtp_server, monkeypatch) -> None:
    """An SMTP send without NEWSLETTER_SECRET refuses to start and says what to set."""
    monkeypatch.delenv("NEWSLETTER_SECRET")
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", plain_smtp_server.host)
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", str(plain_smtp_server.port))
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")
    result = run("test", SAMPLE, "--to", "me@example.org")
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET is not set" in result.output
    assert plain_smtp_server.messages == []


def test_a_copy_into_the_outbox_names_its_file(folder) -> None:
    """Into the outbox, the result line names the file written, not an SMTP code."""
    result = run("test", SAMPLE, "--to", "me@example.org")
    assert result.exit_code == 0, result.output
    [name] = (folder / "outbox" / "new").iterdir()
    assert result.stdout == f"wrote a test of {SAMPLE} for me@example.org to {name}\n"

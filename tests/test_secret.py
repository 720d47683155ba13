"""NEWSLETTER_SECRET: required (and long enough) wherever links are signed for SMTP or checked;
only outbox sends may use .newsletter/secret. `init` pins list_id; `check` warns when it is not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.compose_helpers import ROOT, SAMPLE, run
from tests.smtpd import SmtpServer

SHORT = "s" * 31  # one character under the minimum
MAKE = "secrets.token_urlsafe(32)"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    (tmp_path / "subscribers").mkdir()
    shutil.copy(ROOT / "subscribers" / "example.csv", tmp_path / "subscribers" / "example.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _via_smtp(monkeypatch: pytest.MonkeyPatch, server: SmtpServer, host: str) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", host)
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", str(server.port))
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")


SMTP_COMMANDS = {
    "send": ["send", SAMPLE, "--list", "subscribers/example.csv", "--yes"],
    "test": ["test", SAMPLE, "--to", "me@example.org"],
}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST."])
@pytest.mark.parametrize("name", sorted(SMTP_COMMANDS))
def test_smtp_never_signs_with_the_outbox_secret(
    folder: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, name, host
) -> None:
    """After an outbox send made .newsletter/secret, an SMTP send or test without
    NEWSLETTER_SECRET refuses (loopback too), says how to make one, and mails nobody."""
    monkeypatch.delenv("NEWSLETTER_SECRET")
    outbox = run("test", SAMPLE, "--to", "me@example.org")
    assert outbox.exit_code == 0, outbox.output
    assert (folder / ".newsletter" / "secret").is_file()
    _via_smtp(monkeypatch, plain_smtp_server, host)
    result = run(*SMTP_COMMANDS[name])
    assert result.exit_code == 1, result.output
    assert "NEWSLETTER_SECRET is not set" in result.output
    assert MAKE in result.output
    assert plain_smtp_server.messages == []
    assert not list(folder.glob(".newsletter/sends/*.sqlite"))


@pytest.mark.parametrize("name", ["send", "test", "outbox test", "serve"])
def test_a_short_secret_is_refused_and_never_printed(
    folder: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A NEWSLETTER_SECRET under 32 characters stops send, test and serve before anything is
    signed or sent; the message names the variable and how to make one, never the value."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SHORT)
    if name in SMTP_COMMANDS:
        _via_smtp(monkeypatch, plain_smtp_server, "127.0.0.1")
        args = SMTP_COMMANDS[name]
    elif name == "serve":
        args = ["serve", "--port", "0"]
    else:
        args = SMTP_COMMANDS["test"]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "NEWSLETTER_SECRET is too short (31 characters; at least 32)" in result.output
    assert MAKE in result.output
    assert SHORT not in result.output
    assert plain_smtp_server.messages == []
    assert not (folder / "outbox").exists()


@pytest.mark.parametrize(
    "value", [" " * 40, "\t" * 40, "s" * 16 + " " * 16, " " * 8 + SHORT], ids=repr
)
@pytest.mark.parametrize("name", sorted(SMTP_COMMANDS))
def test_a_secret_padded_with_white_space_is_refused(
    folder: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, name, value
) -> None:
    """White space adds no secrecy: 32 characters or more besides it, or the run stops."""
    monkeypatch.setenv("NEWSLETTER_SECRET", value)
    _via_smtp(monkeypatch, plain_smtp_server, "127.0.0.1")
    result = run(*SMTP_COMMANDS[name])
    assert result.exit_code == 1, result.output
    assert "NEWSLETTER_SECRET is too short" in result.output
    assert value.strip() not in result.output or not value.strip()
    assert plain_smtp_server.messages == []
    assert not list(folder.glob(".newsletter/sends/*.sqlite"))


def test_a_short_stored_secret_is_refused(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-written .newsletter/secret under 32 characters is refused, naming the file."""
    monkeypatch.delenv("NEWSLETTER_SECRET")
    (folder / ".newsletter").mkdir()
    (folder / ".newsletter" / "secret").write_text(SHORT + "\n")
    result = run("test", SAMPLE, "--to", "me@example.org")
    assert result.exit_code == 1
    assert ".newsletter/secret is too short (31 characters" in result.output
    assert SHORT not in result.output


def test_init_writes_a_list_id_and_check_is_quiet_about_it(tmp_path: Path, monkeypatch) -> None:
    """init writes `list_id = "..."` with a real value; `check` then has no list_id warning."""
    folder = tmp_path / "Acme News"
    assert run("init", folder).exit_code == 0
    text = (folder / "newsletter.toml").read_text()
    [value] = re.findall(r'^list_id = "([^"]+)"', text, re.M)
    assert value == "acme-news.example.org"
    monkeypatch.chdir(folder)
    [issue] = (folder / "issues").glob("*.toml")
    result = run("check", issue)
    assert "newsletter.list_id" not in result.output, result.output


def test_check_warns_when_list_id_is_derived_from_from(folder: Path) -> None:
    """Without list_id, `check` warns naming the key, the config file and its line."""
    config = folder / "newsletter.toml"
    lines = config.read_text().splitlines()
    config.write_text("\n".join(ln for ln in lines if not ln.startswith("list_id")) + "\n")
    section = next(n for n, ln in enumerate(lines, 1) if ln.strip() == "[newsletter]")
    result = run("check", SAMPLE)
    found = [ln for ln in result.output.splitlines() if "newsletter.list_id" in ln]
    assert found == [
        f"warning: {config.resolve()}:{section}: newsletter.list_id: not set, so it is derived "
        "from `from` (cohes3ion.example.org): changing `from` would break the unsubscribe link "
        'of every message sent. Set list_id = "cohes3ion.example.org" now'
    ], result.output

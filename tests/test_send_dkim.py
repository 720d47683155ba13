"""DKIM through the commands: `send` and `test` sign every message, and the signatures verify."""

from __future__ import annotations

import shutil
from pathlib import Path

import dkim
import pytest

from tests.compose_helpers import ROOT, SAMPLE, run
from tests.test_message_dkim import DOMAIN, SELECTOR, key_pair, stub_dns

__all__ = ["key_pair"]  # the fixture, imported for this module's tests


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_pair, plain_smtp_server) -> Path:
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    (tmp_path / "subscribers").mkdir()
    shutil.copy(ROOT / "subscribers" / "example.csv", tmp_path / "subscribers" / "example.csv")
    (tmp_path / "dkim.pem").write_bytes(key_pair[0])
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "NEWSLETTER_SECRET": "dkim-test-secret-0123456789abcdef",
        "NEWSLETTER_DKIM_DOMAIN": DOMAIN,
        "NEWSLETTER_DKIM_SELECTOR": SELECTOR,
        "NEWSLETTER_DKIM_KEY_FILE": "dkim.pem",
        "NEWSLETTER_SMTP_HOST": plain_smtp_server.host,
        "NEWSLETTER_SMTP_PORT": str(plain_smtp_server.port),
        "NEWSLETTER_SMTP_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def test_send_signs_every_message(folder, plain_smtp_server, key_pair) -> None:
    """A DKIM-configured send signs each message (in worker processes); each verifies."""
    result = run("send", SAMPLE, "--list", "subscribers/example.csv", "--yes")
    assert result.exit_code == 0, result.output
    assert f"DKIM: signing as d={DOMAIN} s={SELECTOR}" in result.output
    assert len(plain_smtp_server.messages) == 8
    for received in plain_smtp_server.messages:
        assert received.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(received.data, dnsfunc=stub_dns(key_pair[1]))


def test_test_copy_is_signed(folder, plain_smtp_server, key_pair) -> None:
    """`newsletter test` signs its copy too."""
    assert run("test", SAMPLE, "--to", "me@example.org").exit_code == 0
    [received] = plain_smtp_server.messages
    assert dkim.verify(received.data, dnsfunc=stub_dns(key_pair[1]))


def test_half_configured_dkim_stops_before_sending(folder, plain_smtp_server, monkeypatch) -> None:
    """A selector without a key file is an error naming the missing key; nothing is sent."""
    monkeypatch.delenv("NEWSLETTER_DKIM_KEY_FILE")
    result = run("send", SAMPLE, "--list", "subscribers/example.csv", "--yes")
    assert result.exit_code == 1
    assert "newsletter.dkim_key_file: needed for DKIM signing" in result.output
    assert plain_smtp_server.messages == []


def test_sign_up_confirmation_is_signed(folder, plain_smtp_server, key_pair) -> None:
    """The confirmation of a web sign-up goes out signed too."""
    from tests.signup_helpers import app_for, call

    app, _ = app_for(folder)
    answer = call(app, "POST", "/newsletter/subscribe", data={"email": "ann@example.org"})
    assert answer.status_code == 200
    [received] = plain_smtp_server.messages
    assert received.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(received.data, dnsfunc=stub_dns(key_pair[1]))

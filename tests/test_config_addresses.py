"""Addresses in newsletter.toml are parsed strictly: exactly one mailbox with a domain, or an
error naming the file, line and key, and how to write it."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.addresses import parse_mailbox
from newsletter.config import load_config
from newsletter.errors import BadAddress, ConfigError
from newsletter.message import MessageFactory
from newsletter.models import Subscriber
from tests.compose_helpers import MINIMAL_CONFIG, run, sample_folder, write
from tests.message_samples import SECRET, make_config, make_rendered

GOOD_FROM = "Test news <news@example.org>"
NOT_ONE_MAILBOX = {
    "unquoted comma": "Acme, Inc. <news@example.org>",
    "two addresses": "news@example.org, other@example.org",
    "two named addresses": '"A" <a@example.org>, "B" <b@example.org>',
    "no domain": "news",
    "local part with no domain": "Acme <news@>",
    "domain without a dot": "news@localhost",
    "bare display name": "Acme",
    "angle brackets missing": "Acme news@example.org",
    "closing bracket missing": "Acme <news@example.org",
    "text after the address": "Acme <news@example.org> x",
    "trailing comma": "Acme <news@example.org>,",
    "line feed": "Acme <news@example.org>\nBcc: victim@example.net",
    "carriage return": "Acme\r <news@example.org>",
    "NUL": "news@example.org\x00",
    "group syntax": "Team: news@example.org;",
    "empty group": "Team:;",
    "comment": "news@example.org (Acme)",
    "encoded word": "=?utf-8?q?Acme?= <news@example.org>",
}


def _config_error(tmp_path: Path, key: str, value: str) -> str:
    text = MINIMAL_CONFIG.replace(f'from = "{GOOD_FROM}"\n', "")
    path = write(tmp_path / "newsletter.toml", text)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{key} = {_toml_string(value)}\n")
        if key != "from":
            handle.write(f"from = {_toml_string(GOOD_FROM)}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=path, environ={})
    return str(caught.value)


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\x00", "\\u0000") + '"'


@pytest.mark.parametrize("value", NOT_ONE_MAILBOX.values(), ids=NOT_ONE_MAILBOX.keys())
@pytest.mark.parametrize("key", ["from", "reply_to", "test_to", "unsubscribe_mailto"])
def test_not_exactly_one_mailbox_is_a_located_error(tmp_path: Path, key: str, value: str) -> None:
    """Each address key refuses anything but one mailbox with a domain, naming file:line: key."""
    message = _config_error(tmp_path, key, value)
    assert message.startswith(f"{tmp_path / 'newsletter.toml'}:5: newsletter.{key}: ")
    assert "\n" not in message


def test_unquoted_comma_error_shows_the_quoted_fix(tmp_path: Path) -> None:
    """The error for `Acme, Inc. <...>` says how to write it, in TOML."""
    message = _config_error(tmp_path, "from", "Acme, Inc. <news@example.org>")
    assert "quote a display name" in message
    assert """as in from = '"Acme, Inc." <news@example.org>'""" in message


@pytest.mark.parametrize("key", ["test_to", "unsubscribe_mailto", "envelope_from"])
def test_address_alone_keys_refuse_a_display_name(tmp_path: Path, key: str) -> None:
    """Keys used as a bare address (mailto:, envelope, test recipient) take no name."""
    message = _config_error(tmp_path, key, "Me <me@example.org>")
    assert f"newsletter.{key}: 'Me <me@example.org>' must be an address alone" in message


def test_environment_value_is_checked_the_same_way(tmp_path: Path) -> None:
    """NEWSLETTER_FROM is parsed as strictly as the file, and named in the error."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    env = {"NEWSLETTER_FROM": "Acme, Inc. <news@example.org>"}
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path, environ=env)
    assert "NEWSLETTER_FROM: 'Acme, Inc. <news@example.org>' is not one" in str(caught.value)


def test_check_refuses_an_unquoted_comma_in_from(tmp_path: Path, monkeypatch) -> None:
    """`check` exits 1 with one line naming newsletter.toml, its line and the key."""
    folder = sample_folder(tmp_path)
    config = folder / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    start = text.index("\nfrom = ") + 1
    end = text.index("\n", start)
    config.write_text(text[:start] + 'from = "Acme, Inc. <news@example.org>"' + text[end:])
    line = text[:start].count("\n") + 1
    monkeypatch.chdir(folder)
    result = run("check", "issues/2021-09-cohes3ion.toml")
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {config}:{line}: newsletter.from: ")
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_quoted_display_name_reaches_the_headers_whole() -> None:
    """`"Acme, Inc." <news@...>` sends From and Reply-To as one mailbox each, and the
    Message-ID on the address's domain."""
    config = make_config(
        from_='"Acme, Inc." <news@example.org>', reply_to='"Desk, Acme" <desk@example.org>'
    )
    factory = MessageFactory(make_rendered(), config, SECRET)
    data = factory.build(Subscriber(email="ann@example.com", name="Ann"))
    message = email.message_from_bytes(data, policy=email.policy.default)
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Acme, Inc.", "news@example.org")
    [reply] = message["Reply-To"].addresses
    assert (reply.display_name, reply.addr_spec) == ("Desk, Acme", "desk@example.org")
    assert message["Message-ID"].endswith("@example.org>")


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40))
def test_any_quoted_display_name_parses_back(name: str) -> None:
    """A display name written as a quoted string comes back as written (trimmed)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    text = f'"{escaped}" <news@example.org>'
    if "=?" in name:
        with pytest.raises(BadAddress):
            parse_mailbox(text)
        return
    assert parse_mailbox(text) == (name.strip(), "news@example.org")


# -- Internationalised addresses: what the tool puts on the wire ---------------------------------

IDN_FROM = "Acme <news@exämple.org>"  # the domain in Unicode; its ASCII form is xn--exmple-cua.org


def _send_to_server(tmp_path: Path, emails: list[str], **env: str) -> tuple[object, str]:
    """`newsletter send --yes` of the sample to a real SMTP server: (server, list text after)."""
    from tests.send_helpers import ISSUE, make_folder, smtp_env, write_list
    from tests.send_helpers import run as run_cli
    from tests.smtpd import SmtpServer

    folder = make_folder(tmp_path, 0)
    listed = write_list(folder, "news", emails)
    with SmtpServer() as server:
        result = run_cli(folder, "send", ISSUE, "--yes", env=smtp_env(server.port, **env))
    assert result.returncode == 0, result.stdout + result.stderr
    return server, listed.read_text(encoding="utf-8")


def test_idn_sender_goes_out_in_ascii_and_bounces_nobody(tmp_path: Path) -> None:
    """A `from` on an IDN domain is sent as its ASCII (IDNA) form in MAIL FROM and in From,
    so a server without SMTPUTF8 takes it; no reader is failed (or marked bounced) for it."""
    server, listed = _send_to_server(
        tmp_path, ["a@example.org", "b@example.org"], NEWSLETTER_FROM=IDN_FROM
    )
    assert sorted(server.delivered()) == ["a@example.org", "b@example.org"]
    for received in server.messages:
        assert received.sender == "news@xn--exmple-cua.org"
        head = received.data.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()
        assert b"From: Acme <news@xn--exmple-cua.org>" in head
    assert "bounced" not in listed


def test_idn_recipient_is_delivered_with_smtputf8(tmp_path: Path) -> None:
    """A reader on an IDN domain, whose To header is UTF-8, is sent with SMTPUTF8 (not refused
    by the tool as "non-ASCII without SMTPUTF8" and marked bounced)."""
    server, listed = _send_to_server(tmp_path, ["c@exämple.org"])
    assert list(server.delivered()) == ["c@exämple.org"]
    assert "SMTPUTF8" in server.messages[0].mail_options
    assert "bounced" not in listed


@pytest.mark.parametrize("key", ["from", "reply_to", "unsubscribe_mailto", "envelope_from"])
def test_sender_side_address_needs_an_ascii_local_part(tmp_path: Path, key: str) -> None:
    """An address written into every message (or MAIL FROM) with a non-ASCII local part would
    need SMTPUTF8 at every reader's server: a located error, not a send that fails everyone."""
    message = _config_error(tmp_path, key, "ñews@example.org")
    assert f"newsletter.{key}: " in message
    assert "ASCII" in message


@pytest.mark.parametrize(
    "to",
    [
        "news@localhost",
        "=?utf-8?q?x?=@example.org",
        "Acme, Inc. <x@example.org>",
        "x@example.org\nBcc: victim@example.net",
        "x@[127.0.0.1]",
    ],
)
def test_test_to_option_is_parsed_like_test_to(tmp_path: Path, monkeypatch, to: str) -> None:
    """`test --to` takes what `test_to` takes, and refuses the rest in one line naming --to
    (`news@localhost` and an encoded word were sent; a line break split the error in two)."""
    folder = sample_folder(tmp_path)
    monkeypatch.chdir(folder)
    result = run("test", "issues/2021-09-cohes3ion.toml", "--to", to)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "--to" in line]
    assert len(errors) == 1 and errors[0].startswith("error: --to: "), result.output
    assert not (folder / "outbox").exists()

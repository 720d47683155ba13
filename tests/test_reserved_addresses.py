"""Addresses at reserved names (.test, .example, .invalid, .localhost, localhost): refused the
same way by `test --to`, `subscribers add`, import and a send's lists, unless the folder allows
them for local testing ([newsletter] allow_reserved_domains)."""

from __future__ import annotations

import mailbox
import re
from pathlib import Path

import pytest

from newsletter import Newsletter
from newsletter.addresses import normalise_address, reserved_name
from newsletter.errors import BadOption, ReservedAddress
from newsletter.subscribers import select
from tests.compose_helpers import run, sample_folder
from tests.send_helpers import ISSUE, write_list

RESERVED = [
    "ann@news.test",
    "ann@Mail.TEST",
    "ann@bücher.example",
    "ann@x.invalid",
    "ann@box.localhost",
    "ann@localhost",
    "ann@x\uff0etest",  # a full-width dot, which IDNA reads as "."
]
REAL = ["ann@example.com", "ann@example.net", "ann@example.org", "ann@testing.org"]
ALLOW = "NEWSLETTER_ALLOW_RESERVED_DOMAINS"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sample_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ALLOW, raising=False)
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET", "a-test-secret-that-is-long-enough")
    return tmp_path


def _says_reserved(output: str) -> None:
    assert "reserved name" in output, output
    assert "allow_reserved_domains" in output, output
    assert "Traceback" not in output


@pytest.mark.parametrize("address", RESERVED)
def test_every_reserved_name_is_refused_with_its_reason(address: str) -> None:
    """Each reserved name, in any spelling, is refused by the one check, naming the name."""
    assert reserved_name(address) is not None
    with pytest.raises(ReservedAddress) as caught:
        normalise_address(address)
    assert caught.value.name.lstrip(".") in {"test", "example", "invalid", "localhost"}


@pytest.mark.parametrize("address", REAL)
def test_documentation_domains_that_exist_are_ordinary(address: str) -> None:
    """example.com/.net/.org are real registered domains: not reserved names here."""
    assert reserved_name(address) is None
    assert normalise_address(address)[0] == address


def test_allowed_reserved_address_keeps_its_stored_form() -> None:
    """Allowed, a reserved address is stored as any other: domain lowercased, nothing added."""
    assert normalise_address(" Ann@Mail.TEST ", allow_reserved=True) == ("Ann@mail.test", False)
    assert normalise_address("ann@localhost", allow_reserved=True) == ("ann@localhost", False)


def test_allowed_reserved_address_still_needs_good_syntax() -> None:
    """The setting allows the name, not a broken address: its syntax error is reported."""
    with pytest.raises(Exception, match="SPACE"):
        normalise_address("has space@news.test", allow_reserved=True)


@pytest.mark.parametrize("address", ["ann@news.test", "ann@localhost", "ann@x.invalid"])
def test_test_to_refuses_a_reserved_name(folder: Path, address: str) -> None:
    """`test --to` refuses it in one line naming --to, the name and the setting; nothing sent."""
    result = run("test", ISSUE, "--to", address)
    assert result.exit_code == 1, result.output
    assert "error: --to: " in result.output
    _says_reserved(result.output)
    assert not (folder / "outbox").exists()


def test_test_to_setting_refuses_a_reserved_name(folder: Path) -> None:
    """test_to in newsletter.toml at a reserved name: refused when used, naming the key."""
    config = folder / "newsletter.toml"
    text = re.sub(r"(?m)^test_to = .*$", 'test_to = "me@x.test"', config.read_text())
    config.write_text(text)
    result = run("test", ISSUE)
    assert result.exit_code == 1, result.output
    line = text.splitlines().index('test_to = "me@x.test"') + 1
    assert f"newsletter.toml:{line}: newsletter.test_to: " in result.output
    _says_reserved(result.output)


@pytest.mark.parametrize("key", ["from", "reply_to", "envelope_from", "unsubscribe_mailto"])
def test_config_addresses_follow_the_same_rule(folder: Path, key: str) -> None:
    """Every address key in newsletter.toml at a reserved name is a located error, and the
    setting allows it (a local test server takes mail from news@localhost)."""
    config = folder / "newsletter.toml"
    text = re.sub(rf"(?m)^{key} = .*\n", "", config.read_text())
    text = text.replace("\n[newsletter]\n", f'\n[newsletter]\n{key} = "news@localhost"\n')
    config.write_text(text)
    result = run("check", ISSUE)
    assert result.exit_code == 1, result.output
    assert f"newsletter.toml:6: newsletter.{key}: " in result.output
    _says_reserved(result.output)
    config.write_text(
        text.replace("[newsletter]\n", "[newsletter]\nallow_reserved_domains = true\n")
    )
    assert run("check", ISSUE).exit_code == 0


def test_api_test_refuses_a_reserved_name(folder: Path) -> None:
    """The library refuses it too (Newsletter.test), as BadOption naming `to`."""
    with pytest.raises(BadOption) as caught:
        Newsletter.open(folder).test(ISSUE, to="me@news.test")
    assert caught.value.option == "to" and "reserved name" in caught.value.reason


def test_test_to_reserved_name_allowed_by_the_setting(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the setting (here from the environment) the copy goes out (to the outbox)."""
    monkeypatch.setenv(ALLOW, "1")
    result = run("test", ISSUE, "--to", "me@news.test")
    assert result.exit_code == 0, result.output
    [message] = list(mailbox.Maildir(folder / "outbox"))
    assert message["To"] == "me@news.test"


@pytest.mark.parametrize("address", RESERVED)
def test_subscribers_add_refuses_a_reserved_name(folder: Path, address: str) -> None:
    """`subscribers add` refuses it with the same reason; no list is written."""
    result = run("subscribers", "add", address)
    assert result.exit_code == 1, result.output
    _says_reserved(result.output)
    assert not (folder / "subscribers" / "subscribers.csv").exists()


def test_subscribers_add_allowed_by_the_setting_in_the_file(folder: Path) -> None:
    """`allow_reserved_domains = true` in newsletter.toml lets `subscribers add` take it."""
    config = folder / "newsletter.toml"
    config.write_text(
        config.read_text().replace(
            "\n[newsletter]\n", "\n[newsletter]\nallow_reserved_domains = true\n"
        )
    )
    result = run("subscribers", "add", "ann@news.test")
    assert result.exit_code == 0, result.output
    assert "ann@news.test" in (folder / "subscribers" / "subscribers.csv").read_text()


def test_import_refuses_reserved_names_naming_each_row(folder: Path) -> None:
    """An import with reserved addresses names each row and writes nothing."""
    source = folder / "people.csv"
    source.write_text("email,name\nok@example.org,Ok\nann@news.test,Ann\nbob@localhost,Bob\n")
    result = run("subscribers", "import", source, "--into", "news")
    assert result.exit_code == 1, result.output
    assert "people.csv:3" in result.output and "people.csv:4" in result.output
    _says_reserved(result.output)
    assert not (folder / "subscribers" / "news.csv").exists()


@pytest.mark.parametrize("fmt", ["mailchimp", "listmonk"])
def test_import_of_other_formats_refuses_reserved_names(folder: Path, fmt: str) -> None:
    """Mailchimp and listmonk exports go through the same check."""
    source = folder / "export.csv"
    if fmt == "mailchimp":
        source.write_text("Email Address,First Name\nann@news.test,Ann\n")
    else:
        source.write_text("email,name,status\nann@news.test,Ann,enabled\n")
    result = run("subscribers", "import", source, "--into", "news", "--format", fmt)
    assert result.exit_code == 1, result.output
    _says_reserved(result.output)


def test_import_allowed_by_the_setting(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the setting, the import takes them."""
    monkeypatch.setenv(ALLOW, "true")
    source = folder / "people.csv"
    source.write_text("email,name\nann@news.test,Ann\nbob@localhost,Bob\n")
    result = run("subscribers", "import", source, "--into", "news")
    assert result.exit_code == 0, result.output
    text = (folder / "subscribers" / "news.csv").read_text()
    assert "ann@news.test" in text and "bob@localhost" in text


def test_a_send_leaves_reserved_rows_out_unless_allowed(folder: Path) -> None:
    """A list edited by hand: reserved rows are left out as invalid, selected when allowed."""
    write_list(folder, "news", ["ann@example.org", "bob@news.test", "cy@localhost"])
    strict = select(folder)
    assert [s.email for s in strict] == ["ann@example.org"]
    assert strict.left_out == {"invalid": 2}
    loose = select(folder, allow_reserved=True)
    assert [s.email for s in loose] == ["ann@example.org", "bob@news.test", "cy@localhost"]


def test_subscribers_check_reports_reserved_rows(folder: Path) -> None:
    """`subscribers check` reports a reserved row as an error (the send would leave it out)."""
    write_list(folder, "news", ["ann@example.org", "bob@news.test"])
    result = run("subscribers", "check")
    assert result.exit_code == 1, result.output
    assert "news.csv:3" in result.output
    _says_reserved(result.output)

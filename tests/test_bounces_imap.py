"""`newsletter bounces --imap` against a real Dovecot (tests/dovecot.py): the fixtures read
over IMAPS, applied, flagged so a rerun changes nothing; the password only ever from
NEWSLETTER_IMAP_PASSWORD and never shown."""

from __future__ import annotations

import imaplib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bounce_helpers import EXPECTED, SCENARIO, bounce_folder, fixture, statuses
from tests.compose_helpers import run
from tests.dovecot import Dovecot, dovecot


@pytest.fixture
def server() -> Iterator[Dovecot]:
    with dovecot() as running:
        yield running


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: Dovecot) -> Path:
    monkeypatch.setenv("NEWSLETTER_SECRET", SCENARIO["secret"])
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", server.password)
    found = bounce_folder(tmp_path / "letter")
    monkeypatch.chdir(found)
    for name in EXPECTED:
        server.deliver(name, fixture(name))
    return found


def imap_bounces(server: Dovecot, *args: str) -> dict[str, Any]:
    result = run("bounces", "--imap", server.url(), "--ca-file", server.ca_file, "--json", *args)
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def flags(server: Dovecot) -> list[str]:
    """The flags of every message in the INBOX, as another IMAP client sees them."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context) as imap:
        imap.login(server.user, server.password)
        imap.select("INBOX")
        _, data = imap.fetch("1:*", "(FLAGS)")
    return sorted(d.decode() for d in data if isinstance(d, bytes))


def test_imap_bounces_are_applied_once(folder: Path, server: Dovecot) -> None:
    """Each fixture maps to its reader over IMAP; the lists change; every message gets \\Seen
    and the NewsletterProcessed keyword; a rerun finds nothing and changes nothing."""
    first = imap_bounces(server)
    results = sorted((m["email"], m["result"], m["status"]) for m in first["messages"])
    assert results == sorted(EXPECTED.values())
    shown = statuses(folder)
    assert shown["someone@refuse.test"] == "bounced"
    assert shown["reader@yahoo.com"] == "complained"
    assert shown["full@tempfail.test"] == "subscribed"
    seen = flags(server)
    assert len(seen) == len(EXPECTED)
    assert all("\\Seen" in f and "NewsletterProcessed" in f for f in seen), seen
    again = imap_bounces(server)
    assert again["messages"] == [] and statuses(folder) == shown and flags(server) == seen


def test_imap_dry_run_leaves_the_mailbox_alone(folder: Path, server: Dovecot) -> None:
    """--dry-run over IMAP: no flag set (BODY.PEEK), nothing changed."""
    found = imap_bounces(server, "--dry-run")
    assert len(found["messages"]) == len(EXPECTED)
    assert not any("\\Seen" in f or "NewsletterProcessed" in f for f in flags(server))
    assert set(statuses(folder).values()) == {"subscribed"}


def test_a_wrong_password_is_one_line_without_it(
    folder: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused login: exit 1 with one line naming the server; the password is not in it."""
    wrong = "wrong-password-do-not-print-me"
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", wrong)
    result = run("bounces", "--imap", server.url(), "--ca-file", server.ca_file)
    assert result.exit_code == 1
    assert f"imaps://bounces@127.0.0.1:{server.port}/INBOX: LOGIN failed" in result.output
    assert wrong not in result.output and "Traceback" not in result.output


def test_the_server_certificate_is_checked(folder: Path, server: Dovecot) -> None:
    """Without --ca-file the test CA is not trusted: a clear error, nothing read."""
    result = run("bounces", "--imap", server.url())
    assert result.exit_code == 1
    assert "cannot connect" in result.output and "CERTIFICATE_VERIFY_FAILED" in result.output
    assert set(statuses(folder).values()) == {"subscribed"}


@pytest.mark.parametrize(
    ("url", "why"),
    [("imaps://bounces:hunter2hunter2@127.0.0.1/INBOX", "must not hold a password"),
     ("imap://bounces@127.0.0.1/INBOX", "must be imaps://"),
     ("imaps://127.0.0.1/INBOX", "names no user")],
    ids=["password in the URL", "no TLS", "no user"],
)  # fmt: skip
def test_bad_imap_urls_are_refused(url: str, why: str, tmp_path: Path) -> None:
    """A URL with a password, without TLS or without a user: refused, never echoing a password."""
    result = run("--config", bounce_folder(tmp_path / "letter"), "bounces", "--imap", url)
    assert result.exit_code == 1 and f"--imap: {why}" in result.output
    assert "hunter2" not in result.output


def _client(server: Dovecot) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context)
    imap.login(server.user, server.password)
    return imap


def test_a_folder_named_with_spaces_and_accents_is_read(folder: Path, server: Dovecot) -> None:
    """imaps://.../Bounces%20R%C3%BCckl%C3%A4ufer: the folder is named to the server in IMAP's
    modified UTF-7 (RFC 3501 5.1.3), quoted; its bounce is applied."""
    named = '"Bounces R&APw-ckl&AOQ-ufer"'  # as another IMAP client names it
    with _client(server) as imap:
        assert imap.create(named)[0] == "OK"
        assert imap.append(named, "", None, fixture("postfix-refused.eml"))[0] == "OK"
    url = server.url("Bounces%20R%C3%BCckl%C3%A4ufer")
    result = run("bounces", "--imap", url, "--ca-file", server.ca_file, "--json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)["messages"]
    assert (outcome["email"], outcome["result"]) == ("someone@refuse.test", "hard")
    assert statuses(folder)["someone@refuse.test"] == "bounced"


def test_a_password_beyond_ascii_logs_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password with letters beyond ASCII (which LOGIN cannot carry) logs in, as UTF-8."""
    password = "pässwörd-für-bounces"  # noqa: S105  # a throwaway value
    monkeypatch.setenv("NEWSLETTER_SECRET", SCENARIO["secret"])
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", password)
    monkeypatch.chdir(bounce_folder(tmp_path / "letter"))
    with dovecot(password) as server:
        server.deliver("refused", fixture("postfix-refused.eml"))
        result = run("bounces", "--imap", server.url(), "--ca-file", server.ca_file)
    assert result.exit_code == 0, result.output
    assert password not in result.output
    assert "1 message(s): 1 hard" in result.output


def test_a_server_keeping_no_keywords_gets_seen_and_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose PERMANENTFLAGS has no \\* (Microsoft's IMAP): each message is marked
    \\Seen instead of the keyword (plus \\Flagged when it needs a person); a rerun finds
    nothing new and changes nothing."""
    from tests.imapd import imapd

    monkeypatch.setenv("NEWSLETTER_SECRET", SCENARIO["secret"])
    folder = bounce_folder(tmp_path / "letter")
    monkeypatch.chdir(folder)
    with imapd(tmp_path) as server:
        monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", server.password)
        server.deliver(fixture("postfix-refused.eml"))
        server.deliver(b"From: someone@example.net\nSubject: hello\n\nA question.\n")
        args = ("bounces", "--imap", server.url(), "--ca-file", server.ca_file, "--json")
        first = run(*args)
        assert first.exit_code == 0, first.output
        results = [m["result"] for m in json.loads(first.stdout)["messages"]]
        assert results == ["hard", "not a bounce"]
        assert server.flags == {1: {"\\Seen"}, 2: {"\\Seen", "\\Flagged"}}
        again = run(*args)
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["messages"] == []
    assert statuses(folder)["someone@refuse.test"] == "bounced"


def test_a_mailbox_too_big_for_one_search_answer_is_read_in_batches(
    folder: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """imaplib refuses a response line over its limit (1 MB: some 140,000 UIDs in one SEARCH
    answer); here the limit is made small and the folder holds more than one answer can list:
    the run still reads them all, a batch of messages at a time."""
    from newsletter.bounces import mailboxes

    monkeypatch.setattr(imaplib, "_MAXLINE", 1000)
    monkeypatch.setattr(mailboxes, "SEARCH_BATCH", 100)
    note = b"From: someone@example.net\nSubject: hello\n\nA question.\n"
    for n in range(300):  # 300 UIDs: over 1000 octets in one answer
        server.deliver(f"note{n:03}", note)
    found = imap_bounces(server)
    assert len(found["messages"]) == 300 + len(EXPECTED)
    assert statuses(folder)["someone@refuse.test"] == "bounced"

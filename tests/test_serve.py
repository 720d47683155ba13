"""`newsletter serve`: real HTTP requests to the real unsubscribe endpoint on a loopback port."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from newsletter import fileio
from newsletter.cli import app
from newsletter.config import load_config
from newsletter.message import MessageFactory
from newsletter.render import render_issue
from newsletter.serve import unsubscribe_app
from newsletter.subscribers import (
    journal,
    journal_path,
    read_list,
    rewrite,
    suppressed_path,
    suppression,
)
from newsletter.tokens import make_token
from tests.compose_helpers import sample_folder
from tests.serve_helpers import SECRET, make_folder, running, write_list
from tests.waits import HANG, wait_until

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PEOPLE = ["ada@example.org", "zofia@example.net", "jurgen@example.com"]


@dataclass
class Site:
    url: str  # http://127.0.0.1:PORT
    root: Path
    lists: list[Path]
    list_id: str

    def link(self, email: str, *, secret: bytes = SECRET, list_id: str = "") -> str:
        return f"{self.url}/unsubscribe/{make_token(secret, list_id or self.list_id, email)}"

    def statuses(self, path: Path | None = None) -> dict[str, str]:
        return {p.email: p.status for p in read_list(path or self.lists[0])}

    def snapshot(self) -> list[bytes]:
        return [path.read_bytes() for path in self.lists]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = make_folder(tmp_path)
    lists = [
        write_list(root / "subscribers" / "main.csv", PEOPLE),
        write_list(root / "subscribers" / "events.csv", ["ada@example.org", "bob@example.org"]),
    ]
    config = load_config(explicit=root)
    with running(unsubscribe_app(config, SECRET)) as url:
        yield Site(url, root, lists, config.list_id)


def post_one_click(url: str) -> httpx.Response:
    return httpx.post(url, headers=FORM, timeout=10, **ONE_CLICK)


def test_get_shows_a_button_and_changes_nothing(site: Site) -> None:
    """GET (what link scanners do) answers a page with a POST button and writes nothing."""
    before = site.snapshot()
    page = httpx.get(site.link("ada@example.org"), timeout=10)
    assert page.status_code == 200
    assert '<form method="post">' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert site.snapshot() == before
    assert not suppressed_path(site.root).exists()


def test_rfc8058_post_unsubscribes(site: Site) -> None:
    """The exact RFC 8058 POST sets unsubscribed and its time; other rows stay byte for byte."""
    before = site.lists[0].read_bytes().split(b"\r\n")
    answer = post_one_click(site.link("zofia@example.net"))
    assert answer.status_code == 200
    assert "You are unsubscribed" in answer.text
    folded = journal_path(site.lists[0])  # the change is in the list's journal: wait for the fold
    wait_until(lambda: not folded.exists(), "the journal folded into the list")
    after = site.lists[0].read_bytes().split(b"\r\n")
    changed = [n for n, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    assert changed == [2]
    row = next(p for p in read_list(site.lists[0]) if p.email == "zofia@example.net")
    assert row.status == "unsubscribed"
    assert row.fields["unsubscribed_at"].endswith("Z")


def test_multipart_post_unsubscribes(site: Site) -> None:
    """RFC 8058 also allows multipart/form-data: it unsubscribes too."""
    answer = httpx.post(
        site.link("jurgen@example.com"),
        files={"List-Unsubscribe": (None, "One-Click")},
        timeout=10,
    )
    assert answer.status_code == 200
    assert site.statuses()["jurgen@example.com"] == "unsubscribed"


def test_unsubscribe_reaches_every_list_holding_the_address(site: Site) -> None:
    """One POST changes the address in both lists and leaves the others subscribed."""
    assert post_one_click(site.link("ADA@Example.org")).status_code == 200
    assert site.statuses(site.lists[0])["ada@example.org"] == "unsubscribed"
    assert site.statuses(site.lists[1])["ada@example.org"] == "unsubscribed"
    assert site.statuses(site.lists[1])["bob@example.org"] == "subscribed"


def test_twice_is_harmless(site: Site) -> None:
    """A second POST answers 200 and leaves the files exactly as the first left them."""
    link = site.link("ada@example.org")
    assert post_one_click(link).status_code == 200
    after_first = site.snapshot()
    assert post_one_click(link).status_code == 200
    assert site.snapshot() == after_first


def test_address_on_no_list_is_suppressed_with_the_same_answer(site: Site) -> None:
    """An address no list holds gets a suppression entry and the very same page as a member."""
    member = post_one_click(site.link("ada@example.org"))
    stranger = post_one_click(site.link("nobody@example.org"))
    assert (member.status_code, member.text) == (stranger.status_code, stranger.text)
    digest = hashlib.sha256(b"nobody@example.org").hexdigest()
    assert digest in suppressed_path(site.root).read_text()


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-3], id="truncated"),
        pytest.param(lambda t: t[:20], id="cut-short"),
        pytest.param(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), id="last-char-altered"),
        pytest.param(lambda t: "x" + t[1:], id="first-char-altered"),
        pytest.param(lambda t: t + "AAAA", id="extended"),
        pytest.param(lambda t: "not a token at all", id="garbage"),
        pytest.param(lambda t: "a/b/../c", id="slashes"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "é" + t, id="non-ascii"),
        pytest.param(lambda t: t * 100, id="huge"),
    ],
)
def test_bad_tokens_get_400_and_change_nothing(site: Site, mangle) -> None:
    """Truncated, altered, garbage and empty tokens: 400 for GET and POST, nothing written."""
    token = site.link("ada@example.org").rsplit("/", 1)[1]
    url = f"{site.url}/unsubscribe/{mangle(token)}"
    before = site.snapshot()
    assert httpx.get(url, timeout=10).status_code == 400
    assert post_one_click(url).status_code == 400
    assert site.snapshot() == before
    assert not suppressed_path(site.root).exists()


def test_forged_tokens_reveal_nothing(site: Site) -> None:
    """Wrong secret, wrong list, member or not: one identical 400 page that names no address."""
    forged = [
        site.link("ada@example.org", secret=b"another secret"),
        site.link("nobody@example.org", secret=b"another secret"),
        site.link("ada@example.org", list_id="other.example.org"),
        f"{site.url}/unsubscribe/garbage",
    ]
    answers = [post_one_click(url) for url in forged]
    assert {a.status_code for a in answers} == {400}
    assert len({a.text for a in answers}) == 1
    assert "example.org" not in answers[0].text
    assert site.statuses()["ada@example.org"] == "subscribed"


def test_post_without_one_click_body_changes_nothing(site: Site) -> None:
    """A POST lacking List-Unsubscribe=One-Click is refused with 400 and writes nothing."""
    before = site.snapshot()
    answer = httpx.post(site.link("ada@example.org"), headers=FORM, content=b"x=1", timeout=10)
    assert answer.status_code == 400
    assert site.snapshot() == before


def test_oversized_body_is_refused(site: Site) -> None:
    """A body far larger than a one-click POST is refused without unsubscribing."""
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * 200_000
    answer = httpx.post(site.link("ada@example.org"), headers=FORM, content=body, timeout=10)
    assert answer.status_code == 400
    assert site.statuses()["ada@example.org"] == "subscribed"


def test_pages_keep_the_token_private(site: Site) -> None:
    """Every answer forbids caching and referrers: the token in the URL must not travel on."""
    answer = httpx.get(site.link("ada@example.org"), timeout=10)
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"


def test_log_has_time_list_and_hash_never_token_or_secret(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Each unsubscribe logs the time, the list and sha256 of the address; no token, no secret."""
    link = site.link("zofia@example.net")
    with caplog.at_level(logging.INFO, logger="newsletter.serve"):
        assert post_one_click(link).status_code == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"list={site.list_id}" in text
    assert hashlib.sha256(b"zofia@example.net").hexdigest() in text
    assert "time=20" in text
    token = link.rsplit("/", 1)[1]
    for secret_thing in (token, SECRET.decode(), "zofia"):
        assert secret_thing not in caplog.text


def test_routes_sit_under_base_url_path(tmp_path: Path) -> None:
    """base_url https://x.org/newsletter: the route is /newsletter/unsubscribe/{token} only."""
    root = make_folder(tmp_path, "https://x.example.org/newsletter")
    path = write_list(root / "subscribers" / "main.csv", PEOPLE)
    config = load_config(explicit=root)
    token = make_token(SECRET, config.list_id, "ada@example.org")
    with running(unsubscribe_app(config, SECRET)) as url:
        assert post_one_click(f"{url}/unsubscribe/{token}").status_code == 404
        assert post_one_click(f"{url}/newsletter/unsubscribe/{token}").status_code == 200
    assert {p.email: p.status for p in read_list(path)}["ada@example.org"] == "unsubscribed"


def test_serve_refuses_to_start_without_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without NEWSLETTER_SECRET (even with a stored one) `serve` exits 1 naming the variable."""
    root = make_folder(tmp_path)
    (root / ".newsletter").mkdir()
    (root / ".newsletter" / "secret").write_text("stored-by-an-outbox-send\n")
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    result = CliRunner().invoke(app, ["--config", str(root), "serve", "--port", "0"])
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET is not set" in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_command_runs_and_logs_no_token(tmp_path: Path) -> None:
    """`newsletter serve` as a real process: unsubscribes, logs the hash, never the token."""
    root = make_folder(tmp_path)
    path = write_list(root / "subscribers" / "main.csv", PEOPLE)
    port = free_port()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET.decode()}
    command = [sys.executable, "-m", "newsletter", "--config", str(root), "serve"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        link = f"http://127.0.0.1:{port}/unsubscribe/"
        link += make_token(SECRET, load_config(explicit=root).list_id, "ada@example.org")
        _wait_until_up(link, server)
        assert post_one_click(link).status_code == 200
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=HANG)
    assert {p.email: p.status for p in read_list(path)}["ada@example.org"] == "unsubscribed"
    assert hashlib.sha256(b"ada@example.org").hexdigest() in err
    assert link.rsplit("/", 1)[1] not in err and "ada@" not in err and SECRET.decode() not in err


def _wait_until_up(url: str, server: subprocess.Popen[str]) -> None:
    """Until `serve` answers (however long a busy machine takes to start it), or has exited."""

    def answers() -> bool:
        try:
            httpx.get(url, timeout=10)
        except httpx.TransportError:
            return False
        return True

    def alive() -> bool:
        return server.poll() is None

    wait_until(answers, "`newsletter serve` answering", alive=alive, stall=HANG)


def test_broken_list_still_records_the_unsubscribe(site: Site) -> None:
    """A list that cannot be read: 200 all the same, the address in the suppression file."""
    site.lists[1].write_bytes(b"email,name\r\nada@example.org,\xff\xfe broken\r\n")
    assert post_one_click(site.link("ada@example.org")).status_code == 200
    assert site.statuses(site.lists[0])["ada@example.org"] == "unsubscribed"
    digest = hashlib.sha256(b"ada@example.org").hexdigest()
    assert digest in suppressed_path(site.root).read_text()


def short_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locks of lists and of the suppression file give up after 0.2 s instead of waiting."""
    short = functools.partial(fileio.locked, timeout=0.2)
    monkeypatch.setattr(rewrite, "locked", short)
    monkeypatch.setattr(journal, "locked", short)
    monkeypatch.setattr(suppression, "locked", short)


def test_list_locked_by_a_long_rewrite_still_unsubscribes_at_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list held past the lock timeout (a long import elsewhere) does not hold an unsubscribe
    up: it is in the list's journal (every reader sees it) and folded once the lock is free."""
    short_locks(monkeypatch)
    with fileio.locked(site.lists[0]):
        answer = post_one_click(site.link("ada@example.org"))
        assert answer.status_code == 200
        assert site.statuses()["ada@example.org"] == "unsubscribed"
        assert journal_path(site.lists[0]).exists()
    wait_until(lambda: not journal_path(site.lists[0]).exists(), "the fold after the lock")
    assert b'ada@example.org,"Name, 0",unsubscribed,' in site.lists[0].read_bytes()
    assert not suppressed_path(site.root).exists()


def test_journal_locked_too_long_still_unsubscribes(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal held past the lock timeout: that list untouched, the suppression file has it."""
    short_locks(monkeypatch)
    with fileio.locked(journal_path(site.lists[0])):
        answer = post_one_click(site.link("ada@example.org"))
    assert answer.status_code == 200
    assert site.statuses()["ada@example.org"] == "subscribed"
    digest = hashlib.sha256(b"ada@example.org").hexdigest()
    assert digest in suppressed_path(site.root).read_text()


def test_suppression_file_locked_too_long_answers_503(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No list holds the address and the suppression file stays locked: 503 with Retry-After."""
    short_locks(monkeypatch)
    with fileio.locked(suppressed_path(site.root)):
        answer = post_one_click(site.link("nobody@example.org"))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "60"
    assert "unsubscribed" not in answer.text.lower()
    assert not suppressed_path(site.root).exists()


def test_the_link_a_real_message_carries_unsubscribes(tmp_path: Path) -> None:
    """List-Unsubscribe of a message built by message.py, POSTed as its -Post header says."""
    root = sample_folder(tmp_path)
    path = write_list(root / "subscribers" / "main.csv", PEOPLE)
    config = load_config(explicit=root)
    rendered = render_issue(root / "issues" / "2021-09-cohes3ion.toml", config)
    reader = next(p for p in read_list(path) if p.email == "zofia@example.net")
    message = BytesParser(policy=policy.default).parsebytes(
        MessageFactory(rendered, config, SECRET).build(reader)
    )
    public = re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"])).group(1)
    parts = urlsplit(public)
    assert parts.path.startswith(urlsplit(config.newsletter.base_url).path + "/unsubscribe/")
    with running(unsubscribe_app(config, SECRET)) as url:
        body = str(message["List-Unsubscribe-Post"]).encode()
        answer = httpx.post(url + parts.path, headers=FORM, content=body, timeout=10)
    assert answer.status_code == 200
    assert {p.email: p.status for p in read_list(path)}["zofia@example.net"] == "unsubscribed"

"""Drafts and the archive: `new` writes a draft, a draft is never sent to a list (a test copy
is fine), and the archive holds only issues sent to a list or marked `publish = true`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import Newsletter
from newsletter.errors import DraftIssue
from newsletter.issue import load_issue
from tests.send_helpers import ISSUE, make_folder, run, smtp_env
from tests.smtpd import SmtpServer

ATOM = "{http://www.w3.org/2005/Atom}"
OTHER = """
title = "Other news"
subject = "Other news"
date = 2021-10-20
[[blocks]]
kind = "text"
body = "Published before it is sent."
"""


def _as_draft(folder: Path) -> Path:
    """The sample issue, marked draft = true (a top-level key, before the tables)."""
    path = folder / ISSUE
    path.write_text("draft = true\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def _pages(folder: Path) -> list[str]:
    done = run(folder, "archive")
    assert done.returncode == 0, done.stderr
    return sorted(p.name for p in (folder / "site").glob("*.html") if p.name != "index.html")


def _ledgers(folder: Path) -> list[Path]:
    return sorted((folder / ".newsletter" / "sends").glob("*.sqlite"))


def test_new_writes_a_draft(tmp_path: Path) -> None:
    """`new` writes `draft = true`, and the file reads as a draft that checks clean."""
    folder = make_folder(tmp_path, 1)
    done = run(folder, "new", "November news")
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert load_issue(path).draft is True
    assert run(folder, "check", str(path)).returncode == 0


@pytest.mark.parametrize("to_smtp", [False, True], ids=["outbox", "smtp"])
def test_send_of_a_draft_is_refused_saying_how_to_undraft(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path, to_smtp: bool
) -> None:
    """`send` of a draft: exit 1, one error naming the file and how to un-draft; nothing is
    mailed or written (no outbox, no ledger)."""
    server = make_smtp_server()
    folder = make_folder(tmp_path, 2)
    _as_draft(folder)
    env = smtp_env(server.port) if to_smtp else None
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 1, done.stderr
    assert f"error: {ISSUE}: is a draft" in done.stderr
    assert "delete the line `draft = true`" in done.stderr
    assert "Traceback" not in done.stderr
    assert server.delivered() == {}
    assert not (folder / "outbox").exists()
    assert _ledgers(folder) == []


def test_plan_of_a_draft_is_refused_by_the_library(tmp_path: Path) -> None:
    """Newsletter.plan refuses a draft too (DraftIssue with the path), not only the CLI."""
    folder = make_folder(tmp_path, 1)
    path = _as_draft(folder)
    with pytest.raises(DraftIssue) as caught:
        Newsletter.open(folder).plan(path)
    assert caught.value.path == path


def test_test_copy_of_a_draft_is_sent(tmp_path: Path) -> None:
    """A draft can be tested: `test` sends its one copy."""
    folder = make_folder(tmp_path, 1)
    _as_draft(folder)
    done = run(folder, "test", ISSUE, "--to", "me@example.org")
    assert done.returncode == 0, done.stderr
    assert len(list((folder / "outbox" / "new").iterdir())) == 1


def test_undrafted_issue_is_sent(tmp_path: Path) -> None:
    """Once `draft = true` is deleted, the same issue sends."""
    folder = make_folder(tmp_path, 1)
    path = _as_draft(folder)
    path.write_text(path.read_text(encoding="utf-8").replace("draft = true\n", "", 1))
    assert run(folder, "send", ISSUE, "--yes").returncode == 0


def test_archive_holds_issues_sent_over_smtp_or_marked_publish(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """Unsent: not in the archive (a send to the outbox does not count); `publish = true`: in
    it; after a send to a list over SMTP: in it."""
    server = make_smtp_server()
    folder = make_folder(tmp_path, 2)
    (folder / "issues" / "2021-10-other.toml").write_text("publish = true\n" + OTHER)
    assert _pages(folder) == ["2021-10-other.html"]
    assert run(folder, "send", ISSUE, "--yes").returncode == 0  # into the outbox
    assert _pages(folder) == ["2021-10-other.html"]
    assert run(folder, "send", ISSUE, "--yes", env=smtp_env(server.port)).returncode == 0
    assert _pages(folder) == ["2021-09-cohes3ion.html", "2021-10-other.html"]


def test_page_of_an_issue_no_longer_published_is_removed(tmp_path: Path) -> None:
    """An issue whose `publish = true` is taken back loses its page at the next build."""
    folder = make_folder(tmp_path, 1)
    path = folder / "issues" / "2021-10-other.toml"
    path.write_text("publish = true\n" + OTHER)
    assert _pages(folder) == ["2021-10-other.html"]
    path.write_text(OTHER)
    assert _pages(folder) == []


def test_fresh_folder_archives_nothing_and_exits_0(tmp_path: Path) -> None:
    """The skeleton `init` writes is a draft: the archive of a fresh folder is an empty index
    and a feed without entries, exit 0."""
    folder = tmp_path / "news"
    assert run(tmp_path, "init", str(folder)).returncode == 0
    done = run(folder, "archive")
    assert done.returncode == 0, done.stderr
    site = folder / "site"
    assert sorted(p.name for p in site.iterdir()) == ["feed.xml", "index.html"]
    assert "No issues yet." in (site / "index.html").read_text(encoding="utf-8")
    feed = ET.parse(site / "feed.xml").getroot()  # noqa: S314  # the file this test just built
    assert feed.tag == f"{ATOM}feed" and feed.findall(f"{ATOM}entry") == []
    assert "0 issue(s) archived" in done.stderr


def test_draft_that_says_publish_is_an_error(tmp_path: Path) -> None:
    """`draft = true` with `publish = true` contradicts itself: check names the key and line."""
    folder = make_folder(tmp_path, 1)
    path = folder / "issues" / "2021-10-other.toml"
    path.write_text("draft = true\npublish = true\n" + OTHER)
    done = run(folder, "check", str(path))
    assert done.returncode == 1
    assert f"{path}:2: publish: a draft is never published" in done.stdout

"""`newsletter archive`: static pages, index and Atom feed that parse, link up and leak nothing."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from newsletter.config import load_config
from newsletter.render import render_issue
from tests.compose_helpers import run, sample_folder, write

ATOM = "{http://www.w3.org/2005/Atom}"
BASE_URL = "https://cohes3ion.example.org/newsletter"  # the sample's base_url
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip
LATER = """
title = "Later news"
subject = "Hello {{ subscriber.name | default('friend') }}, the October news"
preheader = "For {{ subscriber.email }} at {{ subscriber.company }}"
date = 2021-10-20
[[blocks]]
kind = "text"
body = "Dear {{ subscriber.first_name }}, see [the September issue](2021-09-cohes3ion.html)."
"""
DRAFT = """
title = "Unfinished"
subject = "Not yet"
date = 2021-11-01
draft = true
[[blocks]]
kind = "text"
body = "Work in progress"
"""
BROKEN_DRAFT = 'title = "Half"\ndraft = true\nnonsense = 1\n'
EARLY = LATER.replace("2021-10-20", "2021-08-01").replace("October", "August")
PUBLISH = "publish = true\n"  # in the archive without a send (tests/test_drafts.py: the rule)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = sample_folder(tmp_path)
    sample = root / "issues" / "2021-09-cohes3ion.toml"
    sample.write_text(PUBLISH + sample.read_text(encoding="utf-8"), encoding="utf-8")
    write(root / "issues" / "2021-10-later.toml", PUBLISH + LATER)
    write(root / "issues" / "2021-08-early.toml", PUBLISH + EARLY)
    write(root / "issues" / "2021-11-draft.toml", DRAFT)
    write(root / "issues" / "2021-12-broken-draft.toml", BROKEN_DRAFT)
    return root


def build(root: Path, output: Path | None = None) -> Path:
    site = output or root / "site"
    result = run("--config", root, "archive", "-o", site)
    assert result.exit_code == 0, result.output
    return site


class Checker(HTMLParser):
    """Collects links and checks that every element closes in order (void ones need not)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.links: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("href", "src") and v]
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'} at {self.getpos()}")
            return
        self.open.pop()


def parse(page: Path) -> Checker:
    checker = Checker()
    checker.feed(page.read_text(encoding="utf-8"))
    checker.close()
    return checker


def test_one_page_per_published_issue_named_by_slug(folder: Path) -> None:
    """Pages are <slug>.html at the site root; drafts (even broken ones) are left out."""
    site = build(folder)
    pages = sorted(p.name for p in site.glob("*.html"))
    assert pages == [
        "2021-08-early.html",
        "2021-09-cohes3ion.html",
        "2021-10-later.html",
        "index.html",
    ]


def test_every_page_parses(folder: Path) -> None:
    """Every page's elements open and close in order, and all of them close."""
    site = build(folder)
    for page in site.glob("*.html"):
        checker = parse(page)
        assert checker.errors == [], page.name
        assert checker.open == [], page.name


def test_every_internal_link_resolves_inside_the_site(folder: Path) -> None:
    """Relative links and links under base_url name files that exist in site/."""
    site = build(folder)
    checked = 0
    for page in site.glob("*.html"):
        for link in parse(page).links:
            target = _internal_target(site, link)
            if target is None:
                continue
            assert target.resolve().is_relative_to(site.resolve()), (page.name, link)
            assert target.is_file(), (page.name, link)
            checked += 1
    assert checked >= 3 * 4  # each issue page: index, feed, its own web URL, unsubscribe


def _internal_target(site: Path, link: str) -> Path | None:
    if link.startswith(BASE_URL + "/"):
        return site / link.removeprefix(BASE_URL + "/")
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith("#"):
        return None
    return site / parts.path


def test_feed_is_atom_with_one_entry_per_issue(folder: Path) -> None:
    """feed.xml parses as Atom: the namespace, one entry per published issue, links to pages."""
    site = build(folder)
    root = ET.parse(site / "feed.xml").getroot()  # noqa: S314  # the file this test just built
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 3
    for entry in entries:
        for name in ("id", "title", "updated"):
            assert entry.findtext(f"{ATOM}{name}"), name
        href = entry.find(f"{ATOM}link").get("href")
        assert (site / href.removeprefix(BASE_URL + "/")).is_file()
    updated = [e.findtext(f"{ATOM}updated") for e in entries]
    assert updated == sorted(updated, reverse=True)
    assert root.findtext(f"{ATOM}updated") == updated[0]


def test_index_lists_issues_newest_first(folder: Path) -> None:
    """index.html links the pages in date order, newest first."""
    site = build(folder)
    links = [link for link in parse(site / "index.html").links if link != "feed.xml"]
    assert links == ["2021-10-later.html", "2021-09-cohes3ion.html", "2021-08-early.html"]


def test_merge_fields_become_neutral_text(folder: Path) -> None:
    """Defaults and neutral words replace merge fields; no token, address or marker remains."""
    site = build(folder)
    page = (site / "2021-10-later.html").read_text(encoding="utf-8")
    assert "Hello friend, the October news" in page
    assert "Dear reader," in page
    for everything in [*site.iterdir()]:
        text = everything.read_text(encoding="utf-8")
        for leak in ("token=", "/unsubscribe/", "zzNLMF", "{{"):
            assert leak not in text, (everything.name, leak)


def test_output_is_deterministic(folder: Path, tmp_path: Path) -> None:
    """Two builds write the same bytes, file for file."""
    first, second = build(folder, tmp_path / "one"), build(folder, tmp_path / "two")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_builds_without_network(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every socket connection and name lookup failing, the archive still builds."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    site = build(folder)
    assert (site / "feed.xml").is_file()


def test_view_in_browser_link_of_the_email_is_an_archive_page(folder: Path) -> None:
    """The email's "view in browser" URL, under base_url, is a page the archive wrote."""
    site = build(folder)
    rendered = render_issue(folder / "issues" / "2021-10-later.toml", load_config(explicit=folder))
    html = "".join(part for part in rendered.html if isinstance(part, str))
    assert f'href="{BASE_URL}/2021-10-later.html"' in html
    assert (site / "2021-10-later.html").is_file()


def test_personal_link_in_an_issue_stops_the_build(folder: Path) -> None:
    """An issue linking with token= is refused, naming the file; no site is written."""
    leaky = PUBLISH + LATER.replace("2021-09-cohes3ion.html", "https://x.example.org/?token=abc")
    write(folder / "issues" / "2021-10-later.toml", leaky)
    result = run("--config", folder, "archive")
    assert result.exit_code == 1
    assert "2021-10-later.toml" in result.output and "token=" in result.output
    assert not (folder / "site").exists()


def test_broken_published_issue_is_reported_and_nothing_written(folder: Path) -> None:
    """A published issue with an error: exit 1 with file and key; no site is written."""
    write(folder / "issues" / "2021-10-later.toml", PUBLISH + LATER + "bogus = 1\n")
    result = run("--config", folder, "archive")
    assert result.exit_code == 1
    assert "2021-10-later.toml" in result.output and "bogus" in result.output
    assert not (folder / "site").exists()


def test_page_of_an_issue_turned_draft_is_removed(folder: Path) -> None:
    """Rebuilding after an issue became a draft removes its old page, and only ours."""
    site = build(folder)
    write(site / "about.html", "<!doctype html><p>Mine</p>")
    write(folder / "issues" / "2021-08-early.toml", "draft = true\n" + EARLY)
    site = build(folder)
    assert not (site / "2021-08-early.html").exists()
    assert (site / "about.html").is_file()


def test_hidden_files_in_issues_are_not_issues(folder: Path) -> None:
    """An editor's lock file (`.#x.toml`, a dangling link while the issue has unsaved edits)
    or macOS's `._x.toml` does not stop the build: the shell's `*.toml` skips them too."""
    (folder / "issues" / ".#2021-10-later.toml").symlink_to("user@host.1234")
    write(folder / "issues" / "._2021-10-later.toml", "\x00\x05\x16\x07")
    result = run("--config", folder, "archive")
    assert result.exit_code == 0, result.output
    assert (folder / "site" / "2021-10-later.html").is_file()

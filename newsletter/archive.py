"""The static web archive: every published issue as `<slug>.html`, an index, an Atom feed.

Published: sent to a list (the caller names the slugs its send ledgers show sent; api.py reads
them) or marked `publish = true`, and never a draft. So the skeleton `init` writes, an issue only
tested or rehearsed into the outbox, and a draft stay off the public site.

Emails link to `{base_url}/<slug>.html` ("view in browser"), so pages sit at the site's root under
those names. A page is the email's own HTML with merge fields filled by neutral text (a field's
default, else a neutral word): no token, no address, and the unsubscribe link points at the
archive index. Output is deterministic (feed times come from issue dates) and needs no network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from collections.abc import Callable, Collection
from pathlib import Path

from newsletter.config import Config
from newsletter.errors import InvalidInput, NotForArchive, Problem
from newsletter.fileio import PUBLIC_FILE, atomic_write
from newsletter.issue import load_issue
from newsletter.models import Field, Issue, Rendered
from newsletter.render import fill, longdate, render

GENERATOR = '<meta name="generator" content="newsletter archive">'
INDEX = "index.html"
FEED = "feed.xml"
_LEAKS = ("token=", "/unsubscribe/")  # what must never reach a public page
_BODY_TAG = re.compile(r"<body[^>]*>")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One archived issue: what the index and the feed say about it."""

    issue: Issue
    title: str
    summary: str
    page: str  # HTML of <slug>.html

    @property
    def file_name(self) -> str:
        return f"{self.issue.slug}.html"


@dataclasses.dataclass(frozen=True)
class Archive:
    folder: Path
    pages: list[Path]
    index: Path
    feed: Path
    removed: list[Path]  # pages of issues that are gone, became drafts or are not published


def build_archive(
    config: Config, output: Path, issues: Path | None = None, *, sent: Collection[str] = ()
) -> Archive:
    """Write the archive of `issues` (default: issues/ in the newsletter folder) into `output`:
    the issues whose slug is in `sent` or that say `publish = true`. With none, an index that
    says so and an empty feed."""
    chosen = published(config, sent, issues)
    entries = [archive_entry(issue, render(issue, config)) for issue in chosen]
    entries.sort(key=lambda e: (e.issue.date, e.issue.slug), reverse=True)
    pages = [_write(output / e.file_name, e.page.encode()) for e in entries]
    index = _write(output / INDEX, index_page(entries, config).encode())
    feed = _write(output / FEED, atom_feed(entries, config))
    removed = _remove_stale(output, {p.name for p in pages})
    return Archive(output, pages, index, feed, removed)


# ---------------------------------------------------------------------------------------------
# Which issues


def published(config: Config, sent: Collection[str], folder: Path | None = None) -> list[Issue]:
    """The issues of the archive: not drafts, and sent to a list (slug in `sent`) or marked
    `publish = true`; in file-name order."""
    return [i for i in finished_issues(config, folder) if i.publish or i.slug in sent]


def finished_issues(config: Config, folder: Path | None = None) -> list[Issue]:
    """Every issue that is not a draft, in file-name order; all problems at once, else none."""
    folder = folder or config.root / "issues"
    if not folder.is_dir():
        raise InvalidInput.one(folder, "no such folder: the archive is built from issue files")
    issues: list[Issue] = []
    problems: list[Problem] = []
    for path in sorted(folder.glob("[!.]*.toml")):  # not hidden: editors' lock files
        try:
            issue = load_issue(path)
        except InvalidInput as exc:
            if not _marked_draft(path):  # a draft may be unfinished: it is not published anyway
                problems.extend(exc.problems)
            continue
        if not issue.draft:
            issues.append(issue)
    problems.extend(_same_slug(issues))
    if problems:
        raise InvalidInput(problems)
    return issues


def _marked_draft(path: Path) -> bool:
    from newsletter import tomlsource

    try:  # read as load_issue reads it (byte-order mark, nesting bound), errors included
        return tomlsource.load(path)[0].get("draft") is True
    except InvalidInput:
        return False


def _same_slug(issues: list[Issue]) -> list[Problem]:
    first: dict[str, Path] = {}
    problems = []
    for issue in issues:
        if issue.slug in first:
            message = f"slug {issue.slug!r} is also {first[issue.slug]}'s: each page needs its own"
            problems.append(Problem(issue.path, message, field="slug"))
        first.setdefault(issue.slug, issue.path)
    return problems


# ---------------------------------------------------------------------------------------------
# Pages


def neutral_value(field: Field) -> str:
    """A merge field on a public page: its default, else a word that names nobody."""
    if field.source == "message":
        return INDEX if field.name == "unsubscribe_url" else ""
    if field.default:
        return field.default
    return "your address" if field.name == "email" else "reader"


def archive_entry(issue: Issue, rendered: Rendered) -> Entry:
    title = fill(rendered.subject, neutral_value, html=False)
    summary = fill(rendered.preheader, neutral_value, html=False) or title
    page = _with_navigation(fill(rendered.html, neutral_value, html=True), title)
    for leak in _LEAKS:
        if leak in page:
            raise NotForArchive(issue.path, leak)
    return Entry(issue, title, summary, page)


def _with_navigation(page: str, title: str) -> str:
    """The email's HTML plus a link back to the index and the feed's address."""
    head = (
        f"{GENERATOR}\n"
        f'<link rel="alternate" type="application/atom+xml" href="{FEED}">\n'
        f'<meta property="og:title" content="{html.escape(title)}">\n'
    )
    nav = (
        '<div style="font-family: Helvetica, Arial, sans-serif; font-size: 14px; '
        f'text-align: center; padding: 8px"><a href="{INDEX}">All issues</a> · '
        f'<a href="{FEED}">Feed</a></div>'
    )
    page = page.replace("</head>", head + "</head>", 1)
    match = _BODY_TAG.search(page)
    return page[: match.end()] + nav + page[match.end() :] if match else nav + page


def index_page(entries: list[Entry], config: Config) -> str:
    name = html.escape(config.newsletter.name)
    items = "\n".join(
        f'<li><a href="{e.file_name}">{html.escape(e.title)}</a>'
        f"<br><small>{longdate(e.issue.date)} · {html.escape(e.summary)}</small></li>"
        for e in entries
    )
    return _INDEX.format(
        lang=html.escape(config.newsletter.language),
        name=name,
        generator=GENERATOR,
        feed=FEED,
        accent=config.newsletter.accent_colour,
        items=items or "<li>No issues yet.</li>",
    )


_INDEX = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{generator}
<title>{name}: all issues</title>
<link rel="alternate" type="application/atom+xml" title="{name}" href="{feed}">
<style>
body {{ font-family: Helvetica, Arial, sans-serif; max-width: 40em; margin: 2em auto;
  padding: 0 1em; color: #222; line-height: 1.5; }}
a {{ color: {accent}; }}
li {{ margin: 0 0 1em; }}
</style>
</head>
<body>
<h1>{name}</h1>
<p>Every issue, newest first. <a href="{feed}">Atom feed</a></p>
<ul>
{items}
</ul>
</body>
</html>
"""


# ---------------------------------------------------------------------------------------------
# Feed


def atom_feed(entries: list[Entry], config: Config) -> bytes:
    """An Atom feed, one entry per issue, newest first; times are the issue dates (midnight UTC)."""
    from feedgen.feed import FeedGenerator

    url = _url_maker(config.newsletter.base_url)
    feed = FeedGenerator()
    feed.id(url(FEED) if config.newsletter.base_url else f"tag:{config.list_id},2000:archive")
    feed.title(config.newsletter.name)
    feed.author({"name": config.newsletter.name})
    feed.link(href=url(INDEX), rel="alternate")
    feed.link(href=url(FEED), rel="self")
    feed.language(config.newsletter.language)
    feed.generator("newsletter")  # no version: upgrading the tool must not change the feed
    newest = max((e.issue.date for e in entries), default=dt.date(2000, 1, 1))
    feed.updated(_midnight(newest))
    for entry in entries:
        item = feed.add_entry(order="append")
        item.id(url(entry.file_name) if config.newsletter.base_url else _tag(config, entry))
        item.title(entry.title)
        item.link(href=url(entry.file_name), rel="alternate")
        item.summary(entry.summary)
        item.published(_midnight(entry.issue.date))
        item.updated(_midnight(entry.issue.date))
    return bytes(feed.atom_str(pretty=True))


def _url_maker(base_url: str) -> Callable[[str], str]:
    return lambda name: f"{base_url}/{name}" if base_url else name


def _tag(config: Config, entry: Entry) -> str:
    return f"tag:{config.list_id},{entry.issue.date.isoformat()}:{entry.issue.slug}"


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# Files


def _write(path: Path, data: bytes) -> Path:
    atomic_write(path, lambda handle: handle.write(data), mode=PUBLIC_FILE)
    return path


def _remove_stale(folder: Path, kept: set[str]) -> list[Path]:
    """Delete pages this command wrote before for issues no longer published (ours only)."""
    removed = []
    for path in sorted(folder.glob("*.html")):
        if path.name in kept or path.name == INDEX:
            continue
        if GENERATOR.encode() in path.read_bytes():
            path.unlink()
            removed.append(path)
    return removed

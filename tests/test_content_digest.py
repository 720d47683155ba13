"""The content digest names what an issue says: not its file, not its slug, and not the
optional keys a later version adds while an issue leaves them at their default."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

from newsletter.issue import load_issue
from newsletter.render import canonical, content_digest
from tests.send_helpers import ISSUE, REPO


def versions() -> tuple[object, object]:
    """One block as an older version defined it, and as a newer one with an optional key."""

    @dataclasses.dataclass(frozen=True)
    class Article:
        heading: str
        body: str = ""

    older = Article("News", "text")

    @dataclasses.dataclass(frozen=True)  # the same name, on purpose
    class Article:
        heading: str
        body: str = ""
        id: str = ""
        tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

    return older, Article("News", "text")


def test_an_optional_key_at_its_default_leaves_the_digest_alone() -> None:
    """A field a new version adds, left at its default, is not part of the canonical form."""
    older, newer = versions()
    assert canonical(older) == canonical(newer)


def test_a_value_that_differs_from_the_default_counts() -> None:
    older, newer = versions()
    assert canonical(dataclasses.replace(newer, id="agenda")) != canonical(older)


def test_file_name_slug_and_publish_do_not_count(tmp_path: Path) -> None:
    """The same text under another file name, or marked publish = true, is the same issue."""
    copy = tmp_path / "2021-09-renamed.toml"
    shutil.copy(REPO / ISSUE, copy)
    issue = load_issue(REPO / ISSUE)
    assert content_digest(load_issue(copy)) == content_digest(issue)
    assert content_digest(dataclasses.replace(issue, publish=True)) == content_digest(issue)


def test_what_the_issue_says_counts() -> None:
    issue = load_issue(REPO / ISSUE)
    assert content_digest(dataclasses.replace(issue, subject="Other")) != content_digest(issue)
    moved = dataclasses.replace(issue, date=issue.date + dt.timedelta(days=1))
    assert content_digest(moved) != content_digest(issue)

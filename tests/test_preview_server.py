"""`preview --serve`: a real server on loopback that re-renders on change and shows errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from newsletter.config import load_config
from newsletter.serve import preview_app
from tests.compose_helpers import MINIMAL_CONFIG, write
from tests.serve_helpers import running

ISSUE = (
    'title = "T"\nsubject = "S"\ndate = 2024-01-02\n[[blocks]]\nkind = "text"\nbody = "{body}"\n'
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(tmp_path / "issues" / "x.toml", ISSUE.format(body="First version"))
    with running(preview_app(issue, load_config(explicit=tmp_path))) as url:
        yield url, issue


def _edit(path: Path, body: str) -> None:
    _write(path, ISSUE.format(body=body))


def _write(path: Path, text: str) -> None:
    """Write `text` so that the server sees a change, however coarse the file clock."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    while path.stat().st_mtime_ns == before:
        time.sleep(0.01)
        path.write_text(text)


def test_serves_the_rendered_issue_with_reload_script(served) -> None:
    """GET / is the rendered HTML plus the script that reloads it on change."""
    url, _ = served
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert "First version" in page.text
    assert "/__version" in page.text
    assert "First version" in httpx.get(url + "/text", timeout=10).text


def test_change_bumps_version_and_content(served) -> None:
    """Saving the issue changes /__version and the page shows the new text."""
    url, issue = served
    before = httpx.get(url + "/__version", timeout=10).text
    _edit(issue, "Second version")
    assert httpx.get(url + "/__version", timeout=10).text != before
    assert "Second version" in httpx.get(url + "/", timeout=10).text


def test_errors_show_in_the_page(served) -> None:
    """A broken issue shows its located error in the page; the server keeps running."""
    url, issue = served
    _write(issue, ISSUE.format(body="x") + "bogus = 1\n")
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert "does not render" in page.text
    assert "bogus: unknown key" in page.text
    _edit(issue, "Fixed again")
    assert "Fixed again" in httpx.get(url + "/", timeout=10).text

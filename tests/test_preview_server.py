"""`preview --serve`: a real server on loopback that re-renders on change and shows errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from newsletter.config import load_config
from newsletter.serve import preview_app
from tests.compose_helpers import MINIMAL_CONFIG, write

ISSUE = (
    'title = "T"\nsubject = "S"\ndate = 2024-01-02\n[[blocks]]\nkind = "text"\nbody = "{body}"\n'
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(tmp_path / "issues" / "x.toml", ISSUE.format(body="First version"))
    app = preview_app(issue, load_config(explicit=tmp_path))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", issue
    server.should_exit = True
    thread.join(timeout=10)


def _edit(path: Path, body: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(ISSUE.format(body=body))
    while path.stat().st_mtime_ns == before:  # coarse clocks: make the change visible
        time.sleep(0.01)
        path.write_text(ISSUE.format(body=body))


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
    issue.write_text(ISSUE.format(body="x") + "bogus = 1\n")
    time.sleep(0.05)
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert "does not render" in page.text
    assert "bogus: unknown key" in page.text
    _edit(issue, "Fixed again")
    assert "Fixed again" in httpx.get(url + "/", timeout=10).text

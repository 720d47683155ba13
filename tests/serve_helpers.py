"""Shared helpers for the unsubscribe tests: a newsletter folder with a list, a live server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from tests.compose_helpers import write
from tests.waits import HANG, wait_until

SECRET = b"test-secret-not-for-production-0123456789"
HEADER = "email,name,status,tags,subscribed_at,unsubscribed_at,source"


def config_text(base_url: str = "https://news.example.org") -> str:
    return f"""
    [newsletter]
    name = "Test news"
    from = "Test news <news@example.org>"
    postal_address = "1 Test Street, Testtown"
    base_url = "{base_url}"
    """


def make_folder(root: Path, base_url: str = "https://news.example.org") -> Path:
    write(root / "newsletter.toml", config_text(base_url))
    (root / "subscribers").mkdir(exist_ok=True)
    return root


def write_list(path: Path, emails: list[str]) -> Path:
    """A list of subscribed people, CRLF as the tool writes it."""
    rows = [HEADER] + [
        f'{email},"Name, {n}",subscribed,t,2024-01-0{1 + n % 9}T00:00:00Z,,test'
        for n, email in enumerate(emails)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return path


@contextlib.contextmanager
def running(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn serving", alive=thread.is_alive, stall=HANG)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(HANG)

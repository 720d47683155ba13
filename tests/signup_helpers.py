"""Shared helpers for the sign-up tests: a folder, the endpoint in-process, the outbox read back."""

from __future__ import annotations

import asyncio
import mailbox
import re
import socket
import subprocess
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as email_policy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.types import ASGIApp

from newsletter.config import Config, load_config
from newsletter.serve import unsubscribe_app
from tests.compose_helpers import write
from tests.serve_helpers import SECRET, config_text
from tests.waits import HANG, wait_until

BASE = "https://news.example.org"
VISITOR = ("203.0.113.9", 5000)  # a client on the Internet (not a trusted proxy)


def folder_with(root: Path, signup: str = "") -> Path:
    """A newsletter folder; `signup`: the [signup] table's lines."""
    write(root / "newsletter.toml", config_text(BASE) + (f"\n[signup]\n{signup}\n" * bool(signup)))
    (root / "subscribers").mkdir(exist_ok=True)
    return root


def app_for(root: Path) -> tuple[ASGIApp, Config]:
    config = load_config(explicit=root)
    return unsubscribe_app(config, SECRET), config


def call(
    app: ASGIApp,
    method: str,
    url: str,
    *,
    client: tuple[str, int] = VISITOR,
    **kwargs: Any,
) -> httpx.Response:
    """One request to the app in this process. The answer comes back once the app is done,
    work after the answer (the confirmation mail) included."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            return await http.request(method, url, **kwargs)

    return asyncio.run(go())


def sign_up(
    app: ASGIApp,
    email: str,
    *,
    client: tuple[str, int] = VISITOR,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    """POST the form with `email` and `fields`, from `client`."""
    data = {"email": email, **fields}
    return call(app, "POST", "/subscribe", data=data, client=client, headers=headers or {})


def outbox(root: Path) -> list[EmailMessage]:
    """Every message in the outbox Maildir (in no particular order: Maildir names do not sort
    by time)."""
    folder = root / "outbox"
    if not all((folder / part).is_dir() for part in ("tmp", "new", "cur")):
        return []  # the transport may be making the Maildir right now
    box = mailbox.Maildir(folder, create=False)
    files = sorted((folder / "new").iterdir())
    parser = BytesParser(policy=email_policy)
    found = [parser.parsebytes(p.read_bytes()) for p in files]
    assert len(found) == len(box)
    return [m for m in found if isinstance(m, EmailMessage)]


def link_in(message: EmailMessage) -> str:
    """The path of the confirmation link in a message."""
    body = message.get_body(("plain",))
    assert body is not None
    [url] = re.findall(r"https://\S+/confirm/\S+", body.get_content())
    return urlsplit(url).path


def link_for(root: Path, email: str) -> str:
    """The path of the confirmation link mailed to `email` (exactly one such mail)."""
    [message] = [m for m in outbox(root) if m["To"] == email and "Confirm" in m["Subject"]]
    return link_in(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, server: subprocess.Popen[str]) -> None:
    """Until `serve` answers (however long a busy machine takes to start it), or has exited."""

    def answers() -> bool:
        try:
            httpx.get(url, timeout=10)
        except httpx.TransportError:
            return False
        return True

    wait_until(
        answers, "`newsletter serve` answering", alive=lambda: server.poll() is None, stall=HANG
    )

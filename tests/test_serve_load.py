"""Holding up: 1,000 one-click POSTs from 50 concurrent clients while `subscribers add` runs in
other processes; afterwards the file holds every change once (none lost, no row twice)."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from newsletter.config import load_config
from newsletter.serve import unsubscribe_app
from newsletter.subscribers import check_lists, journal_path, read_list
from newsletter.tokens import make_token
from tests.serve_helpers import SECRET, make_folder, running, write_list
from tests.waits import HANG

TARGETS = 1000
CLIENTS = 50
ADDERS = 2  # processes running `newsletter subscribers add` at any moment
MAX_ADDS = 15  # per adder: bounds the test if the load is slow
PAUSE = 0.3  # seconds between adds: each process start costs CPU the server needs too


def people() -> list[str]:
    """1,000 readers who will unsubscribe, with 200 who stay interleaved among them."""
    emails = []
    for n in range(TARGETS):
        emails.append(f"reader{n}@example.org")
        if n % 5 == 0:
            emails.append(f"stays{n}@example.net")
    return emails


async def post_all(urls: list[str]) -> list[int]:
    """POST RFC 8058's body to every URL from CLIENTS clients at once; the status codes."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    codes: list[int] = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not queue.empty():
                url = queue.get_nowait()
                answer = await http.post(
                    url,
                    content=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                codes.append(answer.status_code)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return codes


def adder(root: Path, name: str, stop: threading.Event, added: list[str]) -> None:
    """Run `newsletter subscribers add` as real processes, one after another, until `stop`."""
    for n in range(MAX_ADDS):
        if stop.is_set():
            return
        email = f"new-{name}-{n}@example.com"
        command = [sys.executable, "-m", "newsletter", "--config", str(root)]
        command += ["subscribers", "add", email, "--list", "main", "--name", f"New {n}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=HANG, check=False)
        assert done.returncode == 0, done.stderr
        added.append(email)
        stop.wait(PAUSE)


def rows_by_email(path: Path) -> dict[str, list[str]]:
    """The rows of the CSV file itself (not its journal), by address; a repeated one fails."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    by_email = {row[0]: row for row in rows}
    assert len(by_email) == len(rows), "a row is in the file twice"
    return by_email


def test_thousand_unsubscribes_land_while_adds_run(tmp_path: Path) -> None:
    """All 1,000 land, the list stays valid CSV, other rows are untouched, every add lands."""
    root = make_folder(tmp_path)
    path = write_list(root / "subscribers" / "main.csv", people())
    before = rows_by_email(path)
    config = load_config(explicit=root)
    targets = [f"reader{n}@example.org" for n in range(TARGETS)]
    added: list[str] = []
    stop = threading.Event()
    adders = [
        threading.Thread(target=adder, args=(root, str(n), stop, added)) for n in range(ADDERS)
    ]
    with running(unsubscribe_app(config, SECRET)) as url:
        urls = [f"{url}/unsubscribe/{make_token(SECRET, config.list_id, e)}" for e in targets]
        for thread in adders:
            thread.start()
        started = time.perf_counter()
        codes = asyncio.run(post_all(urls))
        elapsed = time.perf_counter() - started
        stop.set()
        for thread in adders:
            thread.join(HANG)  # each finishes its current `add`, however slow the machine
            assert not thread.is_alive(), "a `subscribers add` process hung"
    print(f"\n{TARGETS} unsubscribes from {CLIENTS} clients: {elapsed:.1f} s, {len(added)} adds")

    assert codes == [200] * TARGETS
    assert not journal_path(path).exists()  # serve folded everything before it stopped
    assert check_lists([path]).errors == []
    after = rows_by_email(path)
    assert {len(row) for row in after.values()} == {len(before["email"])}
    statuses = {p.email: p.status for p in read_list(path)}
    assert all(statuses[email] == "unsubscribed" for email in targets)
    untouched = [e for e in before if e not in targets]
    assert [after[e] for e in untouched] == [before[e] for e in untouched]
    assert added and all(statuses[email] == "subscribed" for email in added)
    assert len(after) == len(before) + len(added)

"""Unsubscribes and edits on big lists: the two figures of docs/subscribers.md.

1. The endpoint under load: 1,000 one-click POSTs from 50 concurrent clients on a 100,000-row
   list, while `newsletter subscribers add` runs in other processes (two adders, each starting
   the next add 0.3 s after the last). The real `newsletter serve` runs as a process of its
   own on a loopback port; each POST is answered once its change is durable (fsynced in the
   list's journal). Then SIGTERM: every unsubscribe and every add must be in the CSV file,
   once, and no journal left (the round fails otherwise).
2. One `newsletter subscribers unsubscribe` on a 1,000,000-row list: the whole command (a
   fresh process, start to exit), the change in the CSV file when it exits.

Prints each round, the median of the rounds (3 by default) and the load average.
Run: python benchmarks/unsubscribe.py [--rounds N] [--only load|big]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import SECRET, make_folder, write_list  # noqa: E402  # after sys.path
from test_serve_load import ADDERS, CLIENTS, PAUSE, TARGETS, post_all  # noqa: E402

from newsletter.config import load_config  # noqa: E402
from newsletter.subscribers import journal_path, read_list  # noqa: E402
from newsletter.tokens import make_token  # noqa: E402

LOAD_ROWS = 100_000
BIG_ROWS = 1_000_000
COMMAND = [sys.executable, "-m", "newsletter", "--config"]


def people(rows: int) -> list[str]:
    """`rows` readers; the first TARGETS of them unsubscribe, spread over the list."""
    step = rows // TARGETS
    return [
        f"reader{n}@example.org" if n % step == 0 else f"stays{n}@example.net" for n in range(rows)
    ]


def targets(rows: int) -> list[str]:
    step = rows // TARGETS
    return [f"reader{n}@example.org" for n in range(0, step * TARGETS, step)]


def adding(root: Path, stop: threading.Event, added: list[str], name: str) -> None:
    """`newsletter subscribers add` in fresh processes, one after another, until `stop`."""
    n = 0
    while not stop.is_set():
        email = f"new-{name}-{n}@example.com"
        command = [*COMMAND, str(root), "subscribers", "add", email, "--list", "main"]
        subprocess.run(command, check=True, capture_output=True)
        added.append(email)
        n += 1
        stop.wait(PAUSE)  # as tests/test_serve_load.py: a person adds, then the next one


def load_round(folder: Path) -> tuple[float, int, float]:
    """Seconds for TARGETS POSTs to a `newsletter serve` process while adders run, and how many
    adds landed meanwhile; then SIGTERM, and every change must be in the file, once."""
    root = make_folder(folder)
    path = write_list(root / "subscribers" / "main.csv", people(LOAD_ROWS))
    config = load_config(explicit=root)
    stop = threading.Event()
    added: list[str] = []
    cpu: list[float] = []
    with serving(root, cpu) as url:
        links = [make_token(SECRET, config.list_id, e) for e in targets(LOAD_ROWS)]
        urls = [f"{url}/unsubscribe/{token}" for token in links]
        threads = [
            threading.Thread(target=adding, args=(root, stop, added, str(n))) for n in range(ADDERS)
        ]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        codes = asyncio.run(post_all(urls))
        elapsed = time.perf_counter() - start
        stop.set()
        for thread in threads:
            thread.join()
    rows = list(read_list(path))
    statuses = {p.email: p.status for p in rows}
    assert codes == [200] * TARGETS, "not every POST was answered 200"
    assert all(statuses[e] == "unsubscribed" for e in targets(LOAD_ROWS)), "an unsubscribe is lost"
    assert all(statuses[e] == "subscribed" for e in added), "an add is lost"
    assert len(rows) == len(statuses) == LOAD_ROWS + len(added), "a row is lost or doubled"
    assert not journal_path(path).exists(), "serve stopped without folding its journal"
    return elapsed, len(added), cpu[0]


@contextlib.contextmanager
def serving(root: Path, cpu: list[float]) -> Iterator[str]:
    """`newsletter serve` in a process of its own; stopped with SIGTERM, as a service manager
    does, and waited for. `cpu` gets the CPU seconds it used (user + system)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET.decode()}
    command = [*COMMAND, str(root), "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while server.poll() is None:
            try:
                httpx.get(url, timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        _pid, status, usage = os.wait4(server.pid, 0)
        server.returncode = os.waitstatus_to_exitcode(status)
        cpu.append(usage.ru_utime + usage.ru_stime)


def big_round(folder: Path, source: bytes) -> tuple[float, float]:
    """Seconds for one whole `subscribers unsubscribe` process on a BIG_ROWS-row list, and the
    CPU seconds it used."""
    root = make_folder(folder)
    path = root / "subscribers" / "main.csv"
    path.write_bytes(source)
    target = f"reader{BIG_ROWS // 2}@example.org"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [*COMMAND, str(root), "subscribers", "unsubscribe", target], check=True, capture_output=True
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert not journal_path(path).exists()
    with path.open("rb") as handle:
        handle.seek(source.index(f"\n{target},".encode()) + 1)
        line = handle.read(200).split(b"\r\n")[0]
    assert line.startswith(f"{target},".encode()) and b",unsubscribed," in line, "not in the file"
    return elapsed, cpu


def median(name: str, times: list[float]) -> float:
    value = statistics.median(times)
    each = ", ".join(f"{t:.2f}" for t in times)
    print(f"{name}: median {value:.2f} s of {len(times)} rounds ({each})")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["load", "big"], help="Measure one figure only.")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "newsletter")], check=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.only != "big":
        measure_load(args.rounds)
    if args.only != "load":
        measure_big(args.rounds)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def measure_load(rounds: int) -> None:
    times: list[float] = []
    for n in range(rounds):
        with tempfile.TemporaryDirectory(dir=ROOT) as folder:  # the disk a real list lives on
            elapsed, adds, cpu = load_round(Path(folder))
        times.append(elapsed)
        print(
            f"round {n + 1}: {TARGETS} POSTs, {LOAD_ROWS:,}-row list: {elapsed:.2f} s "
            f"({TARGETS / elapsed:.0f}/s), {adds} `subscribers add` processes meanwhile; "
            f"serve used {cpu:.2f} s of CPU in all (start, folds, stop included)"
        )
    value = median(f"{TARGETS} unsubscribes from {CLIENTS} clients on {LOAD_ROWS:,} rows", times)
    print(f"        {TARGETS / value:.0f} unsubscribes/s (target: <= 10 s)")


def measure_big(rounds: int) -> None:
    source = ("\r\n".join([HEADER, *(row(n) for n in range(BIG_ROWS))]) + "\r\n").encode()
    times: list[float] = []
    for n in range(rounds):
        with tempfile.TemporaryDirectory(dir=ROOT) as folder:
            elapsed, cpu = big_round(Path(folder), source)
        times.append(elapsed)
        print(
            f"round {n + 1}: one `subscribers unsubscribe`, {BIG_ROWS:,} rows: {elapsed:.2f} s "
            f"({cpu:.2f} s of CPU)"
        )
    median(f"one unsubscribe on {BIG_ROWS:,} rows, whole command (target: < 1 s)", times)


HEADER = "email,name,status,tags,subscribed_at,unsubscribed_at,source"


def row(n: int) -> str:
    return f'reader{n}@example.org,"Name, {n}",subscribed,t,2024-01-01T00:00:00Z,,test'


if __name__ == "__main__":
    main()

"""Unsubscribe endpoint under load: 1,000 one-click POSTs for 1,000 readers from 50 clients.

Starts the real app with uvicorn on a loopback port (in this process, in a thread), posts with
httpx from 50 concurrent async clients, and prints the wall time and rate of each round and
the median. Each unsubscribe is a locked, fsynced rewrite of the list, so the disk sets the pace.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import SECRET, make_folder, running, write_list  # noqa: E402  # after sys.path
from test_serve_load import CLIENTS, TARGETS, people, post_all  # noqa: E402

from newsletter.config import load_config  # noqa: E402
from newsletter.serve import unsubscribe_app  # noqa: E402
from newsletter.subscribers import read_list  # noqa: E402
from newsletter.tokens import make_token  # noqa: E402


def one_round(folder: Path) -> float:
    root = make_folder(folder)
    path = write_list(root / "subscribers" / "main.csv", people())
    config = load_config(explicit=root)
    with running(unsubscribe_app(config, SECRET)) as url:
        urls = [
            f"{url}/unsubscribe/{make_token(SECRET, config.list_id, f'reader{n}@example.org')}"
            for n in range(TARGETS)
        ]
        start = time.perf_counter()
        codes = asyncio.run(post_all(urls))
        elapsed = time.perf_counter() - start
    gone = sum(p.status == "unsubscribed" for p in read_list(path))
    assert codes == [200] * TARGETS and gone == TARGETS, "not every unsubscribe landed"
    return elapsed


def main(rounds: int = 3) -> None:
    times = []
    for n in range(rounds):
        with tempfile.TemporaryDirectory(dir=ROOT) as folder:  # the disk a real list lives on
            times.append(one_round(Path(folder)))
        print(f"round {n + 1}: {times[-1]:.1f} s, {TARGETS / times[-1]:.0f} unsubscribes/s")
    median = statistics.median(times)
    print(f"median: {median:.1f} s for {TARGETS} POSTs from {CLIENTS} clients")
    print(f"        {TARGETS / median:.0f} unsubscribes/s, {1000 * median / TARGETS:.1f} ms each")


if __name__ == "__main__":
    main()

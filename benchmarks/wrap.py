"""Wrapping HTML lines at the SMTP limit must stay linear in the size of a text field.

Prints, as medians of --runs (default 3) with the load average before and after:
- `wrap_lines` alone on a 10 MB one-line paragraph of inline markup, and of CJK text;
- the whole `newsletter check` (a fresh process) of an issue whose text field holds 10 MB.

Run it from a checkout: `python3 benchmarks/wrap.py`. The tree measured is the one this file
sits in (point PYTHONPATH elsewhere to measure another checkout's code the same way).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("PYTHONPATH") or str(ROOT))

SIZE = 10_000_000


def wrapper() -> Callable[[str, int], str]:
    try:
        from newsletter.markup import wrap_lines
    except ImportError:  # before the wrapper had a module of its own
        from newsletter.render import wrap_lines  # type: ignore[no-redef]
    return wrap_lines


def median_seconds(work: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def big_issue(folder: Path) -> Path:
    shutil.copy(ROOT / "newsletter.toml", folder / "newsletter.toml")
    words = "lorem ipsum dolor sit amet, " * (SIZE // 28)  # plain: the wrapper, not Markdown
    issue = folder / "big.toml"
    sample = (ROOT / "issues" / "2021-09-cohes3ion.toml").read_text(encoding="utf-8")
    head = sample.split("[[blocks]]", 1)[0]
    issue.write_text(head + f'[[blocks]]\nkind = "text"\nbody = """{words}"""\n', encoding="utf-8")
    return issue


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    print(f"load average before: {load()}")
    wrap = wrapper()
    shapes = {
        "inline markup": "<p>" + "lorem <strong>ipsum</strong> dolor sit, " * (SIZE // 39),
        "CJK text": "<p>" + "中文文本 " * (SIZE // 13),
    }
    for name, html in shapes.items():
        middle, times = median_seconds(lambda html=html: wrap(html, 998), runs)
        print(f"wrap_lines, 10 MB of {name}: {middle:.2f} s  (runs: {_list(times)})")
    with tempfile.TemporaryDirectory() as tmp:
        issue = big_issue(Path(tmp))
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
        command = [sys.executable, "-m", "newsletter", "check", str(issue)]
        middle, times = median_seconds(
            lambda: subprocess.run(command, cwd=tmp, env=env, capture_output=True, check=False),
            runs,
        )
        print(f"newsletter check, 10 MB text field: {middle:.2f} s  (runs: {_list(times)})")
    print(f"load average after: {load()}")


def _list(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    main()

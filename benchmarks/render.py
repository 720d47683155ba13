"""Render speed of the sample issue, and the cold start of `newsletter --help`.

Prints milliseconds per render (TOML load to HTML + text, in process, median of many runs) and
the median wall time of `newsletter --help` in a fresh interpreter. Targets: <= 20 ms per render,
<= 250 ms for --help.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import load_config  # noqa: E402  # after the path set-up above
from newsletter.render import render_issue  # noqa: E402

SAMPLE = ROOT / "issues" / "2021-09-cohes3ion.toml"


def render_ms(runs: int = 200) -> list[float]:
    config = load_config(explicit=ROOT / "newsletter.toml")
    render_issue(SAMPLE, config)  # warm: imports, template compilation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        render_issue(SAMPLE, config)
        times.append((time.perf_counter() - start) * 1000)
    return times


def help_ms(runs: int = 15) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "newsletter", "--help"],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    renders = render_ms()
    print(
        f"render of the sample: median {statistics.median(renders):.2f} ms, "
        f"p90 {statistics.quantiles(renders, n=10)[-1]:.2f} ms over {len(renders)} runs "
        "(target <= 20 ms)"
    )
    helps = help_ms()
    print(
        f"newsletter --help cold start: median {statistics.median(helps):.0f} ms over "
        f"{len(helps)} runs (target <= 250 ms)"
    )


if __name__ == "__main__":
    main()

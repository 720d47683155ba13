"""Two checkouts of newsletter, the same whole `send`, alternately: which one is faster.

    python benchmarks/compare.py OLD_CHECKOUT NEW_CHECKOUT [--messages 10000] [--runs 5]

Each run sends --messages ~31 KB messages (the sample issue) to postfix's smtp-sink at 16
connections with `newsletter send ISSUE --yes` as a fresh process, its code taken from each
checkout in turn (PYTHONPATH), and prints its rate (the whole command, start to exit), the CPU
time per message of the process (less noisy than the rate) and the load average; then the
medians. For "did this change make sending slower?": give the commit before and after.
Needs Debian's postfix package (smtp-sink); never starts the postfix daemon.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ISSUE = "issues/2021-09-cohes3ion.toml"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from send import free_port, start_sink  # noqa: E402  # the sink as send.py starts it


def folder_for(tmp: Path, name: str, checkout: Path, people: int) -> Path:
    folder = tmp / name
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "issues").mkdir(parents=True)
    shutil.copy(checkout / "newsletter.toml", folder / "newsletter.toml")
    text = (checkout / ISSUE).read_text(encoding="utf-8")
    text = text.replace("draft = true\n", "")  # the sample is ready to send in every version
    (folder / ISSUE).write_text(text, encoding="utf-8")
    (folder / "subscribers").mkdir()
    rows = "".join(f"reader{i:07d}@example.org,Reader {i}\n" for i in range(people))
    (folder / "subscribers" / "big.csv").write_text("email,name\n" + rows, encoding="utf-8")
    return folder


def one_send(folder: Path, checkout: Path, env: dict[str, str], people: int) -> tuple[float, float]:
    """(messages per second, CPU ms per message) of one whole `newsletter send --yes`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "send", ISSUE, "--yes"],
        cwd=folder, env={**env, "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or f"sent {people}," not in done.stdout + done.stderr:
        raise SystemExit(f"{checkout}: the send did not finish:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return people / seconds, cpu * 1000 / people


def compiled(checkout: Path) -> None:
    """Byte-compile the checkout's package once, as an install does: otherwise, where
    PYTHONDONTWRITEBYTECODE is set, every run compiles ~50 modules again (~0.7 s of CPU)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "newsletter")],
                   check=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    for checkout in sides.values():
        compiled(checkout)
    port = free_port()
    sink = start_sink(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_SECRET="benchmark-secret-" + "x" * 32, NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(port), NEWSLETTER_SMTP_SECURITY="none",
        NEWSLETTER_SMTP_CONNECTIONS="16",
    )  # fmt: skip
    rates: dict[str, list[float]] = {side: [] for side in sides}
    cpus: dict[str, list[float]] = {side: [] for side in sides}
    try:
        with tempfile.TemporaryDirectory() as name:
            for run in range(1, args.runs + 1):
                for side, checkout in sides.items():  # alternately: both see the same load
                    folder = folder_for(Path(name), side, checkout, args.messages)
                    rate, cpu = one_send(folder, checkout, env, args.messages)
                    rates[side].append(rate)
                    cpus[side].append(cpu)
                    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
                    print(f"run {run} {side}: {rate:,.0f} msg/s, {cpu:.3f} ms CPU/msg; load {load}")
    finally:
        sink.terminate()
        sink.wait(10)
    for side, checkout in sides.items():
        rate, cpu = statistics.median(rates[side]), statistics.median(cpus[side])
        print(f"{side} ({checkout}): median {rate:,.0f} msg/s, {cpu:.3f} ms CPU per message")


if __name__ == "__main__":
    main()

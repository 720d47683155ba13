"""Sending speed against postfix's smtp-sink, with smtp-source (C) as the yardstick.

    python benchmarks/send.py [--messages 20000] [--sessions 16] [--runs 3] [--million]

Prints messages per second for smtp-source at N sessions, for `newsletter send` at N
connections (the whole command: config, render, plan, 20,000-row ledger, send), their ratio
(medians), and with --million the peak RSS of a 1,000,000-recipient plan and a 20-second send.
Needs Debian's postfix package (smtp-sink, smtp-source); never starts the postfix daemon.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.send_helpers import ISSUE, LAUNCH, env_for  # noqa: E402  # after the path insert

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
PAD = "Merge-field padding to reach a realistic message size. " * 12  # ~660 chars a line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    args = [SINK, *(["-u", "nobody"] if os.geteuid() == 0 else []), f"127.0.0.1:{port}", "1024"]
    sink = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return sink
        except OSError:
            time.sleep(0.05)
    raise SystemExit("smtp-sink did not start")


def folder_with(tmp: Path, people: int, size_kb: int) -> Path:
    folder = tmp / f"letter{people}"
    (folder / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    text = (REPO / ISSUE).read_text()
    paragraphs = "\n\n".join([PAD] * (size_kb * 1024 // len(PAD) // 2))  # HTML + text ~2x
    text += f'\n[[blocks]]\nkind = "text"\nheading = "More"\nbody = """\n{paragraphs}\n"""\n'
    (folder / ISSUE).write_text(text)
    (folder / "subscribers").mkdir()
    with (folder / "subscribers" / "big.csv").open("w") as out:
        out.write("email,name\n")
        for i in range(people):
            out.write(f"reader{i:07d}@example.org,Reader {i}\n")
    return folder


def message_size(folder: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, "send", ISSUE, "--limit", "1"],
        cwd=folder, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    line = next((x for x in done.stderr.splitlines() if x.startswith("sending:")), "")
    return line.split(" of ")[1].split(",")[0] if " of " in line else "?"


def source_rate(port: int, count: int, sessions: int, tmp: Path) -> float:
    body = tmp / "message.eml"
    if not body.exists():
        lines = [f"Line {i}: {PAD[:70]}" for i in range(40 * 1024 // 80)]
        body.write_text("From: a@example.org\nSubject: bench\n\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    subprocess.run(
        [SOURCE, "-s", str(sessions), "-m", str(count), "-d", "-F", str(body),
         "-f", "a@example.org", "-t", "b@example.org", f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return count / (time.perf_counter() - start)


def send_rate(folder: Path, env: dict[str, str], count: int) -> float:
    shutil.rmtree(folder / ".newsletter" / "sends", ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", LAUNCH, "send", ISSUE, "--yes"],
        cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return count / (time.perf_counter() - start)


def peak_rss_million(tmp: Path, env: dict[str, str], seconds: float) -> tuple[float, str]:
    folder = folder_with(tmp, 1_000_000, 40)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "send", ISSUE, "--yes"],
        cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        return float("nan"), "(RSS hidden by an earlier, larger child)"
    tail = [x for x in err.splitlines() if x.startswith(("sent ", "last run"))]
    return peak / 1024, "; ".join(tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--million", action="store_true")
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    env = env_for(
        {
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(port),
            "NEWSLETTER_SMTP_SECURITY": "none",
            "NEWSLETTER_SMTP_CONNECTIONS": str(args.sessions),
        }
    )
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            folder = folder_with(tmp, args.messages, 40)
            print(f"message size: {message_size(folder, env)}")
            src = [source_rate(port, args.messages, args.sessions, tmp) for _ in range(args.runs)]
            ours = [send_rate(folder, env, args.messages) for _ in range(args.runs)]
            s, o = statistics.median(src), statistics.median(ours)
            print(f"smtp-source, {args.sessions} sessions: {s:,.0f} msg/s  runs {src}")
            print(f"newsletter send, {args.sessions} connections: {o:,.0f} msg/s  runs {ours}")
            print(f"ratio: {o / s:.2f}  (target >= 0.5)")
            if args.million:
                rss, tail = peak_rss_million(tmp, env, 20.0)
                print(f"1,000,000-recipient plan + 20 s send: peak RSS {rss:.0f} MB  {tail}")
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()

"""SMTP sending speed: plain aiosmtplib vs our prepared-DATA seam vs smtp-source (C).

Starts Postfix's `smtp-sink` on 127.0.0.1 (never the postfix daemon), sends N prebuilt ~40 KB
messages over K reused connections three ways, and prints messages per second (median of
--repeats runs) and the client's CPU time per message. Stops smtp-sink by its PID at the end.

    python benchmarks/transport.py [--messages 5000] [--connections 16] [--repeats 3]

Needs /usr/sbin/smtp-sink and smtp-source (Debian package postfix); run as root (smtp-sink
drops to `nobody`). Never measure against aiosmtpd: a Python server is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package: the reference builders live there

from newsletter.config import SmtpSettings  # noqa: E402  # after the path set-up above
from newsletter.smtp import SmtpTransport  # noqa: E402
from newsletter.transport import Envelope  # noqa: E402
from tests.message_reference import wire_bytes  # noqa: E402

HOST = "127.0.0.1"
SENDER = "news@example.org"
Run = Callable[[int, int, int], Awaitable[None]]  # (port, messages, connections)


def build_message(size: int) -> bytes:
    """A ~`size`-byte plain message with CRLF line endings and some lines starting with '.'."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"The Newsletter <{SENDER}>"
    msg["To"] = "A Reader <reader@example.org>"
    msg["Subject"] = "Benchmark issue"
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    lines = [("." + line) if i % 25 == 0 else line for i in range(size // len(line))]
    msg.set_content("".join(lines))
    return msg.as_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(
        ["/usr/sbin/smtp-sink", "-u", "nobody", f"{HOST}:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return sink
        except OSError:
            time.sleep(0.05)
    sink.terminate()
    raise SystemExit("smtp-sink did not start")


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plain_aiosmtplib(raw: bytes) -> Run:
    """aiosmtplib as documented: sendmail() on reused connections (normalises every body)."""

    async def worker(port: int, count: int) -> None:
        client = aiosmtplib.SMTP(
            hostname=HOST, port=port, start_tls=False, local_hostname="localhost"
        )
        async with client:
            for i in range(count):
                await client.sendmail(SENDER, [f"r{i}@example.org"], raw)

    async def run(port: int, messages: int, connections: int) -> None:
        await asyncio.gather(*(worker(port, n) for n in split(messages, connections)))

    return run


def seam(raw: bytes) -> Run:
    """SmtpTransport: bytes put in wire form once, sent as they are."""
    prepared = wire_bytes(raw)

    async def worker(smtp: SmtpTransport, count: int) -> None:
        connection = await smtp.connect()
        try:
            for i in range(count):
                await connection.send(Envelope(SENDER, f"r{i}@example.org"), prepared)
        finally:
            await connection.close()

    async def run(port: int, messages: int, connections: int) -> None:
        smtp = SmtpTransport(SmtpSettings(host=HOST, port=port, security="none"), None)
        await asyncio.gather(*(worker(smtp, n) for n in split(messages, connections)))

    return run


def timed_async(run: Run, port: int, messages: int, connections: int) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) for one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run(port, messages, connections))
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_source(path: Path, port: int, messages: int, connections: int) -> tuple[float, float]:
    command = ["/usr/sbin/smtp-source", "-s", str(connections), "-m", str(messages), "-d"]
    command += ["-F", str(path), f"{HOST}:{port}"]
    wall = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - wall, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=40_000)
    args = parser.parse_args()
    for tool in ("smtp-sink", "smtp-source"):
        if not shutil.which(tool, path="/usr/sbin"):
            raise SystemExit(f"/usr/sbin/{tool} is missing: install Debian's postfix package")
    if os.geteuid() != 0:
        raise SystemExit("run as root: smtp-sink needs -u nobody")
    raw = build_message(args.size)
    print(
        f"{args.messages} messages of {len(raw):,} bytes over {args.connections} connections, "
        f"median of {args.repeats}, smtp-sink on {HOST}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        source_file = Path(tmp) / "message.eml"
        source_file.write_bytes(raw)
        runners: dict[str, Callable[[int], tuple[float, float]]] = {
            "smtp-source (C)": lambda p: timed_source(
                source_file, p, args.messages, args.connections
            ),
            "aiosmtplib sendmail": lambda p: timed_async(
                plain_aiosmtplib(raw), p, args.messages, args.connections
            ),
            "SmtpTransport (seam)": lambda p: timed_async(
                seam(raw), p, args.messages, args.connections
            ),
        }
        report(runners, args.messages, args.repeats)


def report(
    runners: dict[str, Callable[[int], tuple[float, float]]], messages: int, repeats: int
) -> None:
    port = free_port()
    sink = start_sink(port)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    try:
        for _ in range(repeats):  # interleaved, so a busy moment hurts every client alike
            for name, runner in runners.items():
                results[name].append(runner(port))
    finally:
        sink.terminate()
        sink.wait(10)
    rates: dict[str, float] = {}
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rates[name] = messages / wall
        cpu_note = f"   {cpu / messages * 1000:.2f} ms client CPU/msg" if cpu else ""
        print(f"  {name:<22} {rates[name]:>8,.0f} msgs/s{cpu_note}")
    base = rates["smtp-source (C)"]
    for name in ("aiosmtplib sendmail", "SmtpTransport (seam)"):
        print(f"  {name} / smtp-source: {rates[name] / base:.2f}")


if __name__ == "__main__":
    main()

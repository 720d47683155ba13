"""Sending speed against postfix's smtp-sink, with smtp-source (C) as the yardstick.

    python benchmarks/send.py [--messages 20000] [--sessions 16] [--runs 3] [--million]
    python benchmarks/send.py --store [URL] [--messages 20000] [--sessions 16] [--runs 3]

Prints messages per second for smtp-source at N sessions and for `newsletter send` at N
connections (the whole command: config, render, plan, ledger, send; and its send phase, as the
report's messages_per_second gives it), run alternately --runs times, their medians and ratios
to smtp-source (the target: the whole command at 0.8), the load average around each run (the
machine is shared: a busy machine lowers both figures) and the send's CPU time per message
(less noisy than rates).
The list is padded until the real message (as the plan reports it) is ~--size-kb KB.
With --million: peak RSS of a 1,000,000-recipient plan and a send from it, cut off with
Ctrl-C (SIGINT) only once the ledger shows messages sent, and how many were sent.
With --store: the send ledger in PostgreSQL ([store] url) against the SQLite one, 1 and 3
senders on one send (each with --sessions connections), the whole command's messages per second,
the senders' CPU per message and, on a cluster it started itself (--store without a URL: a
throwaway one, as the tests start it), the server's CPU per message: the store's cost.
Needs Debian's postfix package (smtp-sink, smtp-source); never starts the postfix daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.send_helpers import ISSUE, NEWSLETTER, env_for  # noqa: E402  # after the path insert

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


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------
# The newsletter folder


def folder_with(tmp: Path, people: int, paragraphs: int, name: str = "") -> Path:
    folder = tmp / (name or f"letter{people}")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    text = (REPO / ISSUE).read_text()
    if paragraphs:  # a text block may not be empty: the issue as it is is the smallest
        body = "\n\n".join([PAD] * paragraphs)
        text += f'\n[[blocks]]\nkind = "text"\nheading = "More"\nbody = """\n{body}\n"""\n'
    (folder / ISSUE).write_text(text)
    (folder / "subscribers").mkdir()
    with (folder / "subscribers" / "big.csv").open("w") as out:
        out.write("email,name\n")
        out.writelines(f"reader{i:07d}@example.org,Reader {i}\n" for i in range(people))
    return folder


def message_kb(folder: Path, env: dict[str, str]) -> float:
    """The size the plan reports for the first message (no --yes: nothing is sent)."""
    done = subprocess.run(
        [*NEWSLETTER, "send", ISSUE, "--limit", "1"],
        cwd=folder, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    found = re.search(r"^sending: .* of ~(\d+) KB", done.stderr, re.M)
    if not found:
        raise SystemExit(f"no message size in the plan:\n{done.stderr}")
    shutil.rmtree(folder / ".newsletter", ignore_errors=True)
    return float(found.group(1))


def sized_folder(tmp: Path, people: int, env: dict[str, str], kb: int, name: str = "") -> Path:
    """Pad the issue until the built message is ~kb KB (whatever builder is in use)."""
    paragraphs = kb * 1024 // len(PAD) // 2
    for _ in range(3):
        probe = folder_with(tmp, 1, paragraphs, "probe")
        size = message_kb(probe, env)
        if abs(size - kb) <= 1:
            break
        base = message_kb(folder_with(tmp, 1, 0, "probe"), env)
        paragraphs = max(0, round(paragraphs * (kb - base) / max(size - base, 1)))
    return folder_with(tmp, people, paragraphs, name)


# ---------------------------------------------------------------------------------------------
# One run each


def source_rate(port: int, count: int, sessions: int, tmp: Path, kb: int) -> float:
    body = tmp / "message.eml"
    if not body.exists():
        lines = [f"Line {i}: {PAD[:70]}" for i in range(kb * 1024 // 80)]
        body.write_text("From: a@example.org\nSubject: bench\n\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    subprocess.run(
        [SOURCE, "-s", str(sessions), "-m", str(count), "-d", "-F", str(body),
         "-f", "a@example.org", "-t", "b@example.org", f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return count / (time.perf_counter() - start)


def send_rate(folder: Path, env: dict[str, str], count: int) -> tuple[float, float, float]:
    """(messages per second of the whole command, of its send phase as its report gives it,
    CPU ms per message) of one `newsletter send --yes --json`."""
    shutil.rmtree(folder / ".newsletter" / "sends", ignore_errors=True)
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [*NEWSLETTER, "send", ISSUE, "--yes", "--json"],
        cwd=folder, env=env, check=False, capture_output=True, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout) if done.returncode == 0 else {}
    if report.get("counts", {}).get("sent") != count:
        raise SystemExit(f"send did not send all {count} (exit {done.returncode}):\n{done.stderr}")
    phase = float(report["messages_per_second"])
    return count / seconds, phase, (_children_cpu() - cpu) * 1000 / count


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# Memory: a 1,000,000-recipient plan and a send from it


def million_rss(tmp: Path, env: dict[str, str], kb: int, seconds: float) -> str:
    folder = sized_folder(tmp, 1_000_000, env, kb, "million")
    start = time.perf_counter()
    with subprocess.Popen(
        [*NEWSLETTER, "send", ISSUE, "--yes"],
        cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        ledger = folder / ".newsletter" / "sends"
        plan_peak, first = _until_sending(proc, ledger, start)
        time.sleep(seconds)
        peak = _peak_kb(proc.pid)
        at_cut = _sent_in(ledger)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    sent = re.search(r"^sent (\d+),", err, re.M)
    if plan_peak is None or sent is None or int(sent.group(1)) == 0:
        raise SystemExit(f"the send never started sending:\n{err}")
    return (
        f"plan ready and first message sent after {first:.0f} s "
        f"(peak RSS then {plan_peak / 1024:.0f} MB); "
        f"cut off {seconds:.0f} s later with {at_cut} sent, {sent.group(1)} sent in all; "
        f"peak RSS {max(peak, plan_peak) / 1024:.0f} MB (exit {proc.returncode})"
    )


def _until_sending(
    proc: subprocess.Popen[str], ledger: Path, start: float
) -> tuple[int | None, float]:
    """Wait (at most 10 minutes) until the ledger shows a message sent: (peak KB then, s)."""
    while time.perf_counter() - start < 600 and proc.poll() is None:
        if _sent_in(ledger) > 0:
            return _peak_kb(proc.pid), time.perf_counter() - start
        time.sleep(1.0)
    return None, 0.0


def _sent_in(folder: Path) -> int:
    """Messages the ledger records as sent (read-only; the send keeps writing)."""
    for path in folder.glob("*.sqlite"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return int(
                    db.execute("SELECT count(*) FROM recipients WHERE state = 2").fetchone()[0]
                )
        except sqlite3.Error:
            return 0
    return 0


def _peak_kb(pid: int) -> int:
    """VmHWM: the process's peak resident set so far, in KB."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-kb", type=int, default=40)
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--million-seconds", type=float, default=10.0)
    parser.add_argument(
        "--bounce-address", default="", help="[newsletter] bounce_address: VERP return paths"
    )
    parser.add_argument(
        "--store", nargs="?", const="", default=None, metavar="URL",
        help="compare the PostgreSQL store's ledger (a throwaway cluster without URL)",
    )  # fmt: skip
    args = parser.parse_args()
    # Byte-compiled once, as an install does: otherwise, where PYTHONDONTWRITEBYTECODE is set,
    # every `newsletter send` compiles ~50 modules again (~0.7 s of CPU in the whole command).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "newsletter")], check=True)
    port = free_port()
    sink = start_sink(port)
    env = env_for(
        {
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(port),
            "NEWSLETTER_SMTP_SECURITY": "none",
            "NEWSLETTER_SMTP_CONNECTIONS": str(args.sessions),
            **({"NEWSLETTER_BOUNCE_ADDRESS": args.bounce_address} if args.bounce_address else {}),
        }
    )
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            if args.store is not None:
                compare_store(tmp, env, args)
                return
            compare(tmp, env, port, args)
            if args.million:
                print(
                    "1,000,000 recipients: "
                    + million_rss(tmp, env, args.size_kb, args.million_seconds)
                )
    finally:
        sink.terminate()
        sink.wait(10)


def compare(tmp: Path, env: dict[str, str], port: int, args: argparse.Namespace) -> None:
    folder = sized_folder(tmp, args.messages, env, args.size_kb)
    print(f"message size: ~{message_kb(folder, env):.0f} KB (plan); smtp-source: {args.size_kb} KB")
    src: list[float] = []
    ours: list[float] = []
    phases: list[float] = []
    cpu: list[float] = []
    for run in range(1, args.runs + 1):  # interleaved: both see the same background load
        before = load()
        src.append(source_rate(port, args.messages, args.sessions, tmp, args.size_kb))
        rate, phase, ms = send_rate(folder, env, args.messages)
        ours.append(rate)
        phases.append(phase)
        cpu.append(ms)
        print(
            f"run {run}: smtp-source {src[-1]:,.0f}/s, newsletter send {rate:,.0f}/s whole "
            f"command, {phase:,.0f}/s send phase ({ms:.2f} ms CPU/msg); "
            f"load average {before} -> {load()}"
        )
    s, o, p = statistics.median(src), statistics.median(ours), statistics.median(phases)
    print(f"smtp-source, {args.sessions} sessions: {s:,.0f} msg/s (median of {args.runs})")
    print(
        f"newsletter send, {args.sessions} connections: {o:,.0f} msg/s whole command, "
        f"{p:,.0f} msg/s send phase (medians), {statistics.median(cpu):.2f} ms CPU per message"
    )
    print(f"ratio, whole command: {o / s:.2f}  (target >= 0.8); send phase: {p / s:.2f}")


# ---------------------------------------------------------------------------------------------
# --store: the ledger in PostgreSQL, 1 and 3 senders, against SQLite


def compare_store(tmp: Path, env: dict[str, str], args: argparse.Namespace) -> None:
    with _store(args.store) as (url, server_cpu):
        folder = sized_folder(tmp, args.messages, env, args.size_kb)
        _import(folder, url)
        print(f"message size: ~{message_kb(folder, env):.0f} KB; {args.messages} messages")
        results: dict[str, list[tuple[float, float, float]]] = {}
        for run in range(1, args.runs + 1):
            for label, senders in (("sqlite", 0), ("store, 1 sender", 1), ("store, 3 senders", 3)):
                before = load()
                one = _store_run(folder, env, url, senders, args.messages, server_cpu)
                results.setdefault(label, []).append(one)
                print(
                    f"run {run}, {label}: {one[0]:,.0f} msg/s whole command, senders "
                    f"{one[1]:.3f} ms CPU/msg, server {one[2]:.3f} ms CPU/msg; "
                    f"load average {before} -> {load()}"
                )
    base = statistics.median(r[1] for r in results["sqlite"])
    for label, runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        server = statistics.median(r[2] for r in runs)
        extra = f"; +{cpu - base:.3f} ms sender CPU and {server:.3f} ms server CPU per message"
        print(
            f"{label}, {args.sessions} connections each: {rate:,.0f} msg/s, {cpu:.3f} ms CPU "
            f"per message (medians of {args.runs})" + ("" if label == "sqlite" else extra)
        )
    if server_cpu is None:
        print("(the server's CPU is measured only on a cluster this benchmark starts)")


def _store_run(
    folder: Path,
    env: dict[str, str],
    url: str,
    senders: int,
    count: int,
    server_cpu: Callable[[], float] | None,
) -> tuple[float, float, float]:
    """(messages per second of the whole command, senders' CPU ms per message, server's CPU
    ms per message) of `senders` concurrent `newsletter send --yes` (0: SQLite, one sender)."""
    if not senders:
        rate, _, ms = send_rate(folder, env, count)
        return rate, ms, 0.0
    _empty_store(url)
    store_env = {**env, "NEWSLETTER_STORE_URL": url}
    cpu, server = _children_cpu(), server_cpu() if server_cpu else 0.0
    start = time.perf_counter()
    command = [*NEWSLETTER, "send", ISSUE, "--yes", "--json"]
    procs = [
        subprocess.Popen(
            command, cwd=folder, env=store_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(senders)
    ]  # fmt: skip
    outputs = [proc.communicate() for proc in procs]
    seconds = time.perf_counter() - start
    sent = json.loads(outputs[-1][0] or "{}").get("counts", {}).get("sent")
    if any(p.returncode for p in procs) or sent != count:
        raise SystemExit("the store's send did not send all:\n" + outputs[-1][1])
    used = (server_cpu() - server) if server_cpu else 0.0
    return count / seconds, (_children_cpu() - cpu) * 1000 / count, used * 1000 / count


@contextlib.contextmanager
def _store(url: str) -> Iterator[tuple[str, Callable[[], float] | None]]:
    """The store's URL (migrated), and how to read its server's CPU seconds when this
    benchmark started the cluster."""
    if url:
        _migrate(url)
        yield url, None
        return
    from tests.pgcluster import make_cluster

    cluster = make_cluster()
    try:
        found = cluster.url(cluster.create_database())
        _migrate(found)
        yield found, functools.partial(_cluster_cpu, cluster.data)
    finally:
        cluster.remove()


def _migrate(url: str) -> None:
    done = subprocess.run(
        [*NEWSLETTER, "store", "migrate"], cwd=REPO, env={**env_for(), "NEWSLETTER_STORE_URL": url},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"cannot migrate the store:\n{done.stderr}")


def _import(folder: Path, url: str) -> None:
    """The folder's list in the store too: with a store, a send selects from its lists."""
    source = folder / "subscribers" / "big.csv"
    done = subprocess.run(
        [*NEWSLETTER, "subscribers", "import", str(source), "--into", "big"], cwd=folder,
        env={**env_for(), "NEWSLETTER_STORE_URL": url}, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"cannot import the list into the store:\n{done.stderr}")


def _empty_store(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM sends")


def _cluster_cpu(data: Path) -> float:
    """CPU seconds (user + system) of the cluster's server processes so far."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            pid = int(stat.parent.name)
            if pid == postmaster:  # its own, and that of the backends it reaped (cutime...)
                total += sum(int(f) for f in fields[11:15]) / tick
            elif int(fields[1]) == postmaster:  # fields[1]: the parent; a backend still running
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


if __name__ == "__main__":
    main()

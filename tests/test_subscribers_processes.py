"""Real processes: two writers at once both land; a writer killed mid-write loses nothing."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from newsletter.subscribers import read_list, set_status

WRITER = """
import sys, time
from pathlib import Path
from newsletter import subscribers
folder, job, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
target = folder / "subscribers" / "list.csv"
while not (folder / "go").exists():
    time.sleep(0.001)
for i in range(count):
    if job == "add":
        subscribers.add(folder, f"new{i}@example.org", list_path=target)
    else:
        subscribers.set_status(folder, f"old{i}@example.org", "unsubscribed")
"""

REWRITE = """
import sys, datetime as dt
from pathlib import Path
from newsletter import subscribers
when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
subscribers.set_status(Path(sys.argv[1]), "target@example.org", "unsubscribed", when=when)
"""


def make_list(folder: Path, rows: int) -> Path:
    path = folder / "subscribers" / "list.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["email,name,status,tags\r\n", "target@example.org,Target,subscribed,\r\n"]
    lines += [f"old{i}@example.org,Person {i},subscribed,t\r\n" for i in range(rows)]
    path.write_text("".join(lines), encoding="utf-8", newline="")
    return path


def run(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE)


def test_concurrent_add_and_unsubscribe_both_land(tmp_path: Path) -> None:
    """An `add` process and an `unsubscribe` process on one list: every change of both lands."""
    count = 25
    path = make_list(tmp_path, count)
    adder = run(WRITER, str(tmp_path), "add", str(count))
    remover = run(WRITER, str(tmp_path), "unsubscribe", str(count))
    (tmp_path / "go").touch()
    for process in (adder, remover):
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    people = {p.email: p.status for p in read_list(path)}
    assert all(people[f"new{i}@example.org"] == "subscribed" for i in range(count))
    assert all(people[f"old{i}@example.org"] == "unsubscribed" for i in range(count))
    assert len(people) == 1 + 2 * count


def wait_for_temp(folder: Path, size: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        temps = list(folder.glob(".list.csv.*.tmp"))
        if any(t.stat().st_size >= size for t in temps if t.exists()):
            return True
        time.sleep(0.0005)
    return False


def test_killed_writer_leaves_old_or_new_file(tmp_path: Path) -> None:
    """SIGKILL while the new file is being written leaves the old file whole; the lock frees."""
    path = make_list(tmp_path / "work", 150_000)
    spare = tmp_path / "spare"
    shutil.copytree(tmp_path / "work", spare)
    when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    set_status(spare, "target@example.org", "unsubscribed", when=when)
    old, new = path.read_bytes(), (spare / "subscribers" / "list.csv").read_bytes()
    killed_mid_write = 0
    for fraction in (0.1, 0.5, 0.9):
        writer = run(REWRITE, str(tmp_path / "work"))
        if wait_for_temp(path.parent, int(len(new) * fraction), writer):
            os.kill(writer.pid, signal.SIGKILL)
            killed_mid_write += 1
        writer.communicate(timeout=60)
        assert path.read_bytes() in (old, new)
    assert killed_mid_write >= 2  # the kill really landed while the temp file was growing
    assert path.read_bytes() == old
    set_status(tmp_path / "work", "target@example.org", "unsubscribed", when=when)  # not locked out
    assert path.read_bytes() == new

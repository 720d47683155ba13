"""Real processes: two writers at once both land; a writer killed mid-write loses nothing."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from newsletter.subscribers import read_list, set_status
from tests.waits import HANG, wait_until

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
import datetime as dt, io, os, sys, time
from pathlib import Path
from newsletter import subscribers
folder, pause_at, marker = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
real_fdopen = os.fdopen

class Pausing(io.BufferedWriter):
    # The new file's handle: once pause_at bytes are in, flush them, say so, wait to be killed.
    def write(self, data):
        count = super().write(data)
        if self.tell() >= pause_at:
            self.flush()
            marker.touch()
            time.sleep(3600)
        return count

def fdopen(fd, mode="r", *args, **kwargs):
    if mode == "wb":  # fileio.atomic_write's temp file
        return Pausing(io.FileIO(fd, "wb"))
    return real_fdopen(fd, mode, *args, **kwargs)

os.fdopen = fdopen
when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
subscribers.set_status(folder, "target@example.org", "unsubscribed", when=when)
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
        _out, err = process.communicate(timeout=HANG)
        assert process.returncode == 0, err.decode()
    people = {p.email: p.status for p in read_list(path)}
    assert all(people[f"new{i}@example.org"] == "subscribed" for i in range(count))
    assert all(people[f"old{i}@example.org"] == "unsubscribed" for i in range(count))
    assert len(people) == 1 + 2 * count


def test_killed_writer_leaves_old_or_new_file(tmp_path: Path) -> None:
    """SIGKILL while the new file is being written leaves the old file whole; the lock frees."""
    path = make_list(tmp_path / "work", 20_000)
    spare = tmp_path / "spare"
    shutil.copytree(tmp_path / "work", spare)
    when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    set_status(spare, "target@example.org", "unsubscribed", when=when)
    old, new = path.read_bytes(), (spare / "subscribers" / "list.csv").read_bytes()
    for fraction in (0.1, 0.5, 0.9, 1.0):  # 1.0: written whole, not yet renamed
        kill_mid_write(tmp_path, int(len(new) * fraction))
        assert path.read_bytes() == old
    set_status(tmp_path / "work", "target@example.org", "unsubscribed", when=when)  # not locked out
    assert path.read_bytes() == new


def kill_mid_write(tmp_path: Path, size: int) -> None:
    """Run REWRITE until its temp file holds `size` bytes, check that it does, SIGKILL it."""
    marker = tmp_path / f"paused-{size}"
    writer = run(REWRITE, str(tmp_path / "work"), str(size), str(marker))
    try:
        what = f"the writer pausing at {size} bytes (does fileio still use os.fdopen?)"
        wait_until(marker.exists, what, alive=lambda: writer.poll() is None, stall=HANG)
        temps = (tmp_path / "work" / "subscribers").glob(".list.csv.*.tmp")
        sizes = [t.stat().st_size for t in temps]
        assert sizes and max(sizes) >= size, f"no temp file of {size} bytes: {sizes}"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.communicate()

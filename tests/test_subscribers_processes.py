"""Real processes: two writers at once both land; a writer killed mid-write (a rewrite, a journal
append, a fold) loses nothing."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.subscribers import check_lists, journal_path, read_list, set_status
from newsletter.subscribers.edits import AddEdit, StatusEdit
from newsletter.subscribers.journal import append
from newsletter.subscribers.rewrite import SPLICE_FROM, fold
from tests.serve_helpers import write_list
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


# ---------------------------------------------------------------------------------------------
# The journal: killed mid-append and mid-fold, every acknowledged change is there exactly once

APPEND = """
import os, sys, time
from pathlib import Path
from newsletter.subscribers.edits import AddEdit, StatusEdit
from newsletter.subscribers.journal import append
path, marker, count, cut = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(count):
    append(path, [AddEdit(f"new{i}@example.org", "", [], "2025-01-01T00:00:00Z", "cli")])
    append(path, [StatusEdit(f"old{i}@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    print(i, flush=True)  # acknowledged: durable in the journal
real_write = os.write

def write(fd, data):
    if b"torn@" in data:  # the append being killed: `cut` bytes of it written, then wait
        real_write(fd, data[:cut])
        os.fsync(fd)
        marker.touch()
        time.sleep(3600)
    return real_write(fd, data)

os.write = write
append(path, [AddEdit("torn@example.org", "", [], "2025-01-01T00:00:00Z", "cli")])
"""

FOLD = """
import io, os, sys, time
from pathlib import Path
from newsletter.subscribers.rewrite import SPLICE_FROM, fold
from tests.serve_helpers import write_list
path, marker, stage = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real_fdopen, real_replace, real_unlink = os.fdopen, os.replace, os.unlink

def wait():
    marker.touch()
    time.sleep(3600)

class Pausing(io.BufferedWriter):
    def write(self, data):  # the new list: half of it written, then wait
        count = super().write(data)
        if self.tell() >= path.stat().st_size // 2:
            self.flush()
            wait()
        return count

def fdopen(fd, mode="r", *args, **kwargs):
    if mode == "wb" and stage == "writing":
        return Pausing(io.FileIO(fd, "wb"))
    return real_fdopen(fd, mode, *args, **kwargs)

def replace(source, target):
    if Path(target) == path and stage == "marked":  # the fold mark is in the journal
        wait()
    real_replace(source, target)
    if Path(target) == path and stage == "renamed":  # the new list is in place
        wait()

def unlink(target, *args, **kwargs):
    if Path(target).name.endswith(".journal") and stage == "trimming":
        wait()
    real_unlink(target, *args, **kwargs)

os.fdopen, os.replace, os.unlink = fdopen, replace, unlink
fold(path)
"""


def changed_once(path: Path, count: int) -> None:
    """Each of the `count` adds is one row, each unsubscribe applied, the torn add nowhere."""
    people = [(p.email, p.status) for p in read_list(path)]
    emails = [email for email, _status in people]
    assert len(emails) == len(set(emails)) == 1 + 2 * count
    assert all(emails.count(f"new{i}@example.org") == 1 for i in range(count))
    assert all((f"old{i}@example.org", "unsubscribed") in people for i in range(count))
    assert "torn@example.org" not in emails
    assert check_lists([path]).errors == []


@pytest.mark.parametrize("cut", [1, 40, -1], ids=["one-byte", "middle", "all-but-newline"])
def test_killed_append_loses_nothing_acknowledged(tmp_path: Path, cut: int) -> None:
    """SIGKILL mid-append: the acknowledged entries apply once each, the torn one nowhere; the
    next append cuts the torn tail off, and a fold puts everything in the file."""
    count = 5
    path = make_list(tmp_path, count)
    marker = tmp_path / "paused"
    size = len(b'{"op":"add","email":"torn@example.org"') if cut == 40 else cut
    writer = subprocess.Popen(
        [sys.executable, "-c", APPEND, str(path), str(marker), str(count), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(marker.exists, "the append pausing", alive=lambda: writer.poll() is None)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        out, _err = writer.communicate()
    assert len(out.split()) == count  # every one of them acknowledged
    changed_once(path, count)
    set_status(tmp_path, "target@example.org", "unsubscribed")  # folds, after an append
    assert not journal_path(path).exists()
    changed_once(path, count)


@pytest.mark.parametrize("rows", [20_000, 40_000], ids=["streamed", "spliced"])
@pytest.mark.parametrize("stage", ["writing", "marked", "renamed", "trimming"])
def test_killed_fold_loses_nothing_and_doubles_nothing(
    tmp_path: Path, stage: str, rows: int
) -> None:
    """SIGKILL while a fold writes the new list, after its mark, after its rename, before the
    journal goes: every acknowledged change once, the file parses, the next fold completes.
    (40,000 rows in every column: over rewrite.SPLICE_FROM, spliced; 20,000: streamed.)"""
    count = 5
    if rows == 20_000:
        path = make_list(tmp_path, rows)
    else:
        people = ["target@example.org", *(f"old{i}@example.org" for i in range(rows))]
        path = write_list(tmp_path / "subscribers" / "list.csv", people)
        assert path.stat().st_size > SPLICE_FROM
    for i in range(count):
        append(path, [AddEdit(f"new{i}@example.org", "", [], "2025-01-01T00:00:00Z", "cli")])
        append(path, [StatusEdit(f"old{i}@example.org", "unsubscribed", "2025-01-01T00:00:00Z")])
    marker = tmp_path / "paused"
    folding = run(FOLD, str(path), str(marker), stage)
    try:
        what = f"the fold pausing at {stage}"
        wait_until(marker.exists, what, alive=lambda: folding.poll() is None, stall=HANG)
    finally:
        os.kill(folding.pid, signal.SIGKILL)
        folding.communicate()
    assert check_lists([path]).errors == []  # whatever the file is, it parses
    people = [(p.email, p.status) for p in read_list(path)]
    assert len(people) == len({email for email, _status in people}) == 1 + rows + count
    assert all((f"new{i}@example.org", "subscribed") in people for i in range(count))
    assert all((f"old{i}@example.org", "unsubscribed") in people for i in range(count))
    fold(path)
    assert not journal_path(path).exists()
    assert [(p.email, p.status) for p in read_list(path)] == people

"""Files that cannot be written: one clear line naming the file, exit code 4, no traceback.

The tests run as root, and root ignores permission bits, so each failure is made with something
that stops root too:
- read-only: `chattr +i` (the immutable attribute; skipped when the file system lacks it), and a
  read-only bind mount (EROFS);
- a full disk: a small tmpfs mounted over `.newsletter` (real ENOSPC), and RLIMIT_FSIZE (EFBIG;
  Python ignores SIGXFSZ) where the files must outlive the process;
- a file where a folder is expected, and /proc, where nothing can be created.
Mounts are made in a private mount namespace of the command's own process (`unshare -m`), so
they vanish with it; those tests are skipped when namespaces are not allowed here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.send_helpers import ISSUE, NEWSLETTER, env_for, make_folder, run

SLUG = "2021-09-cohes3ion"
STORAGE_EXIT = 4

LIMITED = """
import resource, runpy, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "newsletter"
runpy.run_module("newsletter", run_name="__main__")
"""

MOUNTED = 'mount $MOUNT_ARGS && exec "$@"'  # the paths are pytest's: no spaces


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line of a failed command; no traceback anywhere."""
    assert "Traceback" not in done.stderr and "╭" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert done.returncode == STORAGE_EXIT, done.stderr
    return errors[0]


def send(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(folder, "send", ISSUE, "--list", "subscribers/news.csv", "--yes", *extra)


def ledger_of(folder: Path) -> Path:
    (ledger,) = (folder / ".newsletter" / "sends").glob(f"{SLUG}@*.sqlite")
    return ledger


def outbox_recipients(folder: Path) -> list[str]:
    new = folder / "outbox" / "new"
    files = sorted(new.iterdir()) if new.is_dir() else []
    return [str(message_from_bytes(p.read_bytes())["Delivered-To"]) for p in files]


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Make files or folders immutable (`chattr +i`); undone at the end of the test."""
    probe = tmp_path / "probe"
    probe.touch()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(probe)], check=False).returncode:
        pytest.skip("chattr +i is not supported on this file system")
    subprocess.run([chattr, "-i", str(probe)], check=True)
    made: list[Path] = []

    def make(path: Path) -> None:
        subprocess.run([chattr, "+i", str(path)], check=True)
        made.append(path)

    yield make
    for path in reversed(made):
        subprocess.run([chattr, "-i", str(path)], check=True)


def mounted(folder: Path, mount_args: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command in its own mount namespace with `mount MOUNT_ARGS` done first."""
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if shutil.which("unshare") is None or probe.returncode:
        pytest.skip("no private mount namespaces here (unshare -m)")
    shell = ["unshare", "-m", "--propagation", "private", "sh", "-c", MOUNTED, "sh"]
    env = {"MOUNT_ARGS": " ".join(mount_args)}
    command = [*shell, *NEWSLETTER, *args]
    return subprocess.run(
        command, cwd=folder, env=env_for(env), capture_output=True, text=True, check=False
    )


# ---------------------------------------------------------------------------------------------
# Read-only


def test_read_only_ledger(tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """Resuming into an immutable ledger: names the ledger and says it is read-only."""
    folder = make_folder(tmp_path, 3)
    assert send(folder, "--limit", "1").returncode == 3
    immutable(ledger_of(folder))
    line = error_line(send(folder))
    assert str(ledger_of(folder)) in line and "read-only" in line
    assert len(outbox_recipients(folder)) == 1


def test_read_only_lock_file(tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """An immutable send lock: names the lock file; nothing is sent."""
    folder = make_folder(tmp_path, 3)
    assert send(folder, "--limit", "1").returncode == 3
    lock = folder / ".newsletter" / "sends" / f"{SLUG}.lock"
    immutable(lock)
    line = error_line(send(folder))
    assert str(lock) in line and "read-only" in line
    assert len(outbox_recipients(folder)) == 1


def test_read_only_sends_folder(tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """An immutable sends/ where SQLite cannot make the ledger's -wal and -shm files: names
    the folder; nothing more is sent."""
    folder = make_folder(tmp_path, 3)
    assert send(folder, "--limit", "1").returncode == 3
    sends = folder / ".newsletter" / "sends"
    immutable(sends)
    line = error_line(send(folder))
    assert f"{sends}: cannot open the ledger" in line and "-wal and -shm" in line
    assert len(outbox_recipients(folder)) == 1


@pytest.mark.parametrize("command", ["send", "purge"])
def test_read_only_state_folder(
    tmp_path: Path, immutable: Callable[[Path], None], command: str
) -> None:
    """An immutable, empty .newsletter: send and purge name the folder they could
    not write in; nothing is sent and the list is unchanged."""
    folder = make_folder(tmp_path, 3)
    state = folder / ".newsletter"
    state.mkdir()
    immutable(state)
    listed = folder / "subscribers" / "news.csv"
    before = listed.read_bytes()
    if command == "send":
        done = send(folder)
    else:
        done = run(folder, "subscribers", command, "reader1@example.org", "--yes")
    line = error_line(done)
    assert str(state) in line and "read-only" in line
    assert outbox_recipients(folder) == []
    if command == "purge":
        assert listed.read_bytes() == before


def test_read_only_mount(tmp_path: Path) -> None:
    """.newsletter on a read-only mount (EROFS): the send names it and sends nothing."""
    folder = make_folder(tmp_path, 3)
    state = folder / ".newsletter"
    state.mkdir()
    mount = ["--bind", "-o", "ro", str(state), str(state)]
    done = mounted(folder, mount, "send", ISSUE, "--list", "subscribers/news.csv", "--yes")
    line = error_line(done)
    assert str(state) in line and "Read-only file system" in line
    assert outbox_recipients(folder) == []


# ---------------------------------------------------------------------------------------------
# A full disk


@pytest.mark.parametrize(
    ("size", "mid_send"), [("8k", False), ("64k", False), ("384k", True)], ids=str
)
def test_full_disk_on_state_folder(tmp_path: Path, size: str, mid_send: bool) -> None:
    """A full disk under .newsletter (a small tmpfs): "the disk is full", naming the ledger,
    wherever it strikes (creating the ledger, the snapshot of 400 rows, or mid-send once the
    snapshot fits), never the error SQLite raises next ("no transaction is active")."""
    folder = make_folder(tmp_path, 400)
    state = folder / ".newsletter"
    state.mkdir()
    mount = ["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(state)]
    done = mounted(folder, mount, "send", ISSUE, "--list", "subscribers/news.csv", "--yes")
    line = error_line(done)
    assert "the disk is full" in line and f"{SLUG}@" in line, line
    assert "no transaction is active" not in done.stderr
    assert (len(outbox_recipients(folder)) > 0) == mid_send


def test_size_limit_mid_send_then_resume(tmp_path: Path) -> None:
    """A file-size limit (EFBIG) reached mid-send stops it with a clear line; the resume, with
    the room back, mails everyone else and nobody twice."""
    people = 400
    folder = make_folder(tmp_path, people)
    limited = [sys.executable, "-c", LIMITED, str(200_000), "send", ISSUE]
    done = subprocess.run(
        [*limited, "--list", "subscribers/news.csv", "--yes"],
        cwd=folder,
        env=env_for(),
        capture_output=True,
        text=True,
        check=False,
    )
    line = error_line(done)
    assert "file-size limit" in line and str(ledger_of(folder)) in line
    first = len(outbox_recipients(folder))
    assert 0 < first < people
    assert send(folder).returncode == 0
    delivered = outbox_recipients(folder)
    assert len(delivered) == len(set(delivered)) == people


# ---------------------------------------------------------------------------------------------
# Output folders


@pytest.mark.parametrize("output", ["/proc/x", "/proc/x/y"])
def test_render_into_proc(tmp_path: Path, output: str) -> None:
    """`render -o` where nothing can be created: names the folder."""
    folder = make_folder(tmp_path, 1)
    line = error_line(run(folder, "render", ISSUE, "-o", output))
    assert "/proc/x" in line and "cannot create the folder" in line


@pytest.mark.parametrize("command", ["render", "archive"])
@pytest.mark.parametrize("below", ["", "sub"])
def test_output_onto_a_file(tmp_path: Path, command: str, below: str) -> None:
    """`render -o` / `archive -o` onto an existing file (or below one): names it, leaves it."""
    folder = make_folder(tmp_path, 1)
    target = folder / "taken"
    target.write_text("mine\n")
    output = str(target / below) if below else str(target)
    args = [command, ISSUE, "-o", output] if command == "render" else [command, "-o", output]
    line = error_line(run(folder, *args))
    assert str(target) in line and "a file is where a folder is needed" in line
    assert target.read_text() == "mine\n"


def test_unmapped_file_error_is_one_line(tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """The CLI's last resort: an OSError no core function mapped is still one line, exit 4."""
    folder = make_folder(tmp_path, 1)
    immutable(folder / "issues")
    line = error_line(run(folder, "new", "Another issue"))
    assert str(folder / "issues") in line

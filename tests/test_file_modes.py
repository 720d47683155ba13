"""File modes: what holds personal data is created owner-only, whatever the umask; a rewrite
keeps the mode a file already has."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.fileio import atomic_write_text
from newsletter.ledger import Ledger
from newsletter.store import Entry
from tests.send_helpers import ISSUE, run
from tests.send_helpers import make_folder as make_send_folder

# Folders (relative to the newsletter folder) whose whole content is personal data.
PRIVATE = ("subscribers", ".newsletter", "outbox")
UMASKS = [0o022, 0o002, 0o077]


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def project_after_a_session(tmp_path: Path, mask: int) -> Path:
    """init, add three readers, the README Quickstart's outbox send, unsubscribe, purge."""

    def ok(folder: Path, *args: str) -> None:
        done = run(folder, *args, umask=mask)
        assert done.returncode == 0, done.stderr

    ok(tmp_path, "init", "news")
    folder = tmp_path / "news"
    config = folder / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('postal_address = ""', 'postal_address = "1 Main St"'))
    for n in range(3):
        ok(folder, "subscribers", "add", f"reader{n}@example.org")
    issue = next((folder / "issues").glob("*.toml")).relative_to(folder)
    draft = (folder / issue).read_text(encoding="utf-8")
    (folder / issue).write_text(draft.replace("\ndraft = true ", "\n# was a draft "))  # ready
    ok(folder, "send", str(issue), "--list", "subscribers/subscribers.csv", "--yes")
    ok(folder, "subscribers", "unsubscribe", "reader0@example.org")
    ok(folder, "subscribers", "purge", "reader1@example.org", "--yes")
    return folder


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_personal_data_is_owner_only(tmp_path: Path, mask: int) -> None:
    """Every file under subscribers/, .newsletter/ and outbox/ is 0600, every folder 0700;
    the rest (settings, issues, templates) follows the umask."""
    folder = project_after_a_session(tmp_path, mask)
    seen = {part: 0 for part in PRIVATE}
    for path in [folder, *folder.rglob("*")]:
        relative = path.relative_to(folder)
        private = relative.parts[:1] and relative.parts[0] in PRIVATE
        if private:
            seen[relative.parts[0]] += 1
            expected = 0o700 if path.is_dir() else 0o600
        else:
            expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert oct(mode(path)) == oct(expected), relative
    assert all(seen.values()), seen  # each private folder was really made


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_ledger_side_files_are_owner_only(tmp_path: Path, mask: int) -> None:
    """A new ledger, its -wal and -shm files and the folders made for it are 0600 / 0700."""
    path = tmp_path / ".newsletter" / "sends" / "issue@outbox.sqlite"
    with umask(mask):
        ledger = Ledger(path)
        ledger.add([Entry("a@example.org", "a@example.org")])
        ledger.commit()
        side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(p.exists() for p in side)
        modes = {p.name: oct(mode(p)) for p in [path, *side, path.parent, path.parent.parent]}
        ledger.close()
    assert modes == {
        "issue@outbox.sqlite": "0o600",
        "issue@outbox.sqlite-wal": "0o600",
        "issue@outbox.sqlite-shm": "0o600",
        "sends": "0o700",
        ".newsletter": "0o700",
    }


@pytest.mark.parametrize("kept", [0o644, 0o640, 0o604])
@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_list_rewrite_keeps_its_mode(tmp_path: Path, kept: int, mask: int) -> None:
    """`subscribers unsubscribe` rewrites a list: the file keeps the mode it had."""
    folder = tmp_path
    (folder / "newsletter.toml").write_text(
        '[newsletter]\nname = "N"\nfrom = "N <news@example.org>"\n', encoding="utf-8"
    )
    path = folder / "subscribers" / "list.csv"
    path.parent.mkdir()
    path.write_text("email,name,status\na@example.org,A,subscribed\n", encoding="utf-8")
    path.chmod(kept)
    done = run(folder, "subscribers", "unsubscribe", "a@example.org", umask=mask)
    assert done.returncode == 0, done.stderr
    assert "unsubscribed" in path.read_text(encoding="utf-8")
    assert oct(mode(path)) == oct(kept)


def test_ledger_keeps_its_mode(tmp_path: Path) -> None:
    """An existing ledger made 0640 by its owner stays so, and so do its -wal and -shm files."""
    path = tmp_path / "sends" / "issue@outbox.sqlite"
    Ledger(path).close()
    path.chmod(0o640)
    with umask(0o022):
        ledger = Ledger(path)
        ledger.add([Entry("a@example.org", "a@example.org")])
        ledger.commit()
        modes = {oct(mode(Path(f"{path}{suffix}"))) for suffix in ("", "-wal", "-shm")}
        ledger.close()
    assert modes == {"0o640"}


def test_atomic_write_new_file_and_folders_are_private(tmp_path: Path) -> None:
    """The shared writer's default: a new file 0600 in new folders 0700, whatever the umask."""
    target = tmp_path / "a" / "b" / "file.txt"
    with umask(0o000):
        atomic_write_text(target, lambda out: out.write("x"))
    assert [oct(mode(p)) for p in (target, target.parent, target.parent.parent)] == [
        "0o600",
        "0o700",
        "0o700",
    ]


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_published_pages_are_readable(tmp_path: Path, mask: int) -> None:
    """`render` and `archive` output is meant for a web server: files 0644 in folders 0755."""
    folder = make_send_folder(tmp_path, 1)
    for args in (["render", ISSUE, "-o", "out/render"], ["archive", "-o", "out/site"]):
        done = run(folder, *args, umask=mask)
        assert done.returncode == 0, done.stderr
    made = list((folder / "out").rglob("*"))
    assert {p.name for p in made} >= {"render", "site", "index.html", "feed.xml"}
    for path in [folder / "out", *made]:
        assert oct(mode(path)) == oct(0o755 if path.is_dir() else 0o644), path

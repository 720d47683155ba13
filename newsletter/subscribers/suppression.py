"""Who is blocked: the suppression file (.newsletter/suppressed, hashed addresses) and any
non-subscribed row of a list (everywhere, unless its `scope` is `list`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.addresses import address_key, digest_hash, key_digest, key_hash
from newsletter.errors import InvalidInput
from newsletter.fileio import atomic_write_text, locked
from newsletter.subscribers.csvfile import SCOPE, list_files, suppressed_path
from newsletter.subscribers.journal import Signature, journal_path, open_list, signature


def read_suppressed(folder: Path) -> set[int]:
    """The compact keys of the suppression file's entries; InvalidInput at a line that is not one.

    A damaged file stops a send rather than let it mail someone whose entry cannot be read.
    """
    path = suppressed_path(folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    except UnicodeDecodeError:
        raise InvalidInput.one(path, "not UTF-8 text") from None
    lines = enumerate(text.splitlines(), 1)
    return {_entry_hash(path, number, line) for number, line in lines if _is_entry(line)}


def read_purged(folder: Path) -> set[int]:
    """The compact keys of the entries `purge` wrote (after `read_suppressed` checked them)."""
    try:
        text = suppressed_path(folder).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return set()
    entries = (line.split() for line in text.splitlines() if _is_entry(line))
    return {digest_hash(parts[0]) for parts in entries if parts[1:] == ["purged"]}


def _entry_hash(path: Path, number: int, line: str) -> int:
    digest = line.split()[0]
    if not _DIGEST.fullmatch(digest):
        message = "not an entry: a sha256 digest (64 hex digits) starts each line"
        raise InvalidInput.one(path, message, line=number)
    return digest_hash(digest)


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _is_entry(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def is_suppressed(folder: Path, email: str) -> bool:
    return key_hash(address_key(email)) in read_suppressed(folder)


def suppression_reason(folder: Path, email: str) -> str | None:
    """Why the suppression file holds the address ("" when its line says nothing); None when
    it does not."""
    path = suppressed_path(folder)
    digest = key_digest(address_key(email))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise InvalidInput.one(path, "not UTF-8 text") from None
    for line in text.splitlines():
        parts = line.split(maxsplit=1)
        if parts[:1] == [digest]:
            return parts[1].strip() if len(parts) > 1 else ""
    return None


def suppress(folder: Path, email: str, reason: str) -> bool:
    """Record sha256(address key) in .newsletter/suppressed; False if it was already there."""
    path = suppressed_path(folder)
    digest = key_digest(address_key(email))
    with locked(path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = "# sha256 of an address key, then why: never mail, never import again\n"
        except UnicodeDecodeError:
            raise InvalidInput.one(path, "not UTF-8 text") from None
        # A damaged line elsewhere must not stop this entry from being written.
        if any(line.split()[:1] == [digest] for line in text.splitlines()):
            return False
        if text and not text.endswith("\n"):  # a hand edit without a final newline
            text += "\n"
        atomic_write_text(path, lambda out: out.write(f"{text}{digest} {reason}\n"), mode=0o600)
    return True


def unsuppress(folder: Path, email: str) -> bool:
    """Remove an address's entry from the suppression file; True if there was one."""
    path = suppressed_path(folder)
    digest = key_digest(address_key(email))
    with locked(path):
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return False
        kept = [line for line in lines if not (_is_entry(line) and line.split()[0] == digest)]
        if len(kept) == len(lines):
            return False
        atomic_write_text(path, lambda out: out.writelines(kept), mode=0o600)
    return True


@dataclass
class Blocks:
    everywhere: set[int] = field(default_factory=set)
    by_list: dict[Path, set[int]] = field(default_factory=dict)  # rows with scope = list
    purged: set[int] = field(default_factory=set)  # erased on request (in `everywhere` too)

    def blocks(self, compact: int, path: Path | None) -> bool:
        if compact in self.everywhere:
            return True
        scoped = self.by_list.get(path) if path is not None else None
        return scoped is not None and compact in scoped


def _blocked_in(path: Path) -> tuple[set[int], set[int]]:
    """(blocked everywhere, blocked in this list only) by one list's non-subscribed rows."""
    everywhere: set[int] = set()
    here: set[int] = set()
    with open_list(path) as reader:
        email = reader.index["email"]
        status = reader.index.get("status")
        scope = reader.index.get(SCOPE)
        if status is None:
            return everywhere, here
        for _line, cells in reader.rows():
            value = cells[status].strip().lower() if status < len(cells) else ""
            if not value or value == "subscribed":
                continue
            scoped = scope is not None and scope < len(cells) and cells[scope].strip() == "list"
            (here if scoped else everywhere).add(key_hash(address_key(cells[email])))
    return everywhere, here


class Blocklist:
    """Who must not get mail now; `refresh()` between batches re-reads only lists that changed.

    A list counts as changed when it or its journal changed (inode, size, mtime or ctime); the
    suppression file likewise.
    A list that cannot be read raises InvalidInput (stop sending rather than miss an unsubscribe).
    """

    def __init__(self, folder: Path, lists: Sequence[Path] = ()) -> None:
        self.folder = folder
        self.extra = list(lists)
        self._seen: dict[Path, tuple[Signature, Signature]] = {}
        self._by_file: dict[Path, tuple[set[int], set[int]]] = {}
        self._purged: set[int] = set()
        self.refresh()

    def refresh(self) -> bool:
        """Re-read what changed since the last call; True when anything did."""
        paths = [*list_files(self.folder), *self.extra, suppressed_path(self.folder)]
        changed = False
        for path in dict.fromkeys(paths):
            signature = _signature(path)
            if self._seen.get(path) == signature:
                continue
            self._seen[path] = signature
            self._by_file[path] = self._read(path)
            changed = True
        return changed

    def _read(self, path: Path) -> tuple[set[int], set[int]]:
        if path == suppressed_path(self.folder):
            everywhere = read_suppressed(self.folder)
            self._purged = read_purged(self.folder)
            return everywhere, set()
        return _blocked_in(path)  # a broken list raises: its unsubscribes must not be missed

    def blocks(self) -> Blocks:
        merged = Blocks(purged=set(self._purged))
        for path, (everywhere, here) in self._by_file.items():
            merged.everywhere |= everywhere
            if here:
                merged.by_list[path] = here
        return merged

    def is_blocked(self, email: str, list_path: Path | None = None) -> bool:
        """True when the address must not get mail (from `list_path`, for list-scoped rows)."""
        compact = key_hash(address_key(email))
        for path, (everywhere, here) in self._by_file.items():
            if compact in everywhere or (path == list_path and compact in here):
                return True
        return False


def _signature(path: Path) -> tuple[Signature, Signature]:
    """The file and its journal as they are now (inode, size, mtime, ctime): an unsubscribe
    `serve` has only journaled changes the second, a fold or an editor the first."""
    return signature(path), signature(journal_path(path))

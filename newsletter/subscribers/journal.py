"""A list's change journal: changes made durable by one append, applied by every reader,
folded into the CSV file by the next rewrite of the list (rewrite.py).

Where: beside the list, `.NAME.journal` (as its lock is `.NAME.lock`); none when nothing is
pending. What: UTF-8 lines. The first names the format and a nonce (a new one for each journal
file, so a reader can tell that the journal was folded while it opened the list); each other
line is one entry, `JSON<TAB>crc32`: an edit (edits.from_entry) or a fold mark.

Crash rules. An append is whole once its fsync returns; a last line without its newline was
never acknowledged: readers skip it and the next append cuts it off. A whole line (newline and
all) with a wrong checksum is damage, not a crash: reading names it, nothing cuts it off. A fold
writes the new list, appends a mark naming that file (inode, size, mtime), renames it over the
list, then deletes the journal: when a journal still ends in such a mark and the list is that
file, the entries before the mark are in it already, so they are not applied twice.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from newsletter.addresses import address_key
from newsletter.errors import InvalidInput, UnreadableList
from newsletter.fileio import (
    atomic_write,
    fsync_folder,
    lock_path,
    locked,
    open_private,
    reporting,
)
from newsletter.models import Subscriber
from newsletter.subscribers.csvfile import ListReader, RowParser, open_bytes
from newsletter.subscribers.edits import Chain, Edit, from_entry

MAGIC = "# newsletter journal 1 "  # then the nonce
Identity = tuple[int, int, int]  # a list file: inode, size, mtime (ns)


def journal_path(path: Path) -> Path:
    """The journal of the list at `path`: `.NAME.journal` beside it."""
    return path.with_name(f".{path.name}.journal")


def identity(info: os.stat_result) -> Identity:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


# ---------------------------------------------------------------------------------------------
# Reading a journal


@dataclass
class Journal:
    """A journal as read: its nonce ("" when there is none), entries (line number, byte offset,
    entry), `end`, the bytes of whole acknowledged lines (a torn append may follow), `size`."""

    path: Path
    nonce: str = ""
    entries: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    end: int = 0
    size: int = 0

    def pending(self, current: Identity | None) -> list[Edit]:
        """The edits not yet in the list file `current`: a fold mark naming that file says
        which entries it holds (those before the offset the mark gives)."""
        through = 0
        for _line, _offset, entry in self.entries:
            if entry["op"] == "fold" and tuple(entry["file"]) == current:
                through = max(through, int(entry["through"]))
        edits = []
        for _line, offset, entry in self.entries:
            if offset >= through and entry["op"] != "fold":
                edit = from_entry(entry)
                edit.ref = f"{self.nonce}:{offset}"  # the same entry in a retried fold
                edits.append(edit)
        return edits


def _reads(entry: dict[str, Any]) -> bool:
    try:
        _checked(Path(), 0, entry)
    except UnreadableList:
        return False
    return True


def _checked(where: Path, line: int, entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` when it is one this version reads (a fold mark, or an edit), else UnreadableList
    naming its line: a checksum says a line is whole, not that its fields are right."""
    try:
        if entry["op"] != "fold":
            from_entry(entry)
        elif not (
            isinstance(entry["file"], list)
            and len(entry["file"]) == 3
            and all(type(n) is int for n in [*entry["file"], entry["through"]])
        ):
            raise ValueError("a fold mark needs file: [inode, size, mtime] and through")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableList(where, f"not a journal entry ({exc})", line=line) from None
    return entry


def read_journal(path: Path) -> Journal:
    """The journal of the list at `path` (empty when there is none)."""
    where = journal_path(path)
    with reporting(where, "cannot read the journal"):
        try:
            data = where.read_bytes()
        except FileNotFoundError:
            return Journal(where)
    lines = data.split(b"\n")[:-1]  # what follows the last newline is a torn append
    if not lines:
        return Journal(where, size=len(data))
    journal = Journal(where, _nonce(where, lines[0]), end=len(lines[0]) + 1, size=len(data))
    for number, raw in enumerate(lines[1:], 2):
        entry = _entry(raw)
        if entry is None:  # a whole line (a crash cuts an append short of its newline)
            raise UnreadableList(where, "a damaged journal entry (its checksum is wrong)", number)
        journal.entries.append((number, journal.end, _checked(where, number, entry)))
        journal.end += len(raw) + 1
    return journal


def _nonce(where: Path, first: bytes) -> str:
    """The nonce in a journal's first line (`where` names the journal in the error)."""
    text = first.decode("utf-8", errors="replace")
    if not text.startswith(MAGIC):
        raise UnreadableList(where, "not a journal of this tool (its first line)", line=1)
    return text.removeprefix(MAGIC).strip()


def _entry(raw: bytes) -> dict[str, Any] | None:
    body, tab, crc = raw.rpartition(b"\t")
    if not tab or crc != b"%08x" % zlib.crc32(body):
        return None
    try:
        entry = json.loads(body)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "op" in entry else None


def encode(entry: dict[str, Any]) -> bytes:
    body = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
    return body + b"\t%08x\n" % zlib.crc32(body)


def current_state(path: Path) -> tuple[str, int]:
    """The nonce and size of the list's journal now (("", 0) when there is none): a cheap look."""
    try:
        with journal_path(path).open("rb") as handle:
            first = handle.readline()
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        return "", 0
    nonce = _nonce(journal_path(path), first[:-1]) if first.endswith(b"\n") else ""
    return nonce, size


# ---------------------------------------------------------------------------------------------
# Reading a list as it is now: the file with its journal applied


@contextlib.contextmanager
def open_list(path: Path, required: str = "email") -> Iterator[ListReader]:
    """Open a list as every command sees it: the file with its pending journal applied.

    No lock: the journal is read first, then the file; if the journal changed in between (an
    append, or a fold that replaced both), both are read again, so no change is missed or
    applied twice.
    """
    journal, handle = open_consistent(path)
    with handle:
        edits = journal.pending(identity(os.fstat(handle.fileno())))
        yield ListReader(path, handle, required, Chain(edits) if edits else None)


def open_consistent(path: Path) -> tuple[Journal, IO[bytes]]:
    """The list's journal and its file opened, with no change to the journal in between."""
    while True:
        journal = read_journal(path)
        handle = open_bytes(path)
        if current_state(path) == (journal.nonce, journal.size):
            return journal, handle
        handle.close()


def read_list(path: Path) -> Iterator[Subscriber]:
    """Every row of a list as a Subscriber, streaming; InvalidInput at the first bad row.

    Use `check_lists` to report every problem of a file at once.
    """
    with open_list(path) as reader:
        parser = RowParser(reader)
        for line, cells in reader.rows():
            parsed = parser.parse(line, cells)
            if isinstance(parsed, list):
                raise InvalidInput(parsed)
            yield parsed


def read_loosely(path: Path) -> Iterator[Subscriber]:
    """Every row as a Subscriber without checking it (for `list` and `stats`): fast, forgiving."""
    with open_list(path) as reader:
        parser = RowParser(reader)
        for _line, cells in reader.rows():
            yield parser.subscriber(cells, cells[parser.email].strip(), False)


def holds(path: Path, key: str) -> bool:
    """Does the list have a row for this address key? (A read without the lock, to skip lists.)"""
    with open_list(path) as reader:
        email = reader.index["email"]
        return any(address_key(cells[email]) == key for _line, cells in reader.rows())


# ---------------------------------------------------------------------------------------------
# Writing: appends (group-committed between threads), the fold mark, the end of a journal


def append(path: Path, edits: Sequence[Edit]) -> None:
    """Append `edits` to the list's journal, durably (fsynced) when it returns.

    Threads appending to one list at once share one write and one fsync (group commit): each
    waits for the batch holding its edits. A failure reaches every thread of that batch.
    """
    _group(path).commit([encode(entry) for edit in edits if (entry := edit.entry()) is not None])


class _Group:
    """The appends to one list's journal from the threads of this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mutex = threading.Lock()  # guards the fields below; held only briefly
        self.writer = threading.Lock()  # held by the thread writing a batch
        self.queued: list[tuple[int, list[bytes]]] = []
        self.issued = 0  # tickets handed out
        self.done = 0  # every ticket up to this one is written (or failed)
        self.failed: dict[int, BaseException] = {}

    def commit(self, lines: list[bytes]) -> None:
        with self.mutex:
            self.issued += 1
            ticket = self.issued
            self.queued.append((ticket, lines))
        with self.writer:
            with self.mutex:
                if ticket <= self.done:  # another thread wrote it with its own batch
                    failure = self.failed.pop(ticket, None)
                    if failure is not None:
                        raise failure
                    return
                batch, self.queued = self.queued, []
            self._write(batch, ticket)

    def _write(self, batch: list[tuple[int, list[bytes]]], ticket: int) -> None:
        try:
            write_entries(self.path, [line for _ticket, lines in batch for line in lines])
        except BaseException as exc:
            with self.mutex:
                self.failed.update((t, exc) for t, _lines in batch if t != ticket)
                self.done = batch[-1][0]
            raise
        with self.mutex:
            self.done = batch[-1][0]


_groups: dict[Path, _Group] = {}
_groups_mutex = threading.Lock()


def _group(path: Path) -> _Group:
    with _groups_mutex:
        return _groups.setdefault(path.absolute(), _Group(path))


def write_entries(path: Path, lines: Sequence[bytes]) -> None:
    """Append encoded lines to the list's journal under the journal's lock, then fsync.

    Not under the list's lock: a fold holds that while it writes the new file, and takes the
    journal's lock only to read the entries it folds, and to mark and trim them at the end.
    """
    writable(path)
    with journal_locked(path):
        add_lines(path, lines)


def journal_locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """The lock of the list's journal (appends; a fold's first read and its end)."""
    return locked(journal_path(path))


def add_lines(path: Path, lines: Sequence[bytes]) -> None:
    """Append to the journal (the caller holds its lock): a torn tail is cut off first, a new
    journal gets its first line, and the data is fsynced before this returns."""
    where = journal_path(path)
    with reporting(where, "cannot write the journal"):
        fd = open_private(where, os.O_RDWR)
        try:
            created = _prepare(path, fd)
            os.write(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_folder(where.parent)


_TAIL = 64 * 1024  # bytes read to check the last line before an append


def _prepare(path: Path, fd: int) -> bool:
    """Seek to where the next line goes; True when the journal is new (its first line written)."""
    size = os.fstat(fd).st_size
    if size and not _torn(fd, size):
        os.lseek(fd, 0, os.SEEK_END)
        return False
    if size:
        journal = read_journal(path)  # a crash cut an append short: it was never acknowledged
        if journal.nonce:
            os.ftruncate(fd, journal.end)
            os.lseek(fd, 0, os.SEEK_END)
            return False
        os.ftruncate(fd, 0)  # not even its first line is whole
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{MAGIC}{secrets.token_hex(8)}\n".encode())
    return True


def _torn(fd: int, size: int) -> bool:
    """Does the journal end in anything but a whole, intact line?"""
    start = max(0, size - _TAIL)
    tail = os.pread(fd, size - start, start)
    if not tail.endswith(b"\n"):
        return True
    last = tail[:-1].rsplit(b"\n", 1)[-1]
    return not last.startswith(MAGIC.encode()) and _entry(last) is None


def writable(path: Path) -> None:
    """Fail now, not at the fold, when the list can never be replaced: its lock file cannot be
    opened, or the file is immutable (chattr +i: EPERM, for root too). A mode without write
    bits does not stop a rename: that passes."""
    with reporting(lock_path(path), "cannot open the lock file"):
        os.close(open_private(lock_path(path)))
    try:
        os.close(os.open(path, os.O_WRONLY))
    except FileNotFoundError:
        return
    except PermissionError as exc:
        if exc.errno == errno.EPERM:  # immutable or append-only; EACCES is only the mode
            with reporting(path, "cannot write"):
                raise


def mark_fold(path: Path, new: os.stat_result, through: int) -> None:
    """Record that the file `new` (about to replace the list) holds the entries before the
    byte offset `through` (the caller holds the journal's lock)."""
    add_lines(path, [encode({"op": "fold", "file": list(identity(new)), "through": through})])


def trim(path: Path, through: int) -> None:
    """Drop the entries before `through` (now in the list file) and every fold mark: the
    journal is deleted, or replaced by one with a new nonce holding the entries appended since
    (the caller holds the journal's lock)."""
    journal = read_journal(path)
    rest = [
        encode(e) for _l, offset, e in journal.entries if offset >= through and e["op"] != "fold"
    ]
    _replace_journal(path, rest)


def _replace_journal(path: Path, lines: list[bytes]) -> None:
    """The journal as `lines` alone, with a new nonce (deleted when there are none): written
    anew, never edited in place, so no dropped entry stays in the file's blocks."""
    if not lines:
        remove_journal(path)
        return
    first = f"{MAGIC}{secrets.token_hex(8)}\n".encode()
    atomic_write(journal_path(path), lambda out: out.write(first + b"".join(lines)))


def remove_journal(path: Path) -> None:
    """Delete the list's journal (every entry is in the file now), durably."""
    where = journal_path(path)
    with reporting(where, "cannot delete the journal"):
        try:
            where.unlink()
        except FileNotFoundError:
            return
        fsync_folder(where.parent)


# ---------------------------------------------------------------------------------------------
# Which lists hold an address, kept between calls (for `serve`)


Signature = tuple[int, int, int, int]  # a file: inode, size, mtime (ns), ctime (ns)


def signature(path: Path) -> Signature:
    try:
        return stat_signature(os.stat(path))
    except FileNotFoundError:
        return (-1, -1, -1, -1)


def stat_signature(info: os.stat_result) -> Signature:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclass
class _Known:
    file: Signature  # of the list file when its keys were read
    nonce: str  # of the journal then
    offset: int  # bytes of that journal read so far
    keys: set[str]


class Holders:
    """The address keys each list holds, as `holds` answers, without reading a big list for
    every question: a list is read again only when its file changed (inode, size, mtime or
    ctime) or its journal was folded; lines appended to the journal since are read alone, and
    only an `add` among them adds a key (a status entry never changes who a list holds).

    While a changed list is read again, an address the list held before is taken as held
    still (its entry then changes its row, or nothing if the row went: a purge suppressed it
    first); "not held" is only ever answered from the list as it is now.
    """

    def __init__(self) -> None:
        self.known: dict[Path, _Known] = {}
        self.mutex = threading.Lock()  # guards `known`; never held while a list is read
        self.reading: dict[Path, threading.Lock] = {}  # one read of each list at a time

    def holds(self, path: Path, key: str) -> bool:
        with self.mutex:
            known = self.known.get(path)
            if known is not None and (key in known.keys or self._current(path, known)):
                return key in known.keys
            reading = self.reading.setdefault(path, threading.Lock())
        with reading:
            with self.mutex:
                known = self.known.get(path)
                if known is not None and self._current(path, known):
                    return key in known.keys
            fresh = _read_keys(path)
            with self.mutex:
                self.known[path] = fresh
            return key in fresh.keys

    def folded(self, path: Path, before: Signature, after: Signature) -> None:
        """This process folded the list (`before` -> `after`, under its lock): if the keys
        were those of `before`, they are those of `after` (a fold adds only what the journal
        did, already counted); the journal, written anew, is read again from its start."""
        with self.mutex:
            known = self.known.get(path)
            if known is None or known.file != before:
                return
            nonce, _size = current_state(path)
            known.file, known.nonce, known.offset = after, nonce, 0

    def _current(self, path: Path, known: _Known) -> bool:
        """Are `known`'s keys those of the list now (after reading its journal's new lines)?"""
        return known.file == signature(path) and self._caught_up(path, known)

    def _caught_up(self, path: Path, known: _Known) -> bool:
        """Read the journal's new whole lines into `known`; False when it is another journal."""
        try:
            with journal_path(path).open("rb") as handle:
                first = handle.readline()
                nonce = _nonce(journal_path(path), first[:-1]) if first.endswith(b"\n") else ""
                if nonce != known.nonce:
                    return False
                known.offset = known.offset or len(first)  # 0: from the first entry
                handle.seek(known.offset)
                fresh = handle.read()
        except FileNotFoundError:
            return not known.nonce
        lines = fresh.split(b"\n")[:-1]
        for raw in lines:
            entry = _entry(raw)
            if entry is None or not _reads(entry):
                return False  # read it all again: reading names a damaged line
            if entry["op"] == "add":
                known.keys.add(address_key(str(entry["email"])))
            known.offset += len(raw) + 1
        return True


def _read_keys(path: Path) -> _Known:
    """Who the list holds: the file's addresses and those its journal adds (a status entry
    never changes who is in a list, so the journal is not applied row by row)."""
    file = signature(path)
    journal, handle = open_consistent(path)
    with handle:
        reader = ListReader(path, handle)
        email = reader.index["email"]
        keys = {address_key(cells[email]) for _line, cells in reader.rows()}
    for _line, _offset, entry in journal.entries:
        if entry["op"] == "add":
            keys.add(address_key(str(entry["email"])))
    return _Known(file, journal.nonce, journal.end, keys)


def journal_leftovers(path: Path) -> list[Path]:
    """The temp files of journal rewrites (trim) of the list `path` killed before their rename:
    each holds entries."""
    where = journal_path(path)
    return list(where.parent.glob(f".{where.name}.*.tmp"))


def drop_journal_leftovers(path: Path) -> None:
    """Delete `journal_leftovers(path)`, under the journal's lock (no trim of it is running)."""
    if not journal_leftovers(path):
        return
    with journal_locked(path):
        for leftover in journal_leftovers(path):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def scrub_orphans(folder: Path, key: str) -> None:
    """Drop the entries about `key` from the journals in `folder` whose list is gone, and the
    temp files of their killed rewrites (purge: a journal beside no list is never folded)."""
    names = {
        where.name.removeprefix(".").removesuffix(".journal") for where in folder.glob(".*.journal")
    }
    names |= {temp.name[2:].rpartition(".journal.")[0] for temp in folder.glob("..*.journal.*.tmp")}
    for name in names:
        path = folder / name
        if path.exists() or path.is_symlink():
            continue
        drop_journal_leftovers(path)
        with journal_locked(path):
            journal = read_journal(path)
            rest = [encode(e) for _l, _o, e in journal.entries if _about(e) != key]
            if len(rest) < len(journal.entries):
                _replace_journal(path, rest)


def _about(entry: dict[str, Any]) -> str:
    """The address key an entry is about ("" for a fold mark)."""
    return address_key(str(entry.get("key") or entry.get("email") or ""))

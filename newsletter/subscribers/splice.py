"""Changing a few rows of a big list without parsing the rest: untouched lines are copied as
bytes, only the rows of the addresses changed are parsed and written again.

CSV has no fixed-width rows, so a change still writes a new file (rewrite.py); what this saves
is the parsing and writing of every other row in Python (a 1,000,000-row list: ~3 s down to
about the time of copying the bytes). Untouched lines keep their bytes (the streaming rewrite
would write the same rows, perhaps quoted or padded differently: nothing a reader sees). It
applies only where that is sure, and says so by returning None otherwise:

- the file is already as a rewrite writes it: UTF-8, no BOM, `,`-delimited, every line ending
  in CRLF, `email` the first column, and the edits add no column;
- every edit is about one address whose key is ASCII (no `xn--` domain);
- every row that may hold one of those addresses is found: a line whose text holds the key
  (any case), whose first cell is quoted, or that holds one of the few non-ASCII characters
  an address key can fold to ASCII (sharp s, long s, the Kelvin sign, ligatures, spaces);
  each such line must start a record (an even number of quotes before it) and be one (an even
  number in it), and no quote may be left open at the end. Those rows are parsed and checked
  like any other (address_key).

What is not checked is every other row: a row the strict reader would refuse (a field over
128 KiB, text after a closing quote) is copied as it is, where the streaming rewrite would
refuse to replace the list. The file is no worse for it, and the next read names the row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from newsletter.addresses import address_key
from newsletter.errors import NewsletterError
from newsletter.subscribers.csvfile import ListReader
from newsletter.subscribers.edits import Chain, fit

_ASCII = bytes(range(128))
FEW = 8  # keys looked for one by one; more are found in one pass over every first cell
_FIRST_CELL = re.compile(rb"^([^,\r\n]*)", re.MULTILINE)
_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.strip() removes in ASCII
# Non-ASCII characters that NFC, casefold or lower() can turn into ASCII, and those str.strip()
# removes; an address key that is ASCII can come from a cell holding them, and from no other
# non-ASCII text (tests/test_subscribers_journal.py checks this against the whole of Unicode).
FOLDS_TO_ASCII = frozenset(
    "\u00df\u017f\u037e\u1e9e\u1fef\u212a\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
    "\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def splice(path: Path, data: bytes, chain: Chain) -> list[bytes | memoryview] | None:
    """The new file as pieces (`data` with the rows of `chain`'s addresses changed), or None
    when only the streaming rewrite can write it. The chain's `touched()` says if anything
    changed, as after a streaming rewrite."""
    keys = _keys(chain)
    names = _names(path, data) if keys is not None else None
    if keys is None or names is None or chain.header(list(names)) != names:
        return None
    lines = _candidates(data, keys)
    if lines is None:
        return None
    try:
        return _pieces(data, lines, chain, len(names))
    except csv.Error:  # a row the strict reader refuses: the streaming rewrite names it
        return None


def rows_of(
    path: Path, data: bytes, key: str
) -> tuple[list[str], list[tuple[int, list[str]]]] | None:
    """The header and the rows (line, cells) of the list file `data` whose address key is
    `key`, parsing only the lines that may hold it; None when only reading every row can say."""
    if not key.isascii() or "xn--" in key:
        return None
    names = _names(path, data)
    starts = _candidates(data, {key.encode()}) if names is not None else None
    if names is None or starts is None:
        return None
    rows: list[tuple[int, list[str]]] = []
    line, done = 1, 0
    for start in starts:
        line += data.count(b"\n", done, start)
        done = start
        end = data.find(b"\n", start) + 1
        cells = _cells(data[start:end])
        if cells is None:
            return None
        if address_key(cells[0]) == key:
            rows.append((line, cells + [""] * (len(names) - len(cells))))
    return names, rows


def _names(path: Path, data: bytes) -> list[str] | None:
    """The header of a list file as a rewrite writes it (`email` first), else None."""
    if not _canonical(data):
        return None
    try:
        names = ListReader(path, io.BytesIO(data[: data.find(b"\n") + 1])).names
    except NewsletterError:  # the streaming rewrite says what is wrong
        return None
    return names if names and names[0].lower() == "email" else None


def _cells(line: bytes) -> list[str] | None:
    try:
        return next(csv.reader([line.decode()], strict=True), [])
    except csv.Error:  # a row the strict reader refuses: a full read names it
        return None


def _keys(chain: Chain) -> set[bytes] | None:
    keys = {edit.key for edit in chain.edits}
    if None in keys or any(not k.isascii() or "xn--" in k for k in keys if k is not None):
        return None
    return {k.encode() for k in keys if k}


def _canonical(data: bytes) -> bool:
    """UTF-8 without BOM, every line ending in CRLF (no CR or LF alone)."""
    if data.startswith(b"\xef\xbb\xbf") or not data.endswith(b"\r\n"):
        return False
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return False
    try:
        data.isascii() or data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _candidates(data: bytes, keys: set[bytes]) -> list[int] | None:
    """Where each line that may hold one of `keys` starts (sorted); None when one of them does
    not start a record, or a record spans lines."""
    lowered = data.lower()  # ASCII letters only: a key is ASCII
    found: set[int] = set()
    if len(keys) > FEW:  # one pass over the first cells instead of one search per key
        found.update(m.start() for m in _FIRST_CELL.finditer(lowered) if m[1].strip(_SPACE) in keys)
    for key in keys if len(keys) <= FEW else ():
        found.update(_line_starts(data, lowered, key))
    if len(keys) > FEW or any(b'"' in key for key in keys):  # else found as its key's bytes
        found.update(_line_starts(data, data, b'\n"', offset=1))
    others = b"" if data.isascii() else data.translate(None, _ASCII)
    for char in set(others.decode()) & FOLDS_TO_ASCII:
        found.update(_line_starts(data, data, char.encode()))
    header_end = data.find(b"\n") + 1
    starts = sorted(start for start in found if start >= header_end)
    quotes = 0
    previous = 0
    for start in starts:
        quotes += data.count(b'"', previous, start)
        previous = start
        end = data.find(b"\n", start)
        if quotes % 2 or data.count(b'"', start, end) % 2:
            return None
    if (quotes + data.count(b'"', previous)) % 2:  # a quote left open: the reader refuses it
        return None
    return starts


def _line_starts(data: bytes, haystack: bytes, needle: bytes, offset: int = 0) -> Iterator[int]:
    at = haystack.find(needle)
    while at >= 0:
        yield data.rfind(b"\n", 0, at + offset) + 1
        at = haystack.find(needle, at + 1)


def _pieces(data: bytes, starts: list[int], chain: Chain, width: int) -> list[bytes | memoryview]:
    pieces: list[bytes | memoryview] = []
    whole = memoryview(data)  # slices of it are not copies
    done = 0
    for start in starts:
        end = data.find(b"\n", start) + 1
        cells = next(csv.reader([data[start:end].decode()], strict=True), [])
        if not cells or address_key(cells[0]) not in chain.by_key:
            continue
        kept = chain.row(0, cells + [""] * (width - len(cells)))
        pieces += [whole[done:start], b"" if kept is None else _encode(fit(kept, width))]
        done = end
    pieces.append(whole[done:])
    pieces.extend(_encode(fit(cells, width)) for cells in chain.tail())
    return pieces


def _encode(cells: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode()

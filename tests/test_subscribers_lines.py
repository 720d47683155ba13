"""For any bytes in a list file, reading accounts for every physical line or refuses naming one,
and a rewrite changes only the row it meant to (a property test against a small model).

The model is an independent RFC 4180 reader with the rules docs/subscribers.md states: lines end
at LF (or CRLF), or at CR when the first line ends with a lone CR; a field is quoted when it
starts with `"`, where `""` is a quote and line breaks are kept; after a closing quote comes the
delimiter or the line end; outside quotes a line break of the other kind is refused; a quote
never closed is refused at the line where it opened; a line that is not UTF-8 is refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from newsletter.addresses import address_key
from newsletter.errors import InvalidInput, UnreadableList
from newsletter.subscribers import change_status, check_lists, open_list, stamp
from newsletter.subscribers.csvfile import _delimiter

TARGET = "target@example.org"
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@dataclass
class Parsed:
    """The model's reading: a refusal at `refused`, or the header and the rows by start line."""

    refused: int | None = None
    lines: int = 0
    header: list[str] = field(default_factory=list)
    rows: list[tuple[int, list[str]]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # every record, blank ones too


def model(data: bytes) -> Parsed:
    first = re.search(rb"\r\n?|\n", data)
    mac = first is not None and first.group() == b"\r" and first.end() < len(data)
    end = b"\r" if mac else b"\n"
    parts = data.split(end)
    lines = [part + end for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    if not lines:
        return Parsed(refused=1)
    text: list[str] = []
    for number, raw in enumerate(lines, 1):
        try:
            text.append(raw.decode())
        except UnicodeDecodeError:
            return Parsed(refused=number)
    text[0] = text[0].removeprefix("\ufeff")
    parsed = records(text, _delimiter(text[0]), end.decode())
    parsed.lines = len(lines)
    return parsed


def records(lines: list[str], delimiter: str, end: str) -> Parsed:
    parsed = Parsed()
    number = 0
    while number < len(lines):
        start = number + 1
        cells, number = record(lines, number, delimiter, end)
        if isinstance(cells, int):  # the records before it: was the header read?
            return Parsed(refused=cells, spans=parsed.spans)
        parsed.spans.append((start, number))
        if start == 1:
            parsed.header = cells
        elif cells and (cells[0] or "".join(cells).strip()):
            parsed.rows.append((start, cells))
    return parsed


def record(lines: list[str], number: int, delimiter: str, end: str) -> tuple[list[str] | int, int]:
    """The cells of the record starting at lines[number] and the index after it; or the line
    to refuse at (an int) instead of cells. Outside quotes a CR or LF ends the record, and
    only more of them may follow it on that line (the csv module's rule)."""
    cells: list[str] = []
    chars: list[str] = []
    state, opened = "start", 0
    while True:
        if number == len(lines):
            return opened, number  # the end of the file inside a quoted field
        line = lines[number]
        number += 1
        body = line.removesuffix(end)
        for char in body:
            if state == "eat":
                if char not in "\r\n":
                    return number, number
            elif state == "quoted":
                state = "quote?" if char == '"' else "quoted"
                chars += [] if char == '"' else [char]
            elif state == "quote?" and char == '"':
                chars.append('"')
                state = "quoted"
            elif char == delimiter and state != "quoted":
                cells.append("".join(chars))
                chars, state = [], "start"
            elif char in "\r\n":
                if cells or state != "start":
                    cells.append("".join(chars))
                chars, state = [], "eat"
            elif state == "quote?":
                return (opened if opened < number else number), number
            elif state == "start" and char == '"':
                state, opened = "quoted", number
            else:
                chars.append(char)
                state = "plain"
        if state == "quoted":
            chars.append(line[len(body) :])
            continue
        if state != "eat" and (cells or body):
            cells.append("".join(chars))
        return cells, number


def padded(parsed: Parsed) -> list[tuple[int, list[str]]]:
    width = len(parsed.header)
    return [(line, cells + [""] * (width - len(cells))) for line, cells in parsed.rows]


HEADERS = [b"email,name,status", b"email;name;status", b"\xef\xbb\xbfEmail,Name", b"name,email"]
ENDS = [b"\r\n", b"\n", b"\r"]
PIECES = [TARGET.encode(), b"a@example.org", b"x", b" ", b"\xc2\xa0", b",", b";", b'"', b'""']
PIECES += [b"\r\n", b"\n", b"\r", b"\x00", b"\xc3\xa9", b"subscribed", b"bounced"]
PIECES += [b"<end>", b"<end>", b"<end>", b"<end>target@example.org,", b"<end>target@example.org;"]
made = st.builds(  # <end>: the header's line end, so most files keep to one kind
    lambda header, end, pieces: (header + b"<end>" + b"".join(pieces)).replace(b"<end>", end),
    st.sampled_from(HEADERS),
    st.sampled_from(ENDS),
    st.lists(st.sampled_from(PIECES), max_size=40),
)
raw = st.builds(lambda h, b: h + b, st.sampled_from([b"", *HEADERS]), st.binary(max_size=40))
targeted = st.builds(
    lambda body: re.sub(rb"(\r\n?|\n)", rb"\1target@example.org,", body, count=1), made
)
files = st.one_of(made, targeted, targeted, raw)

STRAY = b'email,name\r\na@example.org,A\r\nb@example.org,"Stray\r\nc@example.org,C\r\n'
CR_ONLY = b'email,name\rtarget@example.org,"T\rT"\r\ra@example.org,"A,""a"""\r'


def read(path: Path) -> list[tuple[int, list[str]]] | InvalidInput:
    try:
        with open_list(path) as reader:
            return list(reader.rows())
    except InvalidInput as exc:
        return exc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files)
@example(STRAY)
@example(CR_ONLY)
@example(b"\n\r\x00")  # an empty header, then a CR in an LF file: the header is named first
def test_every_line_is_accounted_for_or_refused(data: bytes) -> None:
    """Rows start where the model says, with its cells; or the refusal names the model's line."""
    expected = model(data)
    event("refused" if expected.refused else f"{min(len(expected.rows), 3)}+ rows")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.csv"
        path.write_bytes(data)
        got = read(path)
        report = check_lists([path])
    if expected.refused is not None:
        header_read = bool(expected.spans) and expected.spans[0][1] < expected.refused
        if header_read and type(got) is InvalidInput:  # a wrong header is named first
            assert {p.line for p in got.problems} == {1}
            return
        assert isinstance(got, UnreadableList), got
        assert (got.path, got.line) == (path, expected.refused)
        *before, last = report.problems  # the rows read before it, then the refusal
        assert (last.path, last.line) == (path, expected.refused)
        assert all(p.line is not None and p.line < expected.refused for p in before)
        return
    lines = expected.lines
    covered = [n for first, last in expected.spans for n in range(first, last + 1)]
    assert covered == list(range(1, lines + 1))  # the model's own accounting is complete
    if isinstance(got, InvalidInput):  # a wrong header: refused at line 1
        assert {p.line for p in got.problems} == {1}
        return
    assert got == padded(expected)
    assert report.rows == len(expected.rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files)
@example(STRAY.replace(b"a@example.org", TARGET.encode()))
@example(CR_ONLY)
def test_a_rewrite_changes_only_the_rows_it_means_to(data: bytes) -> None:
    """Unsubscribing one address: every other row is byte-identical after the normalisation
    (UTF-8, comma, CRLF, as many cells as the header); a list it cannot read is untouched."""
    expected = model(data)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "subscribers" / "list.csv"
        path.parent.mkdir()
        path.write_bytes(data)
        try:
            change_status(folder, TARGET, "unsubscribed", when=WHEN)
        except InvalidInput:
            assert path.read_bytes() == data
            event("refused")
            assert expected.refused is not None or _header_wrong(expected.header)
            return
        after = path.read_bytes()
    event("rewritten" if after != data else "unchanged")
    assert expected.refused is None
    assert after == _rewritten(expected, data)


def _header_wrong(header: list[str]) -> bool:
    names = [name.strip().lower() for name in header]
    return "email" not in names or len(set(names)) < len(names) or "" in names


def _rewritten(parsed: Parsed, data: bytes) -> bytes:
    """What the unsubscribe writes: the original when no row changes."""
    names = [name.strip() for name in parsed.header]
    lowered = [name.lower() for name in names]
    for column in ("status", "unsubscribed_at"):
        if column not in lowered:
            names.append(column)
            lowered.append(column)
    out = io.StringIO()
    quoting = csv.QUOTE_ALL if any(";" in n or "\t" in n for n in names) else csv.QUOTE_MINIMAL
    csv.writer(out, lineterminator="\r\n", quoting=quoting).writerow(names)
    writer = csv.writer(out, lineterminator="\r\n")
    changed = False
    for _line, cells in padded(parsed):
        cells = _fit(cells, len(names))
        if address_key(cells[lowered.index("email")]) == TARGET:
            status = lowered.index("status")
            if (cells[status].strip().lower() or "subscribed") in ("subscribed", "pending"):
                cells[status] = "unsubscribed"
                cells[lowered.index("unsubscribed_at")] = stamp(WHEN)
                changed = True
            elif cells[status].strip().lower() not in ("unsubscribed", "bounced", "complained"):
                cells[status] = "unsubscribed"  # an unknown status ranks below unsubscribed
                cells[lowered.index("unsubscribed_at")] = stamp(WHEN)
                changed = True
        writer.writerow(cells)
    return out.getvalue().encode() if changed else data


def _fit(cells: list[str], width: int) -> list[str]:
    if len(cells) < width:
        return cells + [""] * (width - len(cells))
    if len(cells) > width and not "".join(cells[width:]).strip():
        return cells[:width]
    return cells

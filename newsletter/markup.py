"""HTML as text: where a line may break without changing the page, and how deep elements nest.

SMTP allows 998 octets per line; MJML writes lines of 45,000. `wrap_lines` breaks them only
where a newline cannot change what the reader sees:

- between the attributes of a tag (a newline there is whitespace like any other);
- at a space or tab of text that the browser collapses: that one character becomes the newline.

It never adds a character to text, never touches attribute values, comments (Outlook reads its
conditional comments as HTML), script/style/textarea/title, `<pre>`, `<listing>`, or any element
whose inline style may keep white space (any `white-space` value but `normal` or `nowrap`,
read after CSS comments and escapes: `pre`, `var(--w)`, `inherit`...); if a style sheet in the
page sets such a value, no text is broken at all. A text space between two East Asian wide
characters stays (Gecko, hence Thunderbird, drops a newline there), as does one next to U+200B,
and one between a merge-field marker (`opaque`) and anything but a narrow character: the name
filled in later may begin or end with a wide one. A line with no such place is left long: the
message stage then sends that part base64-encoded.

The scan is one pass over the UTF-8 bytes (all markup is ASCII, and UTF-8 never uses ASCII
bytes inside a multi-byte character); each cut searches back from the limit, so the whole is
linear in the size of the page.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator
from html import unescape

MAX_LINE = 998  # octets per line on the SMTP wire (RFC 5321)
MAX_DEPTH = 100  # elements nested in one Markdown value; MJML's parser recurses per level

# Inside a tag: a whitespace run, `=value` (quoted values whole), or an attribute name. A quote
# outside a value makes the tag unparsable here, and the rest of the page is left unbroken.
_PART = rb"""[\s/]+|=\s*(?:"[^"]*"|'[^']*'|[^\s>"'][^\s>]*|(?=>))|[^\s/>="']+"""
_TOKEN = re.compile(
    rb"(?P<comment><!--.*?(?:-->|\Z))"
    rb"|(?P<tag><(?P<end>/?)(?P<name>[A-Za-z][^\s/>\"']*)(?P<attrs>(?:" + _PART + rb")*+)>)"
    rb"|(?P<open></?[A-Za-z].*)"  # a tag that never closes runs to the end of the page
    rb"|(?P<other><[!?/][^>]*>?)"  # doctype, CDATA, processing instruction, bogus comment
    rb"|(?P<text>[^<]+|<)",
    re.DOTALL,
)
_PARTS = re.compile(_PART)
_RAW = frozenset({b"script", b"style", b"textarea", b"title", b"xmp", b"iframe", b"noembed"})
_RAW |= {b"noframes", b"noscript"}
_PRE = frozenset({b"pre", b"listing", b"plaintext"})
_VOID = frozenset(b"area base br col embed hr img input link meta param source track wbr".split())
# CSS as the browser reads it: comments gone, escapes decoded (`\\70 re` is `pre`).
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.DOTALL)
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\r\n\f]?|(.))", re.DOTALL)
_WHITE_SPACE = re.compile(r"white-space[\w-]*\s*:\s*([^;}\"']*)", re.IGNORECASE)
_COLLAPSES = frozenset({"normal", "nowrap"})  # white space collapses as by default
_MAY_NAME_WHITE_SPACE = re.compile(rb"white-space|[\\&]", re.IGNORECASE)  # escapes may spell it
_BLANK = b" \t"
_HAS_BLANK = re.compile(rb"[ \t]+")
# A quoted attribute value is skipped whole: '/>' or '>' inside one ends no tag. A comment or
# tag that never closes takes the rest of the page, as in HTML: read once, never per '<'.
_ANY_TAG = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<(?P<end>/?)(?P<name>[A-Za-z][^\s/>\"']*+)(?P<attrs>(?:\"[^\"]*\"|'[^']*'|[^>\"'])*+)>"
    r"|</?[A-Za-z].*",
    re.S,
)


def wrap_lines(html: str, limit: int = MAX_LINE, opaque: re.Pattern[bytes] | None = None) -> str:
    """`html` with lines over `limit` octets broken where the page cannot change (see above).

    `opaque` matches text replaced later (merge-field markers): its characters are unknown."""
    data = bytearray(html.encode())
    if all(len(line) <= limit for line in data.split(b"\n")):
        return html
    places = BreakPlaces(bytes(data), opaque)
    start = 0
    for end in _line_ends(data):
        while end - start > limit:
            cut = places.last(start + 1, start + limit) or places.first(start + limit + 1, end)
            if cut is None:
                break
            data[cut] = ord("\n")
            start = cut + 1
        start = end + 1
    return data.decode()


def _line_ends(data: bytearray) -> Iterator[int]:
    end = data.find(b"\n")
    while end >= 0:
        yield end
        end = data.find(b"\n", end + 1)
    yield len(data)


class BreakPlaces:
    """The spans of a page where a space or tab may become a newline: text spans, tags."""

    def __init__(self, data: bytes, opaque: re.Pattern[bytes] | None = None) -> None:
        self.data = data
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.in_tag: list[bool] = []
        self._tag_cache: dict[int, list[int]] = {}
        self._runs = _Runs(data, opaque)
        self._scan()

    def last(self, low: int, high: int) -> int | None:
        """The last place in [low, high], or None."""
        index = bisect.bisect_right(self.starts, high) - 1
        while index >= 0 and self.ends[index] > low:
            top = min(high, self.ends[index] - 1)
            found = self._search(index, max(low, self.starts[index]), top, backwards=True)
            if found is not None:
                return found
            index -= 1
        return None

    def first(self, low: int, high: int) -> int | None:
        """The first place in [low, high), or None."""
        index = max(bisect.bisect_right(self.starts, low) - 1, 0)
        while index < len(self.starts) and self.starts[index] < high:
            top = min(high, self.ends[index]) - 1
            found = self._search(index, max(low, self.starts[index]), top, backwards=False)
            if found is not None:
                return found
            index += 1
        return None

    def _search(self, index: int, low: int, high: int, *, backwards: bool) -> int | None:
        """A place in span `index` within [low, high]: the last one or the first one."""
        if low > high:
            return None
        if self.in_tag[index]:
            places = self._tag_places(index)
            lo, hi = bisect.bisect_left(places, low), bisect.bisect_right(places, high)
            return (places[hi - 1] if backwards else places[lo]) if lo < hi else None
        return _text_place(self._runs, low, high + 1, backwards=backwards)

    def _tag_places(self, index: int) -> list[int]:
        if index not in self._tag_cache:  # one tag at a time: consecutive cuts ask again
            places = []
            for part in _PARTS.finditer(self.data, self.starts[index], self.ends[index]):
                if part.group()[:1] in b" \t\n\r\f\v/":
                    places += [p for p in range(*part.span()) if self.data[p] in _BLANK]
            self._tag_cache = {index: places}
        return self._tag_cache[index]

    def _scan(self) -> None:
        keeping: list[bytes] = []  # open elements from the first one that keeps white space
        sheet_keeps = False
        pos = 0
        while pos < len(self.data):
            token = _TOKEN.match(self.data, pos)
            assert token is not None  # the last alternative matches any byte
            pos = token.end()
            if token["text"] is not None and not keeping:
                if _HAS_BLANK.search(token["text"]):
                    self._add(token.start(), pos, in_tag=False)
            elif token["tag"] is not None:
                if _HAS_BLANK.search(token["attrs"]):
                    self._add(token.start("attrs"), token.end("attrs"), in_tag=True)
                name = token["name"].lower()
                if token["end"]:
                    _close(keeping, name)
                    continue
                if name not in _VOID and (
                    keeping or name in _PRE or _keeps_space(token[0], tag=True)
                ):
                    keeping.append(name)
                if name in _RAW:
                    pos, content = _raw_text(self.data, pos, name)
                    sheet_keeps |= name == b"style" and _keeps_space(content, tag=False)
                if name == b"plaintext":
                    break
        if sheet_keeps:
            self._drop_text()

    def _add(self, start: int, end: int, *, in_tag: bool) -> None:
        if start < end:
            self.starts.append(start)
            self.ends.append(end)
            self.in_tag.append(in_tag)

    def _drop_text(self) -> None:
        kept = [i for i, tag in enumerate(self.in_tag) if tag]
        self.starts = [self.starts[i] for i in kept]
        self.ends = [self.ends[i] for i in kept]
        self.in_tag = [True] * len(kept)


def _keeps_space(css: bytes, *, tag: bool) -> bool:
    """Whether a tag's attributes or a style sheet may set a white-space that keeps spaces.

    Any value but plain `normal` or `nowrap` counts (`var(--w)`, `inherit`: unknown here)."""
    if not _MAY_NAME_WHITE_SPACE.search(css):
        return False
    text = css.decode(errors="replace")
    text = unescape(text) if tag else text  # attribute values are decoded, sheets not
    text = _CSS_ESCAPE.sub(_css_char, _CSS_COMMENT.sub(" ", text))
    for value in _WHITE_SPACE.findall(text):
        if value.lower().replace("!important", "").strip() not in _COLLAPSES:
            return True
    return False


def _css_char(escape: re.Match[str]) -> str:
    code = int(escape[1], 16) if escape[1] else ord(escape[2])
    return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"


def _close(keeping: list[bytes], name: bytes) -> None:
    """An end tag: pop up to its element (implied end tags), or ignore a stray one."""
    if name in keeping:
        while keeping.pop() != name:
            pass


def _raw_text(data: bytes, pos: int, name: bytes) -> tuple[int, bytes]:
    """Where the content of a script/style/textarea... ends, and that content."""
    end = re.compile(rb"</" + name + rb"[\s/>]", re.IGNORECASE).search(data, pos)
    stop = end.start() if end else len(data)
    return stop, data[pos:stop]


def _text_place(runs: _Runs, low: int, high: int, *, backwards: bool) -> int | None:
    """The last (or first) space or tab in data[low:high] whose run may hold a newline."""
    return _last_text_place(runs, low, high) if backwards else _first_text_place(runs, low, high)


def _last_text_place(runs: _Runs, low: int, high: int) -> int | None:
    data = runs.data
    space, tab = data.rfind(b" ", low, high), data.rfind(b"\t", low, high)
    while max(space, tab) >= 0:
        place = max(space, tab)
        run_start, free = runs.at(place)
        if free:
            return place
        if space >= run_start:  # search again only below the run: each octet is seen once
            space = data.rfind(b" ", low, run_start)
        if tab >= run_start:
            tab = data.rfind(b"\t", low, run_start)
    return None


def _first_text_place(runs: _Runs, low: int, high: int) -> int | None:
    for run in _HAS_BLANK.finditer(runs.data, low, high):
        if runs.at(run.start())[1]:
            return run.start()
    return None


class _Runs:
    """Runs of spaces and tabs in text, and whether a newline may replace one of them. The
    last run is remembered: every cut in one long run asks about it again, and measuring it
    each time made wrapping quadratic in its length."""

    def __init__(self, data: bytes, opaque: re.Pattern[bytes] | None) -> None:
        self.data = data
        self.opaque = opaque
        self._last = (0, 0, False)  # start, end, free

    def at(self, place: int) -> tuple[int, bool]:
        """The start of the run around `place`, and whether a newline may go in it."""
        start, end, free = self._last
        if not start <= place < end:
            start, end = _run(self.data, place)
            free = _may_break(self.data, start, end, self.opaque)
            self._last = (start, end, free)
        return start, free


def _run(data: bytes, place: int) -> tuple[int, int]:
    """The run of spaces and tabs around `place`: [start, end)."""
    start, end = place, place + 1
    while start > 0 and data[start - 1] in _BLANK:
        start -= 1
    while end < len(data) and data[end] in _BLANK:
        end += 1
    return start, end


def _may_break(
    data: bytes, run_start: int, run_end: int, opaque: re.Pattern[bytes] | None = None
) -> bool:
    """Whether a newline in this run of text renders as the space it replaces.

    CSS Text 3 removes a segment break between two East Asian wide characters and next to
    U+200B. A side that is markup ('>', '<') or an entity (';') is unknown; one known narrow
    side is enough."""
    before = _char_before(data, run_start)
    after = _char_after(data, run_end)
    if opaque is not None:  # a value filled in later may begin or end with a wide character
        before = "" if _ends_with(opaque, data, run_start) else before
        after = "" if opaque.match(data, run_end) else after
    if "\u200b" in (before, after):
        return False
    return _narrow(before) or _narrow(after)


def _ends_with(pattern: re.Pattern[bytes], data: bytes, pos: int) -> bool:
    """Whether a match of `pattern` (of at most 64 octets) ends right at `pos`."""
    window = data[max(pos - 64, 0) : pos]
    return any(match.end() == len(window) for match in pattern.finditer(window))


def _narrow(char: str) -> bool:
    if not char or char in "<>;":
        return False
    return char.isascii() or unicodedata.east_asian_width(char) not in ("F", "W", "H")


def _char_before(data: bytes, pos: int) -> str:
    start = pos - 1
    while start > 0 and pos - start < 4 and 0x80 <= data[start] < 0xC0:
        start -= 1
    return data[max(start, 0) : pos].decode(errors="replace")


def _char_after(data: bytes, pos: int) -> str:
    if pos >= len(data):
        return ""
    lead = data[pos]
    size = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return data[pos : pos + size].decode(errors="replace")


def nesting_depth(html: str) -> int:
    """How deep elements nest in `html`. Loose on purpose: anything shaped like a tag in text
    counts, and an element never closed counts as still open."""
    depth = deepest = 0
    for tag in _ANY_TAG.finditer(html):
        if tag["name"] is None:
            continue  # a comment
        if tag["end"]:
            depth = max(depth - 1, 0)
        elif tag["name"].lower().encode() not in _VOID and not tag["attrs"].endswith("/"):
            depth += 1
            deepest = max(deepest, depth)
    return deepest

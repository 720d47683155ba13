"""Wrapping HTML at 998 octets never changes the page: what a reader sees, attribute values."""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import markup
from newsletter.config import load_config
from newsletter.models import Field
from newsletter.render import render_issue, wrap_lines
from tests.compose_helpers import MINIMAL_CONFIG, write

Piece = tuple[str, bool]  # (markup, True when it is one whitespace character sure to be free)

WORD_PARTS = ["a", "Z", "7", "é", "ł", "中", "文", "😀", ",", ".", "&amp;", "&nbsp;", "&#x4e2d;"]
WORD_PARTS += ["\u00a0", "\u200b", "&lt;"]
SPACES = [" ", "  ", "\t", " \t", "\n "]
VALUE = st.text(alphabet="ab é中:;=/->&amp; ", max_size=16)


# ---------------------------------------------------------------------------------------------
# What a browser shows: text with collapsible white space collapsed, and every tag's attributes


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chars: list[tuple[str, bool]] = []  # (text, kept as is)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.open: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "br":
            self.chars.append(("\n", True))
            return
        style = dict(attrs).get("style") or ""
        self.open.append((tag, tag == "pre" or "white-space:pre" in style.replace(" ", "")))

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(("/" + tag, []))
        if self.open and self.open[-1][0] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        raw = self.open and self.open[-1][0] in ("textarea", "style")
        self.chars.append((data, raw or any(keep for _, keep in self.open)))

    def handle_comment(self, data: str) -> None:
        self.tags.append(("!--", [("", data)]))


def seen(html: str) -> tuple[str, list[tuple[str, list[tuple[str, str | None]]]]]:
    """The visible text (white space collapsed as a browser does, outside pre) and the tags."""
    page = _Page()
    page.feed(html)
    page.close()
    out = []
    for text, kept in page.chars:
        out.append(text.replace(" ", "\x00") if kept else re.sub(r"[ \t\n\r\f]+", " ", text))
    visible = re.sub(r" +", " ", "".join(out)).replace("\x00", " ")
    return visible, page.tags


# ---------------------------------------------------------------------------------------------
# Generated inline markup, each whitespace character flagged when it is surely a free place


def _text(words: list[str], spaces: list[str], keep: bool) -> list[Piece]:
    pieces: list[Piece] = []
    for n, word in enumerate(words):
        if n:
            sure = not keep and words[n - 1][-1].isascii() and word[0].isascii()
            sure = sure and words[n - 1][-1].isalnum() and word[0].isalnum()
            pieces += [(c, sure and c in " \t") for c in spaces[n % len(spaces)]]
        pieces.append((word, False))
    return pieces


@st.composite
def text(draw: st.DrawFn, keep: bool = False) -> list[Piece]:
    words = draw(st.lists(st.lists(st.sampled_from(WORD_PARTS), min_size=1, max_size=5)))
    spaces = draw(st.lists(st.sampled_from(SPACES), min_size=1, max_size=3))
    return _text(["".join(w) for w in words], spaces, keep)


@st.composite
def attributes(draw: st.DrawFn) -> list[Piece]:
    pieces: list[Piece] = []
    for name in draw(st.lists(st.sampled_from(["href", "title", "class", "data-x"]), max_size=3)):
        pieces += [(c, c in " \t") for c in draw(st.sampled_from([" ", "  ", "\t", "\n"]))]
        value = draw(VALUE)
        quote = draw(st.sampled_from(['"', "'"]))
        pieces.append((f"{name}={quote}{value}{quote}", False))
    if draw(st.booleans()):
        pieces += [(" ", True), ("id=plain", False)]
    return pieces


def element(children: st.SearchStrategy[list[Piece]]) -> st.SearchStrategy[list[Piece]]:
    @st.composite
    def make(draw: st.DrawFn) -> list[Piece]:
        name = draw(st.sampled_from(["strong", "em", "a", "span", "b", "i", "code"]))
        inner = [p for child in draw(st.lists(children, max_size=4)) for p in child]
        return [
            (f"<{name}", False),
            *draw(attributes()),
            (">", False),
            *inner,
            (f"</{name}>", False),
        ]

    return make()


@st.composite
def kept(draw: st.DrawFn) -> list[Piece]:
    """Text whose white space shows: <pre>, or a span styled white-space:pre-wrap."""
    opening = draw(st.sampled_from(["<pre>", '<span style="white-space: pre-wrap">']))
    closing = "</pre>" if opening == "<pre>" else "</span>"
    return [(opening, False), *draw(text(keep=True)), (closing, False)]


@st.composite
def untouchable(draw: st.DrawFn) -> list[Piece]:
    """Comments (Outlook reads conditional ones as HTML), textarea and style content."""
    inner = "".join(p for p, _ in draw(text(keep=True)))
    kind = draw(
        st.sampled_from(["<!-- {} -->", '<!--[if mso | IE]><td a="1" b=2> {} <![endif]-->'])
    )
    kind = draw(st.sampled_from([kind, "<textarea> {} </textarea>", "<style> p {{ }} {} </style>"]))
    return [(kind.format(inner.replace("<", "&lt;").replace("-", "")), False)]


MARKUP = st.recursive(
    st.one_of(text(), kept(), untouchable(), st.just([("<br>", False)])), element, max_leaves=12
).map(lambda pieces: [("<p>", False), *pieces, ("</p>", False)])


def _free_places(pieces: list[Piece]) -> list[int]:
    """Octet offsets of the whitespace sure to be a place to break."""
    places, offset = [], 0
    for piece, free in pieces:
        if free:
            places.append(offset)
        offset += len(piece.encode())
    return places


@settings(max_examples=300, deadline=None)
@given(MARKUP, st.integers(min_value=1, max_value=120))
def test_wrapping_keeps_the_page(pieces: list[Piece], limit: int) -> None:
    """Wrapped generated markup shows the same text and tags, only spaces became newlines,
    and a line stays over `limit` only where it holds no sure place to break."""
    html = "".join(p for p, _ in pieces)
    wrapped = wrap_lines(html, limit)
    assert seen(wrapped) == seen(html)
    before, after = html.encode(), wrapped.encode()
    assert len(after) == len(before)
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert all(before[i] in b" \t" and after[i] == ord("\n") for i in changed)
    start = 0
    free = _free_places(pieces)
    for line in after.split(b"\n"):
        if len(line) > limit:
            window = [p for p in free if start < p <= start + limit]
            assert not window, f"line of {len(line)} octets could break at {window}"
        start += len(line) + 1


def test_czechia_keeps_its_comma() -> None:
    """The reported case: no newline comes between </strong> and the comma after it."""
    head = '<p style="margin: 0 0 12px;">' + "x" * 940 + " in <strong>Czechia</strong>"
    assert len(head) == 997  # the old wrapper cut here, after the last '>' within 998 octets
    html = head + ", on 16 November 2021 " + "the partners met. " * 5 + "</p>"
    wrapped = wrap_lines(html)
    assert "Czechia</strong>,\non 16 November" in wrapped
    assert seen(wrapped) == seen(html)
    assert "Czechia , on" not in seen(wrapped)[0]


def test_pre_and_attribute_values_stay_whole() -> None:
    """Spaces inside <pre> and inside attribute values never become newlines."""
    html = '<pre class="a b"> x  y </pre><a title="one two three" href="https://x.org/a b">z</a>'
    wrapped = wrap_lines(html * 20, limit=30)
    assert wrapped.count("> x  y </pre>") == 20
    assert wrapped.count('title="one two three"') == 20
    assert wrapped.count('href="https://x.org/a b"') == 20
    assert wrapped.count("\n") >= 20


def test_a_style_sheet_keeping_spaces_stops_text_breaks() -> None:
    """When a style sheet sets white-space: pre anywhere, text keeps every space."""
    html = "<style>.k { white-space: pre }</style><p class=k>" + "word " * 400 + "</p>"
    assert "word " * 400 in wrap_lines(html)


KEEPING_STYLES = [
    "white-space:/**/pre",  # a CSS comment
    "white-space: /* x */ pre-wrap",
    "--w: pre; white-space: var(--w)",  # a custom property
    "white-space: \\70 re",  # a CSS escape: \70 is 'p'
    "\\77 hite-space: pre",
    "white-space:&#112;re",  # an entity: attribute values are decoded first
    "WHITE-SPACE: PRE-LINE",
    "white-space: inherit",  # from a parent the page may set elsewhere
]


def test_every_spelling_of_white_space_keeps_the_text() -> None:
    """A style that may keep spaces, however CSS spells it, keeps them in attribute and sheet."""
    for style in KEEPING_STYLES:
        text = "word   " * 200
        attribute = f'<p style="{style}">{text}</p>'
        sheet = f"<style>.k {{ {style} }}</style><p class=k>{text}</p>"
        assert text in wrap_lines(attribute, limit=60), style
        assert text in wrap_lines(sheet.replace("&#112;", "p"), limit=60), style


def test_collapsing_white_space_values_still_break() -> None:
    """normal and nowrap collapse spaces as the default does: text there still breaks."""
    for style in ("white-space: nowrap", "white-space:normal !important", "color: red"):
        html = f'<style>td {{ {style} }}</style><td style="{style}">' + "word " * 200 + "</td>"
        assert wrap_lines(html, limit=60).count("\n") > 10, style


def test_no_newline_between_east_asian_wide_characters() -> None:
    """Gecko drops a newline between two wide characters: such a space is never used."""
    html = "<p>" + "中文 " * 400 + "</p>"
    assert wrap_lines(html) == html
    mixed = "<p>" + "中文 中文 ab " * 400 + "</p>"
    wrapped = wrap_lines(mixed)
    assert wrapped.count("\n") > 1
    assert "文\n中" not in wrapped


def test_a_line_without_a_place_stays_long() -> None:
    """Tags without attributes around words without spaces give no place: left for MIME."""
    html = "<td>" + "<span>word</span>" * 200 + "</td>"
    assert wrap_lines(html, limit=100) == html


def test_a_long_unbreakable_run_breaks_right_after_it() -> None:
    """A run longer than the limit goes on one line, and wrapping resumes after it."""
    html = "<p>a " + "x" * 2000 + " b c d</p>"
    assert wrap_lines(html).split("\n") == ["<p>a", "x" * 2000, "b c d</p>"]


def _steps(html: str) -> int:
    """Lines of Python that wrap_lines runs in markup.py for `html` (a count, not a clock)."""
    steps = 0

    def trace(frame, event, arg):  # type: ignore[no-untyped-def]
        nonlocal steps
        if frame.f_code.co_filename != markup.__file__:
            return None
        if event == "line":
            steps += 1
        return trace

    sys.settrace(trace)
    try:
        wrap_lines(html, limit=100)
    finally:
        sys.settrace(None)
    return steps


GROWING = {
    "a run of spaces": lambda n: "<p>a" + " " * n + "b</p>",
    "a run of spaces and tabs": lambda n: "<p>a" + " \t" * (n // 2) + "b</p>",
    "spaces between wide characters": lambda n: "<p>" + "中 " * (n // 4) + "</p>",
    "spaces next to tags": lambda n: "<p>" + "<b> </b>" * (n // 8) + "</p>",
    "inline markup": lambda n: "<p>" + '<a href="x">a</a>, <em>b</em>) c ' * (n // 32) + "</p>",
    "attributes": lambda n: "<p " + 'a="1" ' * (n // 6) + ">x</p>",
}


@pytest.mark.parametrize("shape", list(GROWING))
def test_wrapping_work_grows_linearly(shape: str) -> None:
    """Four times the input costs at most five times the steps (counted, never timed)."""
    small, large = (_steps(GROWING[shape](n)) for n in (5_000, 20_000))
    assert large <= 5 * small, (small, large)


def test_no_newline_next_to_a_merge_field_beside_a_wide_character(tmp_path: Path) -> None:
    """A name filled in later may be Chinese: a space between it and a wide character stays."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    body = "{{ subscriber.name }} 先生, 您好 {{ subscriber.name }} ok. " * 100
    issue = write(
        tmp_path / "i.toml",
        f'title = "x"\nsubject = "x"\ndate = 2024-01-02\n'
        f'[[blocks]]\nkind = "text"\nbody = "{body}"\n',
    )
    html = render_issue(issue, load_config(explicit=tmp_path / "newsletter.toml")).html
    assert sum(p.count("\n") for p in html if isinstance(p, str)) > 20
    for before, field, after in zip(html, html[1:], html[2:], strict=False):
        if isinstance(field, Field) and isinstance(before, str) and isinstance(after, str):
            assert not re.match(r"\n先", after), after[:20]
            assert not re.search(r"您好\n$", before), before[-20:]

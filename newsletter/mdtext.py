"""Markdown in issue fields: to safe HTML, to wrapped plain text with numbered links, link targets.

Raw HTML in Markdown is escaped unless the author sets `allow_html = true` in the issue.
markdown-it's link validation drops javascript:, vbscript:, file: and data: targets.

HTML from one value may nest at most `markup.MAX_DEPTH` elements deep: MJML's parser recurses
once per level and crashed the process (SIGSEGV) on 10,000 levels of `<strong>` that 20,000
asterisks make. Deeper nesting raises `TooDeep`, whatever makes it: emphasis, quotes, lists or
raw HTML. markdown-it silently drops blocks nested past its `maxNesting`, so that is set just
past the limit: such input is refused rather than cut short.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from newsletter.errors import TooDeep
from newsletter.markup import MAX_DEPTH, nesting_depth

WIDTH = 72
# A list item in the text part starts with this, not "-": a line starting with a dash reads as a
# rule, a signature separator ("-- ") or a diff line, and it is how a wrapped en dash looked.
BULLET = "* "
DASHES = ("-", "\u2013", "\u2014")  # hyphen-minus, en dash, em dash
_GLUE = "\x00"  # joins words that must stay on one line; never in issue text (control character)
_BEFORE_DASH = re.compile(r"(?<=\S)[ \t]+(?=[-\u2013\u2014])")
_ZONE = r"(?:[A-Z][A-Za-z]{1,5}(?:[+-]\d{1,2}(?::?\d{2})?)?|[+-]\d{2}(?::?\d{2})?)(?![\w+-])"
_AM_PM = r"\s?[AaPp]\.?[Mm]\.?"
_CLOCK = rf"\d{{1,2}}(?:[:.h]\d{{2}}(?:{_AM_PM})?|{_AM_PM})"  # 10:00, 10.00, 10h00, 10:30am, 10am
_TIME = rf"{_CLOCK}\s{_ZONE}(?:\s\([^()\n]*\))?"
_TIMES = re.compile(rf"(?<![\w:.]){_TIME}(?:\s?/\s?{_TIME})+")  # 10:00 CET / 11:00 EET


@functools.cache
def _parser(allow_html: bool) -> MarkdownIt:
    options = {"html": allow_html, "typographer": False, "maxNesting": MAX_DEPTH + 2}
    return MarkdownIt("commonmark", options)


def to_html(source: str, *, allow_html: bool = False) -> str:
    return _bounded(str(_parser(allow_html).render(source)).strip(), source)


def to_html_inline(source: str, *, allow_html: bool = False) -> str:
    return _bounded(str(_parser(allow_html).renderInline(source)).strip(), source)


def _bounded(html: str, source: str) -> str:
    depth = nesting_depth(html)
    if depth > MAX_DEPTH:
        raise TooDeep(source, depth, MAX_DEPTH)
    return html


class _EveryLink(MarkdownIt):
    """Keeps the links rendering drops (javascript:, vbscript:, file:), so that `check` names
    them instead of letting them print as raw Markdown in every copy."""

    def validateLink(self, url: str) -> bool:  # markdown-it's own name
        return True


@functools.cache
def _every_link() -> MarkdownIt:
    return _EveryLink("commonmark", {"html": True, "typographer": False})


def link_targets(source: str) -> Iterator[tuple[str, str]]:
    """(link text, href) of every link and image in `source`, in order."""
    for token in _every_link().parseInline(source) if "\n" not in source else []:
        yield from _inline_links(token.children or [])
    if "\n" in source:
        for token in _every_link().parse(source):
            yield from _inline_links(token.children or [])


def _inline_links(children: Sequence[Token]) -> Iterator[tuple[str, str]]:
    for i, child in enumerate(children):
        if child.type == "link_open":
            href = str(child.attrs.get("href", ""))
            # markdown-it percent-encodes the href: a link within the issue as the author wrote it
            yield _link_text(children[i + 1 :]), unquote(href) if href.startswith("#") else href
        elif child.type == "image":
            yield child.content, str(child.attrs.get("src", ""))


def _link_text(children: Sequence[Token]) -> str:
    words = []
    for child in children:
        if child.type == "link_close":
            break
        words.append(child.content)
    return "".join(words)


Ref = Callable[[str], int]  # numbers a link target for the list at the end of the text part


def to_text(source: str, ref: Ref, *, width: int = WIDTH) -> str:
    """Markdown -> plain text: paragraphs wrapped at `width`, links as `text [n]`."""
    tokens = _parser(True).parse(source)
    blocks: list[tuple[str, bool]] = []  # (text, tight: joined to the previous by one newline)
    prefixes: list[str] = []  # one per open list or quote
    numbers: list[int] = []
    for i, token in enumerate(tokens):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            prefixes.append(BULLET if token.type == "bullet_list_open" else "#")
            numbers.append(int(token.attrs.get("start", 1) or 1))
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            prefixes.pop()
            numbers.pop()
        elif token.type == "blockquote_open":
            prefixes.append("> ")
            numbers.append(0)
        elif token.type == "blockquote_close":
            prefixes.pop()
            numbers.pop()
        elif token.type == "inline":
            heading = tokens[i - 1].type == "heading_open"
            text = inline_text(token.children or [], ref)
            tight = tokens[i - 1].hidden  # paragraphs of a tight list
            text = _block(text.upper() if heading else text, prefixes, numbers, width)
            blocks.append((text, tight))
        elif token.type in ("fence", "code_block"):
            blocks.append((textwrap.indent(token.content.rstrip("\n"), "    "), False))
        elif token.type == "hr":
            blocks.append(("-" * 20, False))
    return _join(blocks)


def _join(blocks: list[tuple[str, bool]]) -> str:
    out = ""
    for n, (text, tight) in enumerate(blocks):
        if n:
            out += "\n" if tight and blocks[n - 1][1] else "\n\n"
        out += text
    return out


def inline_text(children: Sequence[Token], ref: Ref) -> str:
    out: list[str] = []
    href: list[str] = []
    for child in children:
        if child.type in ("text", "html_inline"):
            out.append(child.content if child.type == "text" else "")
        elif child.type == "code_inline":
            out.append(child.content)
        elif child.type == "softbreak":
            out.append(" ")
        elif child.type == "hardbreak":
            out.append("\n")
        elif child.type == "link_open":
            href.append(str(child.attrs.get("href", "")))
        elif child.type == "link_close" and href:
            target = href.pop()
            if not target.startswith("#"):  # a link within the issue: the text is one page
                out.append(f" [{ref(target)}]")
        elif child.type == "image":
            out.append(f"[Image: {child.content}]")
    return "".join(out)


def inline_to_text(source: str, ref: Ref) -> str:
    tokens = _parser(True).parseInline(source)
    return "".join(inline_text(t.children or [], ref) for t in tokens)


def _block(text: str, prefixes: list[str], numbers: list[int], width: int) -> str:
    first, rest = "", ""
    for depth, prefix in enumerate(prefixes):
        if prefix == "#":
            marker = f"{numbers[depth]}. "
            numbers[depth] += 1 if depth == len(prefixes) - 1 else 0
            prefix = marker
        quote = prefix == "> "
        first += prefix if depth == len(prefixes) - 1 or quote else " " * len(prefix)
        rest += prefix if quote else " " * len(prefix)
    return "\n".join(
        wrap(line, width, first if n == 0 else rest, rest)
        for n, line in enumerate(text.split("\n"))
    )


def wrap(text: str, width: int = WIDTH, first: str = "", rest: str = "") -> str:
    """Wrap at `width` without breaking words or URLs. No line starts with a dash (a dash goes
    with the word before it), and a chain of times in several zones stays on one line: on its
    own when it is longer than the room left."""
    glued = _glue(text) if _GLUE not in text else text
    filled = textwrap.fill(
        glued,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return filled.replace(_GLUE, " ") or first.rstrip()


def _glue(text: str) -> str:
    text = _TIMES.sub(lambda m: re.sub(r"\s", _GLUE, m.group()), text)
    return _BEFORE_DASH.sub(_GLUE, text)


def starts_with_dash(line: str) -> bool:
    """A line that starts with a dash and is not a rule (a line of dashes only)."""
    return line.startswith(DASHES) and bool(line.strip().strip("".join(DASHES)))


def no_leading_dash(text: str) -> str:
    """Indent the lines that still start with a dash: text the author began with one (an
    attribution, an escaped `\\-`) or a template line that is not wrapped."""
    return "\n".join("  " + line if starts_with_dash(line) else line for line in text.split("\n"))

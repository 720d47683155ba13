"""The plain-text part: no line starts with a dash, and times in several zones stay together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter import mdtext
from tests.issue_helpers import outputs

DASH_LINE = re.compile(r"^[-\u2013\u2014](?![-\u2013\u2014]*$)", re.MULTILINE)  # rules aside


def _text(tmp: Path, blocks: str) -> str:
    return outputs(tmp, blocks)[1]


def test_markdown_list_items_use_another_marker(tmp_path: Path) -> None:
    """A Markdown list (- or *) is written with `* ` in the text part, nested ones too."""
    text = _text(
        tmp_path,
        '[[blocks]]\nkind = "text"\nbody = """\n- one\n- two\n  - nested\n\n1. first\n"""\n',
    )
    assert "* one\n* two\n  * nested" in text
    assert not DASH_LINE.search(text), text


def test_links_items_use_another_marker(tmp_path: Path) -> None:
    """The items of a links block are `* ` lines."""
    text = _text(
        tmp_path,
        '[[blocks]]\nkind = "links"\nheading = "In this issue"\n'
        '[[blocks.items]]\ntext = "Guide"\nurl = "https://cohes3ion.eu/"\n',
    )
    assert "* Guide [1]" in text


def test_a_dash_never_starts_a_wrapped_line(tmp_path: Path) -> None:
    """Where a wrap would put a dash (any of three) at a line start, the dash stays behind."""
    for dash in ("-", "\u2013", "\u2014"):
        label = "Region of Mazowieckie and the Warsaw Metropolitan Area, Poland"  # 63 characters
        blocks = (
            '[[blocks]]\nkind = "links"\nheading = "Practices"\n'
            f'[[blocks.items]]\nlabel = "{label} x"\ntext = "CEZAMAT"\n'
            'url = "https://cohes3ion.eu/"\n'
            f'note = "a{" word" * 12} {dash} and {dash}5 degrees"\n'
            '[[blocks]]\nkind = "text"\nbody = "'
            + " ".join(f"w{i} {dash}" for i in range(60))
            + '"\n'
        )
        text = _text(tmp_path, blocks.replace(" x", f" {dash}"))
        assert not DASH_LINE.search(text), text


def test_a_text_starting_with_a_dash_is_indented(tmp_path: Path) -> None:
    """A paragraph the author began with a dash (an attribution) is indented, not bare."""
    text = _text(tmp_path, '[[blocks]]\nkind = "text"\nbody = "\u2014 Jane Doe, chair"\n')
    assert "\n  \u2014 Jane Doe, chair\n" in text
    assert not DASH_LINE.search(text)


def test_rule_lines_stay(tmp_path: Path) -> None:
    """Heading underlines and the footer rule are still lines of dashes."""
    text = _text(tmp_path, '[[blocks]]\nkind = "text"\nheading = "About"\nbody = "x"\n')
    assert "About\n-----\n" in text
    assert "\n----\n" in text


def test_times_in_several_zones_stay_on_one_line(tmp_path: Path) -> None:
    """An event's times, shown in four zones, are one line even when the line before is full."""
    text = _text(
        tmp_path,
        '[[blocks]]\nkind = "event"\ntitle = "A rather long event title for the partners"\n'
        'date = 2021-10-06\nstart = "10:00"\n'
        'timezones = ["Europe/Brussels", "Europe/Helsinki", "Europe/London", "Asia/Dubai"]\n',
    )
    assert "\n10:00 CEST / 11:00 EEST / 09:00 BST / 12:00 +04\n" in text, text


def test_times_written_in_markdown_stay_together() -> None:
    """A chain written by hand in a body is wrapped as one piece, on its own line if needed."""
    chain = "10:00 CET / 11:00 EET / 09:00 GMT / 13:00 GST / 17:00 CST / 18:00 JST"
    text = mdtext.to_text(f"The call starts at {chain} and ends an hour later.", lambda u: 1)
    assert f"\n{chain}" in text or text.startswith(chain)
    assert max(len(line) for line in text.splitlines() if chain not in line) <= mdtext.WIDTH


@pytest.mark.parametrize(
    "chain",
    [
        "10am CET / 11am EET / 9am GMT / 1pm GST",
        "10 a.m. CET / 11 a.m. EET / 9 a.m. GMT",
        "10.00 CET / 11.00 EET / 09.00 GMT / 13.00 GST",
        "10h00 CET / 11h00 EET / 09h00 GMT / 13h00 GST",
        "10:30am CET / 11:30am EET / 9:30am GMT / 1:30pm GST",
    ],
)
def test_times_written_other_ways_stay_together(chain: str) -> None:
    """The same kind of chain, in the other ways people write times, is one piece too."""
    words = "The partners' working call, which we hold every month, starts at"
    for lead in (words, words[:30], words[:12]):  # the chain falls at other places in the line
        text = mdtext.to_text(f"{lead} {chain} and ends an hour later.", id)
        assert any(chain in line for line in text.splitlines()), text


_WORDS = st.lists(
    st.one_of(
        st.sampled_from(["-", "\u2013", "\u2014", "-5", "\u2014x", "--", "a-b"]),
        st.text("abcdefghij", min_size=1, max_size=15),
    ),
    min_size=1,
    max_size=60,
)


@given(_WORDS, st.integers(10, 80))
def test_wrap_starts_no_line_with_a_dash(words: list[str], width: int) -> None:
    """Whatever the words, only a first line the author began with a dash starts with one."""
    lines = mdtext.wrap(" ".join(words), width).split("\n")
    assert not any(mdtext.starts_with_dash(line) for line in lines[1:])
    assert " ".join(" ".join(lines).split()) == " ".join(words)  # the words, in order


@given(_WORDS)
def test_text_part_starts_no_line_with_a_dash(words: list[str]) -> None:
    """Markdown of any such words, in lists and quotes, gives no line starting with a dash."""
    body = " ".join(words)
    source = f"{body}\n\n* {body}\n  * {body}\n\n> {body}\n\n1. {body}"
    text = mdtext.no_leading_dash(mdtext.to_text(source, lambda u: 1, width=30))
    assert not any(mdtext.starts_with_dash(line) for line in text.split("\n"))

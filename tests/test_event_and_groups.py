"""Events without a time or booking text, deadlines, and heading/divider blocks between groups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.issue_helpers import checked, messages, outputs

EN = "\u2013"  # the en dash the templates put between title, date and time

EVENT = """
[[blocks]]
kind = "event"
title = "Calls close"
date = 2021-11-30
"""
BOOKING = 'booking = { url = "https://cohes3ion.eu/book" }\n'


def _visible(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", "Book your place"), ("fr", "Réservez votre place"), ("pt-BR", "Reserve o seu lugar")],
)
def test_booking_text_defaults_to_the_issue_language(
    tmp_path: Path, language: str, words: str
) -> None:
    """A booking without text gets a button (and a text line) in the newsletter's language."""
    page, text = outputs(tmp_path, EVENT + BOOKING, f'language = "{language}"\n')
    assert f">{words}</a>" in page.replace("\n", " ") or words in _visible(page)
    assert f"{words} [1]" in text
    assert checked(tmp_path, EVENT + BOOKING, f'language = "{language}"\n').ok


def test_booking_text_given_is_kept(tmp_path: Path) -> None:
    """The author's booking text wins over the default."""
    booking = 'booking = { text = "Register", url = "https://cohes3ion.eu/book" }\n'
    page, text = outputs(tmp_path, EVENT + booking)
    assert "Register" in _visible(page) and "Book your place" not in page
    assert "Register [1]" in text


def test_an_event_may_be_a_day_without_a_time(tmp_path: Path) -> None:
    """No start and no time zones: the date alone, and check is content."""
    page, text = outputs(tmp_path, EVENT)
    assert f"Calls close {EN} 30 November 2021 " in _visible(page)
    assert f"Calls close {EN} 30 November 2021\n" in text
    assert checked(tmp_path, EVENT).ok


def test_an_event_may_be_a_deadline(tmp_path: Path) -> None:
    """deadline = true shows the date as a deadline, with or without a time."""
    _, text = outputs(tmp_path, EVENT + "deadline = true\n")
    assert f"Calls close {EN} Deadline: 30 November 2021\n" in text
    timed = EVENT + 'deadline = true\nstart = "17:00"\ntimezones = ["Europe/Brussels"]\n'
    page, text = outputs(tmp_path, timed)
    assert f"Calls close {EN} Deadline: 30 November 2021 {EN} 17:00 CET" in text
    assert f"Deadline: 30 November 2021 {EN} 17:00 CET" in _visible(page)


def test_a_deadline_in_another_language(tmp_path: Path) -> None:
    """The deadline's word follows the newsletter's language."""
    _, text = outputs(tmp_path, EVENT + "deadline = true\n", 'language = "de"\n')
    assert f"Calls close {EN} Frist: 30 November 2021" in text


def test_time_zones_need_a_start_and_a_start_needs_zones(tmp_path: Path) -> None:
    """A start without time zones, or time zones without a start, is an error at timezones."""
    zones_only = checked(tmp_path, EVENT + 'timezones = ["Europe/London"]\n')
    assert "blocks[0].timezones: time zones without a start time: give start, or remove them" in (
        messages(zones_only)
    )
    start_only = checked(tmp_path, EVENT + 'start = "10:00"\n')
    assert any(m.startswith("blocks[0].timezones: no time zone") for m in messages(start_only))


GROUPS = """
[[blocks]]
kind = "text"
heading = "News"
body = "An article."

[[blocks]]
kind = "heading"
id = "events"
heading = "Events"

[[blocks]]
kind = "text"
body = "The first event."

[[blocks]]
kind = "divider"

[[blocks]]
kind = "text"
body = "After the rule."
"""


def test_a_heading_block_separates_groups(tmp_path: Path) -> None:
    """A heading block is its own section in the HTML and an underlined capital line in text."""
    page, text = outputs(tmp_path, GROUPS)
    assert re.search(r'class="group-heading".*?<h2[^>]*>Events</h2>', page, re.S)
    assert ".group-heading h2" in page  # its style, only when the issue has one
    assert "An article.\n\nEVENTS\n======\n\nThe first event." in text
    assert checked(tmp_path, GROUPS).ok


def test_a_divider_block_is_a_rule(tmp_path: Path) -> None:
    """A divider is a rule in the HTML and a line of dashes in the text part."""
    page, text = outputs(tmp_path, GROUPS)
    assert page.count("border-top:solid 1px #cccccc") >= 1
    assert "The first event.\n\n--------------------\n\nAfter the rule." in text


def test_an_empty_group_heading_is_reported(tmp_path: Path) -> None:
    """A heading block with a blank heading is an error, like any required text."""
    result = checked(tmp_path, GROUPS.replace('heading = "Events"', 'heading = " "'))
    assert "blocks[1].heading: empty: write it, or remove the block" in messages(result)


def test_a_divider_takes_no_other_key(tmp_path: Path) -> None:
    """Only `id` besides `kind`: a typo is reported."""
    blocks = GROUPS.replace('kind = "divider"', 'kind = "divider"\nheading = "x"')
    result = checked(tmp_path, blocks)
    assert any(m.startswith("blocks[3].heading: unknown key") for m in messages(result))


@pytest.mark.parametrize("start", ["9:30", "25:00", "half past nine"])
def test_a_start_that_is_no_time_says_how_to_write_one(tmp_path: Path, start: str) -> None:
    """A start string that is not a time is one error naming it (strings such as "09:30" are
    allowed, so not 'not a string'), and its time zones are not reported as without a start."""
    zones = f'start = "{start}"\ntimezones = ["Europe/Brussels"]\n'
    found = [m for m in messages(checked(tmp_path, EVENT + zones)) if m.startswith("blocks[0].")]
    assert found == [f"blocks[0].start: {start!r} is not a time: write it as 09:30 (24-hour)"]


def test_a_start_with_an_offset_is_refused(tmp_path: Path) -> None:
    """A start of 17:00+05:00 is not shown as 17:00 in the first zone (its offset lost): the
    start is a local time in the first of timezones, so an offset is an error."""
    zones = 'start = "17:00+05:00"\ntimezones = ["Europe/Brussels"]\n'
    found = [m for m in messages(checked(tmp_path, EVENT + zones)) if m.startswith("blocks[0].")]
    assert found == [
        "blocks[0].start: '17:00+05:00' has an offset: give the local time (17:00) and its zone "
        "first in timezones"
    ]

"""Block ids: an element with that id in the HTML, and `#id` links that check accepts."""

from __future__ import annotations

import html.parser
from pathlib import Path

from newsletter.errors import Severity
from tests.issue_helpers import checked, messages, outputs

CONTENTS = """
[[blocks]]
kind = "links"
heading = "In this issue"
[[blocks.items]]
text = "Events"
url = "{target}"

[[blocks]]
kind = "text"
id = "news"
body = "News. See [the events](#events)."

[[blocks]]
kind = "event"
id = "events"
title = "Meeting"
date = 2021-10-06
start = "10:00"
timezones = ["Europe/Brussels"]
"""


class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(str(found["id"]))
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))


def test_html_has_an_element_with_each_block_id(tmp_path: Path) -> None:
    """Every block id becomes an element's id, and `#id` links stay as written."""
    page, _ = outputs(tmp_path, CONTENTS.format(target="#events"))
    parsed = _Ids()
    parsed.feed(page)
    assert {"news", "events"} <= set(parsed.ids)
    assert parsed.ids.index("news") < parsed.ids.index("events")  # in block order
    assert {"#events"} <= set(parsed.hrefs)


def test_check_accepts_a_link_to_a_block_id(tmp_path: Path) -> None:
    """`#events` (a links item and inside Markdown) is fine when a block has id = "events"."""
    result = checked(tmp_path, CONTENTS.format(target="#events"))
    assert not [m for m in messages(result) if "#" in m], messages(result)
    assert result.ok


def test_a_link_to_no_block_is_an_error_naming_it(tmp_path: Path) -> None:
    """`#agenda` with no block of that id is an error at the link, naming the id."""
    result = checked(tmp_path, CONTENTS.format(target="#agenda"))
    found = [p for p in result.problems if "#agenda" in p.message]
    assert len(found) == 1 and found[0].severity == Severity.ERROR
    assert found[0].field == "blocks[0].items[0].url"
    assert "links to no block" in found[0].message and "id = 'agenda'" in found[0].message
    assert not result.ok


def test_a_bare_hash_is_still_a_placeholder(tmp_path: Path) -> None:
    """`#` alone is the placeholder the docs describe."""
    result = checked(tmp_path, CONTENTS.format(target="#"))
    assert "blocks[0].items[0].url: '#' is a placeholder link" in messages(result)


def test_ids_are_case_sensitive(tmp_path: Path) -> None:
    """`#Events` is not `events`: browsers match ids exactly."""
    result = checked(tmp_path, CONTENTS.format(target="#Events"))
    assert any("'#Events' links to no block" in m for m in messages(result))


def test_the_same_id_twice_is_an_error(tmp_path: Path) -> None:
    """Two blocks with one id: the second is reported, naming the first."""
    blocks = CONTENTS.format(target="#events").replace('id = "news"', 'id = "events"')
    result = checked(tmp_path, blocks)
    assert "blocks[2].id: id 'events' is already the id of blocks[1]" in messages(result)


def test_an_id_that_cannot_follow_a_hash_is_refused(tmp_path: Path) -> None:
    """An id with a space (or other character a link cannot carry as written) is an error."""
    blocks = CONTENTS.format(target="#events").replace('id = "news"', 'id = "the news"')
    result = checked(tmp_path, blocks)
    rule = "ASCII letters, digits, '-' and '_', and start with a letter or digit"
    assert f"blocks[1].id: id 'the news' must be {rule}" in messages(result)


def test_text_part_lists_links_within_the_issue_without_numbers(tmp_path: Path) -> None:
    """The text part is one page: `#id` links get no [n] and are not in the list of links."""
    _, text = outputs(tmp_path, CONTENTS.format(target="#events"))
    assert "* Events\n" in text
    assert "See the events." in text
    assert "#events" not in text


def test_an_id_refused_says_what_an_id_may_be(tmp_path: Path) -> None:
    """An id of allowed characters that starts with '_', or with a non-ASCII letter, is
    refused by a message that names the rule it breaks (not 'must be letters, ...')."""
    for ident, rule in (("_news", "start with a letter or digit"), ("événements", "ASCII")):
        blocks = CONTENTS.format(target="#events").replace('id = "news"', f'id = "{ident}"')
        [message] = [m for m in messages(checked(tmp_path, blocks)) if "blocks[1].id" in m]
        assert rule in message, message


def test_a_markdown_link_to_a_missing_id_is_named_as_written(tmp_path: Path) -> None:
    """`[x](#événements)` in a body names '#événements', not its percent-encoded form."""
    blocks = CONTENTS.format(target="#events").replace("(#events)", "(#événements)")
    [message] = [m for m in messages(checked(tmp_path, blocks)) if "links to no block" in m]
    assert "'#événements' links to no block" in message, message
    assert "%C3" not in message

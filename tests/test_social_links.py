"""Social links: an open, ordered list in newsletter.toml, in the header, the footer or both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError
from tests.compose_helpers import MINIMAL_CONFIG, write
from tests.issue_helpers import outputs

BLOCK = '[[blocks]]\nkind = "text"\nbody = "Body."\n'
SOCIAL = """
[[newsletter.social]]
label = "Flickr"
url = "https://www.flickr.com/photos/digest"

[[newsletter.social]]
label = "Instagram"
url = "https://www.instagram.com/digest"
"""


def _header_and_footer(page: str) -> tuple[str, str]:
    """The HTML before the first block, and from the footer on."""
    return page.split("Body.")[0], page.split("Body.")[1]


def test_any_network_in_the_order_written(tmp_path: Path) -> None:
    """Flickr then Instagram (no fixed set of networks), in the footer by default."""
    page, text = outputs(tmp_path, BLOCK, SOCIAL)
    header, footer = _header_and_footer(page)
    assert re.search(r">Flickr</a>.*>Instagram</a>", footer, re.S)
    assert "Flickr" not in header
    assert text.index("Flickr: https://www.flickr.com/photos/digest") > text.index("Body.")
    assert text.index("Flickr:") < text.index("Instagram: https://www.instagram.com/digest")


def test_in_the_header(tmp_path: Path) -> None:
    """social_position = "header": under the title, and not in the footer."""
    config = 'social_position = "header"\n' + SOCIAL
    page, text = outputs(tmp_path, BLOCK, config)
    header, footer = _header_and_footer(page)
    assert ">Flickr</a>" in header and "Flickr" not in footer
    assert text.index("Instagram: https://") < text.index("Body.")
    assert text.count("Flickr:") == 1


def test_in_both_places(tmp_path: Path) -> None:
    """social_position = "both": the list in the header and in the footer."""
    page, text = outputs(tmp_path, BLOCK, 'social_position = "both"\n' + SOCIAL)
    header, footer = _header_and_footer(page)
    assert ">Instagram</a>" in header and ">Instagram</a>" in footer
    assert text.count("Instagram: https://www.instagram.com/digest") == 2


def test_older_keys_still_work_and_come_first(tmp_path: Path) -> None:
    """`twitter = ...` keeps working; its link precedes the `social` list."""
    config = 'twitter = "https://twitter.com/digest"\n' + SOCIAL
    _, text = outputs(tmp_path, BLOCK, config)
    assert text.index("Twitter: https://twitter.com/digest") < text.index("Flickr:")


def test_an_inline_array_works_too(tmp_path: Path) -> None:
    """social = [{ label, url }, ...] is the same list."""
    config = 'social = [{ label = "Flickr", url = "https://www.flickr.com/photos/digest" }]\n'
    _, text = outputs(tmp_path, BLOCK, config)
    assert "Flickr: https://www.flickr.com/photos/digest" in text


def _refused(tmp_path: Path, extra: str, env: dict[str, str] | None = None) -> list[str]:
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml", environ=env or {})
    return [f"{p.line}: {p.field}: {p.message}" for p in caught.value.problems]


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (
            'url = "http://www.instagram.com/digest"',
            "14: newsletter.social[1].url: must be an https",
        ),
        (
            'url = "https://www.instagram.com/digest"\nicon = "x"',
            "15: newsletter.social[1].icon: unknown key",
        ),
        ('label = " "', "12: newsletter.social[1].label: is blank"),
        ("", "11: newsletter.social[1].url: missing"),
    ],
)
def test_a_bad_link_is_an_error_naming_it(tmp_path: Path, changed: str, expected: str) -> None:
    """Each entry is checked and reported with its index and line."""
    extra = SOCIAL.replace('url = "https://www.instagram.com/digest"', "")
    if changed.startswith("label"):
        extra = SOCIAL.replace('label = "Instagram"', changed)
    elif changed:
        extra += changed + "\n"
    found = _refused(tmp_path, extra)
    assert any(line.startswith(expected) for line in found), found


def test_not_an_array_of_tables(tmp_path: Path) -> None:
    """social = "Flickr" is refused, saying what it must be."""
    found = _refused(tmp_path, 'social = "https://www.flickr.com"\n')
    assert any("newsletter.social: must be an array of tables" in line for line in found), found


def test_position_must_be_one_of_three(tmp_path: Path) -> None:
    """social_position takes header, footer or both."""
    found = _refused(tmp_path, 'social_position = "top"\n')
    assert any("must be one of header, footer, both" in line for line in found), found


def test_the_list_is_not_read_from_the_environment(tmp_path: Path) -> None:
    """NEWSLETTER_SOCIAL is an error that says where the list belongs."""
    found = _refused(tmp_path, "", {"NEWSLETTER_SOCIAL": "Flickr"})
    assert any("NEWSLETTER_SOCIAL: cannot be set from the environment" in line for line in found), (
        found
    )


def test_a_missing_key_says_what_it_is_for(tmp_path: Path) -> None:
    """An entry without url (or label) says what the key holds, not just "missing"."""
    found = _refused(tmp_path, SOCIAL.replace('url = "https://www.instagram.com/digest"', ""))
    assert "11: newsletter.social[1].url: missing: https URL of the page" in found, found


def test_a_newsletter_key_written_after_the_tables_says_where_it_belongs(tmp_path: Path) -> None:
    """social_position after a [[newsletter.social]] table belongs to that table (TOML): the
    error says it is a [newsletter] key to move above the tables, not just 'unknown key'."""
    found = _refused(tmp_path, SOCIAL + 'social_position = "both"\n')
    assert found == [
        "14: newsletter.social[1].social_position: a [newsletter] key, read here as a key of "
        "this [[newsletter.social]] table: write it above the first [[newsletter.social]]"
    ], found

"""`check` reports every problem in one pass (issue 14): structural errors do not hide lint
findings, a missing key says what it is for, unknown keys suggest the nearest known one, and
named CSS colours are colours."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError
from newsletter.lint import check_issue
from tests.compose_helpers import MINIMAL_CONFIG, run, write

ISSUE = """
title = "News"
subject = "News"
preheader = "Pre"
date = 2024-01-02

[[blocks]]
kind = "article"
heading = "First"
body = "Read [the report](#) today."
buton_colour = "red"
image = { src = "https://cdn.example.net/a.jpg", width = 300 }

[[blocks]]
kind = "links"
heading = "Links"
[[blocks.items]]
text = "One"
url = "#"
"""


def _folder(tmp_path: Path, issue: str = ISSUE, config: str = MINIMAL_CONFIG) -> Path:
    write(tmp_path / "newsletter.toml", config)
    return write(tmp_path / "issues" / "x.toml", issue)


def _fields(tmp_path: Path, issue: str) -> dict[str, str]:
    path = _folder(tmp_path, issue)
    config = load_config(explicit=tmp_path / "newsletter.toml")
    return {p.field: p.message for p in check_issue(path, config).problems if p.path == path}


def test_unknown_key_and_missing_alt_do_not_hide_placeholder_links(tmp_path: Path) -> None:
    """An unknown key and a missing alt are reported with the `#` links of the same file."""
    found = _fields(tmp_path, ISSUE)
    assert found["blocks[0].buton_colour"].startswith("unknown key")
    assert found["blocks[0].image.alt"].startswith("missing: alt text describes the image")
    assert found["blocks[0].body"] == "link 'the report': '#' is a placeholder link"
    assert found["blocks[1].items[0].url"] == "'#' is a placeholder link"


def test_later_blocks_keep_their_paths_after_an_unreadable_block(tmp_path: Path) -> None:
    """A block of unknown kind and an item that is no table: the findings after them still
    name their own block and item."""
    head = ISSUE.split("[[blocks]]")[0]
    issue = head + textwrap.dedent(
        """
        [[blocks]]
        kind = "artcle"
        heading = "First"

        [[blocks]]
        kind = "links"
        heading = "Links"
        items = [5, { text = "Two", url = "#" }]
        """
    )
    found = _fields(tmp_path, issue)
    assert found["blocks[0].kind"].startswith("kind must be one of")
    assert found["blocks[1].items[0]"].startswith("must be a table")
    assert found["blocks[1].items[1].url"] == "'#' is a placeholder link"


def test_a_problem_is_reported_once_per_place(tmp_path: Path) -> None:
    """A missing or wrong value is reported once: not again as empty or as a bad link."""
    issue = ISSUE.replace('url = "#"', "url = 5").replace('heading = "First"\n', "")
    path = _folder(tmp_path, issue)
    config = load_config(explicit=tmp_path / "newsletter.toml")
    problems = check_issue(path, config).problems
    places = [p.field for p in problems if p.path == path]
    assert len(places) == len(set(places)), places
    found = {p.field: p.message for p in problems}
    assert found["blocks[1].items[0].url"].startswith("must be a string")
    assert found["blocks[0].heading"] == "missing: the block's heading"


def test_check_cli_prints_every_problem_and_fails(tmp_path: Path, monkeypatch) -> None:
    """Through the command: exit 1, the structural errors and the lint finding in one run."""
    monkeypatch.chdir(tmp_path)
    result = run("check", _folder(tmp_path))
    assert result.exit_code == 1
    for needle in ("buton_colour: unknown key", "image.alt: missing", "placeholder link"):
        assert needle in result.output, needle


def test_missing_alt_says_what_alt_is_for(tmp_path: Path) -> None:
    """A missing alt key names its purpose (screen readers), as an empty alt does."""
    found = _fields(tmp_path, ISSUE)
    assert "screen readers" in found["blocks[0].image.alt"]


@pytest.mark.parametrize(
    ("typo", "known"),
    [("headin", "heading"), ("bdy", "body"), ("buttn", "button"), ("imgae", "image")],
)
def test_unknown_block_key_suggests_the_nearest(tmp_path: Path, typo: str, known: str) -> None:
    """A misspelt key of a block names the key it is probably meant to be."""
    issue = ISSUE.replace("buton_colour", typo)
    found = _fields(tmp_path, issue.replace(f"\n{known} =", f"\n_{known} =", 1))
    assert found[f"blocks[0].{typo}"].startswith(f"unknown key: did you mean `{known}`?")


def test_unknown_top_key_suggests_the_nearest(tmp_path: Path) -> None:
    """A misspelt key at the top of an issue names the key it is probably meant to be."""
    found = _fields(tmp_path, ISSUE.replace("preheader =", "preheder ="))
    assert found["preheder"].startswith("unknown key: did you mean `preheader`?")


@pytest.mark.parametrize(
    ("typo", "known"),
    [
        ("accent_color", "accent_colour"),
        ("postal_adress", "postal_address"),
        ("baseurl", "base_url"),
    ],
)
def test_unknown_config_key_suggests_the_nearest(tmp_path: Path, typo: str, known: str) -> None:
    """A misspelt newsletter.toml key names the key it is probably meant to be."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f'{typo} = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml")
    (problem,) = caught.value.problems
    assert problem.field == f"newsletter.{typo}"
    assert problem.message == f"unknown key: did you mean `{known}`?"


@pytest.mark.parametrize(
    ("typo", "known"),
    [("ACCENT_COLOUR", "accent_colour"), ("Base_URL", "base_url"), ("From", "from")],
)
def test_a_key_in_other_case_suggests_the_known_one(tmp_path: Path, typo: str, known: str) -> None:
    """Keys are lower case: one written in capitals (as its environment variable is) names
    the key it is meant to be, however far apart the cases put them."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f'{typo} = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml")
    (problem,) = caught.value.problems
    assert problem.message == f"unknown key: did you mean `{known}`?"


def test_a_table_in_capitals_suggests_the_known_one(tmp_path: Path) -> None:
    """`[SMTP]` is not `[smtp]`: the message says which table it is meant to be."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + '[SMTP]\nhost = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml")
    assert [p.message for p in caught.value.problems] == [
        "unknown table or key: did you mean `smtp`?"
    ]


def test_misspelt_config_table_suggests_the_nearest(tmp_path: Path) -> None:
    """A misspelt table name in newsletter.toml names the table it is probably meant to be."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + '[smpt]\nhost = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml")
    assert [p.message for p in caught.value.problems] == [
        "unknown table or key: did you mean `smtp`?"
    ]


def test_unknown_key_far_from_any_gets_no_suggestion(tmp_path: Path) -> None:
    """A key like no known one is just unknown: no far-fetched suggestion."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + 'zzz = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml")
    assert [p.message for p in caught.value.problems] == ["unknown key"]


@pytest.mark.parametrize("colour", ["blue", "rebeccapurple", "DarkSlateGray", "#fff", "#1A5276"])
def test_css_colours_are_accepted(tmp_path: Path, colour: str) -> None:
    """Named CSS colours (any case) and #rgb or #rrggbb are colours in newsletter.toml."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f'accent_colour = "{colour}"\n')
    config = load_config(explicit=tmp_path / "newsletter.toml")
    assert config.newsletter.accent_colour == colour


@pytest.mark.parametrize("colour", ["bleu", "#12345", "rgb(1,2,3)", "transparent", ""])
def test_other_colour_values_are_refused(tmp_path: Path, colour: str) -> None:
    """A word that is no CSS colour name, or a malformed hex code, is refused with an example."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f'text_colour = "{colour}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(explicit=tmp_path / "newsletter.toml")
    (problem,) = caught.value.problems
    assert problem.field == "newsletter.text_colour"
    assert "'navy'" in problem.message


def test_named_colour_reaches_the_html(tmp_path: Path, monkeypatch) -> None:
    """A named accent colour is rendered into the message as given."""
    monkeypatch.chdir(tmp_path)
    config = MINIMAL_CONFIG + 'accent_colour = "rebeccapurple"\n'
    path = _folder(
        tmp_path, ISSUE.split("[[blocks]]")[0] + '[[blocks]]\nkind = "text"\nbody = "Hi"\n', config
    )
    result = run("render", path, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "rebeccapurple" in (tmp_path / "out" / "x.html").read_text(encoding="utf-8")

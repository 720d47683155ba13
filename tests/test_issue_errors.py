"""Bad issue files: every problem named with file, TOML path and line; nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from compose_helpers import MINIMAL_CONFIG, run, write

from newsletter.errors import InvalidInput
from newsletter.issue import read_issue

HEAD = """
title = "News"
subject = "News"
date = 2024-01-02
"""


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        read_issue(path)
    return [str(p) for p in caught.value.problems]


def test_malformed_toml_gives_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error is reported as file:line:col with the parser's message."""
    path = write(tmp_path / "x.toml", 'title = "News\nsubject = "x"\n')
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:1:")
    assert "invalid TOML" in problem


def test_unknown_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    """A misspelt key inside a block is named with its path and line, not ignored."""
    path = write(tmp_path / "x.toml", HEAD + '[[blocks]]\nkind = "text"\nbdy = "typo"\n')
    problems = _problems(path)
    assert any(p.startswith(f"{path}:6: blocks[0].bdy: unknown key") for p in problems)


def test_wrong_type_and_missing_field(tmp_path: Path) -> None:
    """Every problem is reported at once: a wrong type and a missing required key."""
    text = HEAD + '[[blocks]]\nkind = "article"\nheading = 3\n'
    problems = _problems(write(tmp_path / "x.toml", text))
    assert any("blocks[0].heading: must be a string, not a number" in p for p in problems)
    assert any("blocks[0].body: missing" in p for p in problems)


def test_link_item_path_is_exact(tmp_path: Path) -> None:
    """A bad value deep in an array of tables is located as blocks[i].items[j].field."""
    text = HEAD + (
        '[[blocks]]\nkind = "links"\nheading = "L"\n'
        '[[blocks.items]]\ntext = "a"\nurl = "https://a.org"\n'
        '[[blocks.items]]\ntext = "b"\nurl = 5\n'
    )
    [problem] = _problems(write(tmp_path / "x.toml", text))
    assert problem.startswith(f"{tmp_path / 'x.toml'}:12: blocks[0].items[1].url: must be a string")


def test_image_must_be_https(tmp_path: Path) -> None:
    """Images are absolute https URLs; nothing is embedded."""
    text = HEAD + (
        '[[blocks]]\nkind = "article"\nheading = "H"\nbody = "b"\n'
        'image = { src = "http://img.org/a.png", alt = "A", width = 300 }\n'
    )
    [problem] = _problems(write(tmp_path / "x.toml", text))
    assert "blocks[0].image.src: images must be absolute https:// URLs" in problem


def test_unknown_time_zone(tmp_path: Path) -> None:
    """An event's time zones must be IANA names."""
    text = HEAD + (
        '[[blocks]]\nkind = "event"\ntitle = "E"\ndate = 2024-02-03\nstart = "09:30"\n'
        'timezones = ["Europe/Londn"]\n'
    )
    [problem] = _problems(write(tmp_path / "x.toml", text))
    assert "blocks[0].timezones[0]: unknown time zone 'Europe/Londn'" in problem


def test_unknown_block_kind(tmp_path: Path) -> None:
    """A block kind we do not know is named with the kinds we do."""
    [problem] = _problems(write(tmp_path / "x.toml", HEAD + '[[blocks]]\nkind = "video"\n'))
    assert "blocks[0].kind: kind must be one of: article, links, event, text, images" in problem


def test_bad_issue_exits_1_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    """`render` of a bad issue exits 1 with the located error and creates no output."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    path = write(tmp_path / "issues" / "x.toml", HEAD + '[[blocks]]\nkind = "text"\nbdy = "x"\n')
    monkeypatch.chdir(tmp_path)
    result = run("render", path)
    assert result.exit_code == 1
    assert "blocks[0].bdy: unknown key" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "build").exists()


def test_merge_field_typo_is_located(tmp_path: Path, monkeypatch) -> None:
    """An undefined variable in content names the field it is in."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    text = HEAD + '[[blocks]]\nkind = "text"\nbody = "Hi {{ subscribr.name }}"\n'
    path = write(tmp_path / "issues" / "x.toml", text)
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    assert result.exit_code == 1
    assert "blocks[0].body: template error: 'subscribr' is undefined" in result.output

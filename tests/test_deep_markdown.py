"""Markdown nested too deep is a located error, never a crash (MJML's parser recursed: SIGSEGV)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.errors import InvalidInput
from newsletter.render import render_issue
from tests.compose_helpers import MINIMAL_CONFIG, write

SHAPES = {
    "emphasis": "*" * 20000 + "a" + "*" * 20000,
    "underscores": "_" * 20000 + "a" + "_" * 20000,
    "quotes": ">" * 5000 + " a",
    "quote per line": "\n".join("> " * n + "a" for n in range(1, 300)),
    "lists": "- " * 300 + "a",
    "indented lists": "".join("  " * n + "- a\n" for n in range(300)),
    "quoted lists": "> 1. " * 200 + "a",
    "raw html": "<div>" * 5000 + "a" + "</div>" * 5000,
    "unclosed raw html": "<span>" * 5000 + "a",
    "'/>' in a quoted attribute": '<div title="/>">' * 5000 + "a",
    "'/>' in a single-quoted attribute": "<div title='/>'>" * 5000 + "a",
    "'/>' in an inline attribute": 'x <span title="/>">' * 5000 + "a",
}


def _issue(folder: Path, body: str) -> Path:
    write(folder / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(
        folder / "issues" / "deep.toml",
        """
        title = "Deep"
        subject = "Deep"
        preheader = "Deep"
        date = 2024-01-02
        allow_html = true

        [[blocks]]
        kind = "text"
        body = "A fine first block."

        [[blocks]]
        kind = "text"
        heading = "Then"
        body = '''
        BODY'''
        """,
    )
    issue.write_text(issue.read_text().replace("BODY", body), encoding="utf-8")
    return issue


@pytest.mark.parametrize("command", ["check", "render"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path, command: str, shape: str) -> None:
    """check and render exit 1 with one line naming file, line and field; no signal."""
    issue = _issue(tmp_path, SHAPES[shape])
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", command, "issues/deep.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    expected = f"{issue.relative_to(tmp_path)}:14: blocks[1].body: its Markdown nests "
    found = done.stdout if command == "check" else done.stderr  # check's findings are its result
    lines = [line for line in found.splitlines() if expected in line]
    assert len(lines) == 1, found[-500:]
    assert "elements inside one another (the limit is 100)" in lines[0]
    assert "Traceback" not in done.stderr


def test_nesting_up_to_the_limit_renders_whole(tmp_path: Path) -> None:
    """99 quotes (100 elements with the paragraph) render with their text; one more is refused."""
    config = load_config(explicit=write(tmp_path / "newsletter.toml", MINIMAL_CONFIG))
    rendered = render_issue(_issue(tmp_path, ">" * 99 + " innermost"), config)
    assert "innermost" in "".join(p for p in rendered.html if isinstance(p, str))
    with pytest.raises(InvalidInput) as caught:
        render_issue(_issue(tmp_path, ">" * 100 + " innermost"), config)
    assert caught.value.problems[0].field == "blocks[1].body"


def test_deep_footer_names_the_config(tmp_path: Path) -> None:
    """The footer is Markdown from newsletter.toml: its error names that file and key."""
    issue = _issue(tmp_path, "fine")
    footer = "*" * 400 + "a" + "*" * 400
    config_path = write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + f'footer = "{footer}"\n')
    with pytest.raises(InvalidInput) as caught:
        render_issue(issue, load_config(explicit=config_path))
    problem = caught.value.problems[0]
    assert (problem.path, problem.line, problem.field) == (config_path, 6, "newsletter.footer")


def test_deep_templates_are_refused_before_mjml(tmp_path: Path) -> None:
    """Nesting made by an own template (not by a value) is refused too, naming the templates."""
    issue = _issue(tmp_path, "fine")
    write(
        tmp_path / "templates" / "blocks" / "text.mjml.j2",
        """
        <mj-section><mj-column><mj-text>
        {% for _ in range(20000) %}<span>{% endfor %}{{ block.body | markdown }}
        {%- for _ in range(20000) %}</span>{% endfor %}
        </mj-text></mj-column></mj-section>
        """,
    )
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "check", str(issue)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    assert f"{tmp_path / 'templates'}: the templates make MJML nested 200" in done.stdout
    assert "Traceback" not in done.stderr


UNCLOSED = {
    "tags never closed": "<div " + "<a" * 20000,
    "comments never closed": "<div>" + "<!--" * 20000,
    "a quote never closed": '<div a="' + "<a " * 20000,
}


@pytest.mark.parametrize("shape", list(UNCLOSED))
def test_markup_that_never_closes_is_read_once(tmp_path: Path, shape: str) -> None:
    """Raw HTML whose tags or comments never close ends check with a verdict, not a hang: the
    nesting count reads each character once (from every '<' to the end took hours)."""
    _issue(tmp_path, UNCLOSED[shape])
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "check", "issues/deep.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), (done.returncode, done.stderr[-500:])
    assert "Traceback" not in done.stderr

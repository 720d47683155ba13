"""Render a small issue written inline: a newsletter folder in a temp dir, its text and HTML."""

from __future__ import annotations

from pathlib import Path

from newsletter.config import load_config
from newsletter.lint import CheckResult, check_issue
from newsletter.render import fill, preview_value, render_issue
from tests.compose_helpers import MINIMAL_CONFIG, write

HEAD = """
title = "Test"
subject = "Test"
preheader = "Test"
date = 2021-09-15
"""


def folder(tmp: Path, blocks: str, config: str = "") -> Path:
    """A newsletter folder with MINIMAL_CONFIG (plus `config` lines) and one issue of `blocks`."""
    write(tmp / "newsletter.toml", MINIMAL_CONFIG + config)
    return write(tmp / "issues" / "2021-09-x.toml", HEAD + blocks)


def outputs(tmp: Path, blocks: str, config: str = "") -> tuple[str, str]:
    """(HTML, text) of an issue made of `blocks`, filled as a preview."""
    issue = folder(tmp, blocks, config)
    settings = load_config(explicit=tmp / "newsletter.toml")
    rendered = render_issue(issue, settings)
    value = preview_value(settings.newsletter.base_url)
    return fill(rendered.html, value, html=True), fill(rendered.text, value, html=False)


def checked(tmp: Path, blocks: str, config: str = "") -> CheckResult:
    issue = folder(tmp, blocks, config)
    return check_issue(issue, load_config(explicit=tmp / "newsletter.toml"))


def messages(result: CheckResult) -> list[str]:
    return [f"{p.field}: {p.message}" for p in result.problems]

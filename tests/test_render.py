"""Rendering: the sample's golden output, determinism, markers, line lengths, responsiveness."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.issue import load_issue
from newsletter.models import Field
from newsletter.render import fill, preview_value, render, render_issue
from tests.compose_helpers import MINIMAL_CONFIG, ROOT, SAMPLE, write

GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("NEWSLETTER_UPDATE_GOLDEN") == "1"  # regenerate only on purpose


@pytest.fixture
def config():
    return load_config(explicit=ROOT / "newsletter.toml")


def _outputs(config) -> tuple[str, str]:
    rendered = render_issue(SAMPLE, config)
    value = preview_value(config.newsletter.base_url)
    return fill(rendered.html, value, html=True), fill(rendered.text, value, html=False)


@pytest.mark.parametrize("suffix", ["html", "txt"])
def test_sample_matches_golden(config, suffix) -> None:
    """The sample issue renders to exactly the reviewed golden files."""
    html, text = _outputs(config)
    produced = html if suffix == "html" else text
    golden = GOLDEN / f"2021-09-cohes3ion.{suffix}"
    if UPDATE:
        golden.write_text(produced, encoding="utf-8")
    assert produced == golden.read_text(encoding="utf-8")


def test_render_is_deterministic(config) -> None:
    """The same inputs give the same bytes, digest included."""
    first, second = render_issue(SAMPLE, config), render_issue(SAMPLE, config)
    assert first == second
    assert len(first.digest) == 64


def test_sample_keeps_every_seed_item(config) -> None:
    """All six news items, the five good practices, both event times and the ABOUT links."""
    html, text = _outputs(config)
    for needle in (
        "Six more months of learning",
        "Virtual Dissemination Event",
        "Good Practice Guide published",
        "recognised by Interreg Europe",
        "Policy Recommendations Guide published",
        "Date for your diary",
        "SBRI Centre of Excellence",
        "Industrial Site Management Ruhr",
        "CEZAMAT",
        "Warsaw Metropolis",
        "Green Home",
        "09:30 BST / 10:30 CEST",
        "6 October 2021",
        "Book your place here",
        "https://twitter.com/cohes3ion",
        "https://www.linkedin.com/company/cohes3ion",
    ):
        assert needle in html.replace("\n", " "), needle  # long lines break at spaces
        assert needle in text, needle


def test_html_lines_fit_smtp(config) -> None:
    """No line of the HTML is longer than SMTP's 998 octets."""
    html, _ = _outputs(config)
    assert max(len(line.encode()) for line in html.split("\n")) <= 998


def test_media_queries_survive_inlining(config) -> None:
    """css-inline keeps MJML's responsive rules, !important included, and inlines our CSS."""
    html, _ = _outputs(config)
    assert "@media only screen and (min-width:480px)" in html
    assert "!important" in html
    assert re.search(r'<a href="https://www.interregeurope.eu/cohes3ion" style="[^"]*color', html)
    assert "<mj-" not in html


def test_text_part_lists_links_by_number(config) -> None:
    """The text part is wrapped at 72 and lists each link target once, numbered."""
    _, text = _outputs(config)
    body = text.split("\nLinks:\n")[0]
    assert max(len(line) for line in body.splitlines() if "://" not in line) <= 72
    assert "Find out more here [1]" in text
    assert "[1] https://www.interregeurope.eu/cohes3ion" in text
    assert text.count("[1] https://") == 1


def test_merge_fields_become_fields(tmp_path: Path) -> None:
    """Merge fields in subject, Markdown and headings render once, as open Fields."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(
        tmp_path / "issues" / "x.toml",
        """
        title = "News"
        subject = "Hello {{ subscriber.name | default('reader') }}"
        date = 2024-01-02
        [[blocks]]
        kind = "text"
        heading = "For {{ subscriber.city }}"
        body = "Dear **{{ subscriber.name | default('reader') }}**, welcome."
        """,
    )
    config = load_config(explicit=tmp_path / "newsletter.toml")
    rendered = render_issue(issue, config)
    name, city = Field("name", "reader"), Field("city")
    assert rendered.subject == ("Hello ", name)
    assert name in rendered.html
    assert city in rendered.html
    assert name in rendered.text

    def value(field: Field) -> str:
        return {"name": "<Zoë & Co>", "city": "Łódź"}.get(field.name, "")

    html = fill(rendered.html, value, html=True)
    assert "<strong>&lt;Zoë &amp; Co&gt;</strong>" in html
    assert "For Łódź" in html
    assert "Dear <Zoë & Co>, welcome." in fill(rendered.text, value, html=False)


def test_preheader_is_in_the_html(config) -> None:
    """The preheader is the first hidden text of the body (mail apps show it as preview)."""
    html, _ = _outputs(config)
    body = html[html.index("<body") :]
    assert "Phase 1 extended to January 2022" in body[:2000]


def test_two_column_images_render_as_columns(tmp_path: Path) -> None:
    """An images block gives one MJML column per image (side by side from 480 px)."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(
        tmp_path / "issues" / "x.toml",
        """
        title = "News"
        subject = "News"
        date = 2024-01-02
        [[blocks]]
        kind = "images"
        images = [
          { src = "https://img.example.net/a.jpg", alt = "First", width = 264 },
          { src = "https://img.example.net/b.jpg", alt = "Second", width = 264 },
        ]
        """,
    )
    config = load_config(explicit=tmp_path / "newsletter.toml")
    html = fill(render(load_issue(issue), config).html, lambda f: "", html=True)
    assert html.count("mj-column-per-50") >= 2
    assert 'alt="First"' in html
    assert 'alt="Second"' in html


@pytest.mark.parametrize(
    "title", ["a\u00a0b", "Zu\u0308rich \u200d\U0001f469", "\u65b0\u95fb & <more>"]
)
def test_title_reaches_the_aria_label_as_written(tmp_path: Path, title: str) -> None:
    """MJML escaped a no-break space or joiner in the title Rust-style (`\\u{a0}`) for screen
    readers; the page's <title> and aria-label both decode to the title itself."""
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    source = f'title = "{title}"\nsubject = "News"\ndate = 2024-01-02\n'
    source += '[[blocks]]\nkind = "text"\nbody = "Hello."\n'
    issue = write(tmp_path / "issues" / "x.toml", source)
    config = load_config(explicit=tmp_path / "newsletter.toml")
    page = fill(render(load_issue(issue), config).html, lambda f: "", html=True)
    (label,) = re.findall(r'aria-label="([^"]*)" aria-roledescription="email"', page)
    (shown,) = re.findall(r"<title>(.*?)</title>", page, flags=re.S)
    assert html.unescape(label) == html.unescape(shown) == title

"""check warns about an image wider than the content column it sits in, naming that width."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import Severity
from tests.issue_helpers import checked, messages

ARTICLE = """
[[blocks]]
kind = "article"
heading = "Photo"
body = "A photo."
image = {{ src = "https://cohes3ion.eu/a.jpg", alt = "A photo", width = {width} }}
"""
ROW = """
[[blocks]]
kind = "images"
images = [
  {{ src = "https://cohes3ion.eu/l.jpg", alt = "Left", width = {width} }},
  {{ src = "https://cohes3ion.eu/r.jpg", alt = "Right", width = 100 }},
]
"""


def _width_warnings(tmp_path: Path, blocks: str, config: str = "") -> list[str]:
    result = checked(tmp_path, blocks, config)
    found = [p for p in result.problems if "content column" in p.message]
    assert all(p.severity == Severity.WARNING for p in found)
    return [f"{p.line}: {p.field}: {p.message}" for p in found]


@pytest.mark.parametrize("width", [553, 600, 1200])
def test_an_article_image_wider_than_the_column_is_a_warning(tmp_path: Path, width: int) -> None:
    """The default template's column is 600 px less 24 px padding each side: 552 px."""
    found = _width_warnings(tmp_path, ARTICLE.format(width=width))
    assert found == [
        f"10: blocks[0].image.width: {width} px is wider than the content column (552 px): "
        "mail apps that take the width as written (Outlook) overflow the page; use 552 or less"
    ]


def test_an_image_that_fits_is_fine(tmp_path: Path) -> None:
    """552 px fits the column exactly: no warning."""
    assert _width_warnings(tmp_path, ARTICLE.format(width=552)) == []


def test_images_side_by_side_have_narrower_columns(tmp_path: Path) -> None:
    """Two images in a row: each column is 300 px less padding, 252 px."""
    assert _width_warnings(tmp_path, ROW.format(width=252)) == []
    found = _width_warnings(tmp_path, ROW.format(width=264))
    assert len(found) == 1 and "blocks[0].images[0].width: 264 px" in found[0]
    assert "(252 px)" in found[0]


def test_the_column_follows_the_templates(tmp_path: Path) -> None:
    """A template with a wider body (700 px) moves the limit: measured, not hard-coded."""
    from newsletter.config import default_templates_dir

    base = (default_templates_dir() / "base.mjml.j2").read_text(encoding="utf-8")
    (tmp_path / "templates").mkdir()
    wide = base.replace('width="600px"', 'width="700px"')
    (tmp_path / "templates" / "base.mjml.j2").write_text(wide, encoding="utf-8")
    assert _width_warnings(tmp_path, ARTICLE.format(width=652)) == []
    found = _width_warnings(tmp_path, ARTICLE.format(width=653))
    assert len(found) == 1 and "(652 px)" in found[0]


def test_a_logo_wider_than_the_column_is_a_warning(tmp_path: Path) -> None:
    """The logo's width (newsletter.logo_width) meets the same rule, reported in the config."""
    config = 'logo = "https://cohes3ion.eu/logo.png"\nlogo_width = 580\n'
    result = checked(tmp_path, ARTICLE.format(width=100), config)
    assert any(
        m.startswith("newsletter.logo_width: 580 px is wider than the content column (552 px)")
        for m in messages(result)
    ), messages(result)

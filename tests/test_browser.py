"""Layout in a real browser: Debian's headless Chromium at phone and desktop widths."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.render import fill, preview_value, render_issue
from tests.compose_helpers import MINIMAL_CONFIG, ROOT, SAMPLE, write

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def _page(browser, html: Path, width: int):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.route(
        "**/*",
        lambda route: (
            route.abort() if not route.request.url.startswith("file:") else route.continue_()
        ),
    )  # images and fonts are remote: never fetch them
    page.goto(html.as_uri())
    return page


def _render(issue: Path, config_path: Path, out: Path) -> Path:
    config = load_config(explicit=config_path)
    html = fill(
        render_issue(issue, config).html, preview_value(config.newsletter.base_url), html=True
    )
    out.write_text(html, encoding="utf-8")
    return out


def test_no_horizontal_scroll_on_a_phone(browser, tmp_path: Path) -> None:
    """At 375 px wide the sample fits: nothing wider than the viewport."""
    page = _page(browser, _render(SAMPLE, ROOT / "newsletter.toml", tmp_path / "s.html"), 375)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().right))"
    )
    assert widest <= 375


def test_sample_is_centred_600px_on_desktop(browser, tmp_path: Path) -> None:
    """At 800 px the content column is 600 px wide and fits without scrolling."""
    page = _page(browser, _render(SAMPLE, ROOT / "newsletter.toml", tmp_path / "s.html"), 800)
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    box = page.locator("h1").evaluate(
        "e => e.closest('div[style*=\"max-width:600px\"]').getBoundingClientRect()"
    )
    assert box["width"] == 600
    assert box["x"] == 100  # centred: (800 - 600) / 2


IMAGES = """
title = "Pictures"
subject = "Pictures"
date = 2024-01-02
[[blocks]]
kind = "images"
images = [
  { src = "https://img.example.net/a.jpg", alt = "Left photo", width = 264 },
  { src = "https://img.example.net/b.jpg", alt = "Right photo", width = 264 },
]
captions = ["Left", "Right"]
"""


def _image_boxes(browser, tmp_path: Path, width: int) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(tmp_path / "issues" / "pics.toml", IMAGES)
    page = _page(browser, _render(issue, tmp_path / "newsletter.toml", tmp_path / "p.html"), width)
    return [
        page.locator(f"img[alt='{alt}']").bounding_box() for alt in ("Left photo", "Right photo")
    ]


def test_image_row_side_by_side_on_desktop(browser, tmp_path: Path) -> None:
    """At 800 px the two images of a row share one line, left then right."""
    left, right = _image_boxes(browser, tmp_path, 800)
    assert abs(left["y"] - right["y"]) < 1
    assert right["x"] >= left["x"] + left["width"]


def test_image_row_stacks_on_a_phone(browser, tmp_path: Path) -> None:
    """At 375 px the images stack, and neither overflows the screen."""
    left, right = _image_boxes(browser, tmp_path, 375)
    assert right["y"] >= left["y"] + left["height"]
    assert max(left["x"] + left["width"], right["x"] + right["width"]) <= 375


CONTRAST_JS = """
() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = e => {
    for (; e; e = e.parentElement) {
      const st = getComputedStyle(e);
      const c = rgb(st.backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
      const attr = e.getAttribute && e.getAttribute('bgcolor');
      if (attr) { const d = document.createElement('div'); d.style.color = attr; document.body.appendChild(d);
        const v = rgb(getComputedStyle(d).color); d.remove(); return v; }
    }
    return [255, 255, 255];
  };
  const worst = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const e = node.parentElement;
    const st = getComputedStyle(e);
    if (st.display === 'none' || st.visibility === 'hidden' || st.opacity === '0' || st.maxHeight === '0px') continue;
    const a = lum(rgb(st.color)), b = lum(background(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    worst.push([ratio, node.textContent.trim().slice(0, 40)]);
  }
  worst.sort((x, y) => x[0] - y[0]);
  return worst.slice(0, 3);
}
"""


def test_text_contrast_meets_wcag_aa(browser, tmp_path: Path) -> None:
    """Every visible text of the sample has a contrast ratio of at least 4.5:1 (WCAG AA)."""
    page = _page(browser, _render(SAMPLE, ROOT / "newsletter.toml", tmp_path / "s.html"), 800)
    worst = page.evaluate(CONTRAST_JS)
    assert worst, "no text found"
    print("lowest contrast:", worst)
    assert worst[0][0] >= 4.5, worst


INLINE = '''
title = "Inline"
subject = "Inline"
date = 2024-01-02
[[blocks]]
kind = "text"
heading = "Partners"
body = """
PARAGRAPH

PARAGRAPH

    code   keeps   its   spaces
"""
'''
SENTENCE = (
    "The partners met in **Czechia**, on 16 November, and in *Łódź* (_Poland_) \u2013 "
    'see [the report](https://www.example.net/report?a=1&b=2 "A title with spaces") '
    "or `inline code` & more: 中文 中文 ab. "
)


@pytest.mark.parametrize("issue_text", [None, INLINE], ids=["sample", "inline markup"])
def test_wrapping_never_changes_the_text(browser, tmp_path: Path, monkeypatch, issue_text) -> None:  # type: ignore[no-untyped-def]
    """innerText is the same unwrapped, as rendered (wrapped at 798 octets) and wrapped at 40."""
    from newsletter import render

    if issue_text is None:
        issue, config = SAMPLE, ROOT / "newsletter.toml"
    else:
        config = write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
        body = issue_text.replace("PARAGRAPH", SENTENCE * 12)
        issue = write(tmp_path / "issues" / "inline.toml", body)
    wrapped = _render(issue, config, tmp_path / "wrapped.html").read_text(encoding="utf-8")
    (tmp_path / "tight.html").write_text(render.wrap_lines(wrapped, 40), encoding="utf-8")
    unwrapped = lambda html, limit=0, opaque=None: html  # noqa: E731  # the reference: no wrapping
    monkeypatch.setattr(render, "wrap_lines", unwrapped)
    _render(issue, config, tmp_path / "unwrapped.html")
    texts = [
        _page(browser, tmp_path / f"{name}.html", 800).evaluate("document.body.innerText")
        for name in ("unwrapped", "wrapped", "tight")
    ]
    assert "Czechia, on 16 November" in texts[0] or issue_text is None
    assert texts[1] == texts[0]
    assert texts[2] == texts[0]


GROUPED = """
title = "Regional digest"
subject = "Regional digest"
date = 2024-01-02
[[blocks]]
kind = "links"
heading = "In this issue"
[[blocks.items]]
text = "Events"
url = "#events"
[[blocks]]
kind = "text"
heading = "News"
body = '''PARAGRAPH'''
[[blocks]]
kind = "heading"
id = "events"
heading = "Events and deadlines"
[[blocks]]
kind = "event"
title = "Applications close"
date = 2024-02-01
deadline = true
booking = { url = "https://cohes3ion.eu/apply" }
[[blocks]]
kind = "divider"
[[blocks]]
kind = "text"
body = '''After the rule. PARAGRAPH'''
"""
SOCIAL = """social_position = "both"
social = [
  { label = "Website", url = "https://cohes3ion.eu" }, { label = "Flickr", url = "https://www.flickr.com/x" },
  { label = "Instagram", url = "https://www.instagram.com/x" }, { label = "Mastodon", url = "https://eupolicy.social/@x" },
  { label = "Bluesky", url = "https://bsky.app/profile/x" },
]
"""


def _grouped(tmp_path: Path) -> Path:
    config = write(tmp_path / "newsletter.toml", MINIMAL_CONFIG + SOCIAL)
    issue = write(tmp_path / "issues" / "grouped.toml", GROUPED.replace("PARAGRAPH", SENTENCE * 20))
    return _render(issue, config, tmp_path / "g.html")


@pytest.mark.parametrize("width", [375, 800])
def test_groups_and_social_links_fit(browser, tmp_path: Path, width: int) -> None:
    """Heading and divider blocks, and five social links in header and footer, never overflow."""
    page = _page(browser, _grouped(tmp_path), width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().right))"
    )
    assert widest <= width


def test_a_contents_link_jumps_to_its_block(browser, tmp_path: Path) -> None:
    """Clicking "Events" in the contents scrolls the page to the block with id="events" (the
    text after it is long enough for the block to reach the top)."""
    page = _page(browser, _grouped(tmp_path), 375)
    assert page.evaluate("window.scrollY") == 0
    page.click("a[href='#events']")
    page.wait_for_function("window.scrollY > 0")  # no timing: waits for the scroll itself
    top = page.evaluate("document.getElementById('events').getBoundingClientRect().top")
    assert abs(top) < 2


def test_groups_and_header_links_meet_wcag_aa(browser, tmp_path: Path) -> None:
    """The group heading and the social links in the header keep a contrast of 4.5:1."""
    page = _page(browser, _grouped(tmp_path), 800)
    worst = page.evaluate(CONTRAST_JS)
    assert worst[0][0] >= 4.5, worst

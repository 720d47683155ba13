"""`newsletter check`: errors and warnings located in the file, exit codes, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.compose_helpers import BLANK_LINKS, MINIMAL_CONFIG, ROOT, SAMPLE, run, write

SCHEMA = json.loads((ROOT / "docs" / "check.schema.json").read_text())


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def test_sample_passes() -> None:
    """The shipped sample issue has no errors; its only warnings are the sample's own example
    host in the addresses and base_url every message carries."""
    result = run("check", SAMPLE)
    assert result.exit_code == 0, result.output
    assert "0 error(s), 3 warning(s)" in result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert all("is at an example host (cohes3ion.example.org)" in w for w in warnings)


def test_blank_links_are_each_named() -> None:
    """The seed as received, with its '#' links, fails and names every blank link."""
    result = run("check", BLANK_LINKS)
    assert result.exit_code == 1
    expected = [
        "blocks[0].body: link 'Find out more here'",
        "blocks[1].body: link 'watch the recording here'",
        "blocks[2].cta.url",
        *[f"blocks[3].items[{i}].url" for i in range(5)],
        "blocks[3].outro: link 'here'",
        "blocks[4].body: link 'Read the Policy Recommendations Guide here'",
        "blocks[5].booking.url",
    ]
    lines = [line for line in result.output.splitlines() if "placeholder link" in line]
    assert len(lines) == len(expected)
    for needle, line in zip(expected, lines, strict=True):
        assert f"{BLANK_LINKS}:" in line and needle in line, (needle, line)


def test_items_carry_their_line() -> None:
    """A blank link in an array of tables is reported with the line of its url key."""
    result = run("check", BLANK_LINKS)
    text = BLANK_LINKS.read_text().splitlines()
    line = next(x for x in result.output.splitlines() if "blocks[3].items[0].url" in x)
    number = int(line.split(":")[1])
    assert text[number - 1].strip() == 'url = "#"'


def test_json_output_matches_schema() -> None:
    """`check --json` prints one JSON object valid against docs/check.schema.json."""
    result = run("check", BLANK_LINKS, "--json")
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["ok"] is False
    assert len(report["errors"]) == 11
    assert report["errors"][2] == {
        "file": str(BLANK_LINKS),
        "line": report["errors"][2]["line"],
        "field": "blocks[2].cta.url",
        "message": "'#' is a placeholder link",
    }


def _folder(tmp_path: Path, config: str, issue: str) -> Path:
    write(tmp_path / "newsletter.toml", config)
    return write(tmp_path / "issues" / "x.toml", issue)


ISSUE = """
title = "News"
subject = "News"
preheader = "Pre"
date = 2024-01-02
[[blocks]]
kind = "text"
body = "Hello"
"""


def test_warnings_do_not_fail(tmp_path: Path, monkeypatch) -> None:
    """No preheader, a long subject, plain http, a merge field without default, an unset
    list_id and init's placeholder `from` and `base_url` are warnings."""
    monkeypatch.chdir(tmp_path)
    issue = ISSUE.replace('preheader = "Pre"', "").replace(
        'subject = "News"', f'subject = "{"x" * 95}"'
    )
    issue = issue.replace('"Hello"', '"Hi {{ subscriber.name }}, see [this](http://a.org)"')
    result = run("check", _folder(tmp_path, MINIMAL_CONFIG, issue))
    assert result.exit_code == 0, result.output
    for needle in (
        "preheader:",
        "subject is 95 characters",
        "plain http",
        "subscriber.name has no default",
        "newsletter.list_id: not set",
        "newsletter.from: 'Test news <news@example.org>' is still the placeholder `init` wrote",
        "newsletter.base_url: 'https://news.example.org' is still the placeholder `init` wrote",
    ):
        assert needle in result.output
    assert "0 error(s), 7 warning(s)" in result.output


def test_missing_postal_address_and_subject(tmp_path: Path, monkeypatch) -> None:
    """No postal address in the config and an empty subject are errors."""
    monkeypatch.chdir(tmp_path)
    config = MINIMAL_CONFIG.replace('postal_address = "1 Test Street, Testtown"', "")
    result = run("check", _folder(tmp_path, config, ISSUE.replace('"News"\npre', '""\npre')))
    assert result.exit_code == 1
    assert "newsletter.postal_address: no postal address" in result.output
    assert "subject: no subject" in result.output


def test_oversized_html_is_an_error(tmp_path: Path, monkeypatch) -> None:
    """Rendered HTML over Gmail's 102,400 bytes is an error (it would hide the footer)."""
    monkeypatch.chdir(tmp_path)
    big = "Lorem ipsum dolor sit amet. " * 4000
    result = run("check", _folder(tmp_path, MINIMAL_CONFIG, ISSUE.replace("Hello", big)))
    assert result.exit_code == 1
    assert "Gmail clips messages over 102,400 bytes" in result.output


def test_placeholder_hosts_and_empty_links(tmp_path: Path, monkeypatch) -> None:
    """example.com-style hosts and empty links written by the author are errors."""
    monkeypatch.chdir(tmp_path)
    body = "[a](https://example.com/x) and [b]() and [c](https://www.example.org)"
    result = run("check", _folder(tmp_path, MINIMAL_CONFIG, ISSUE.replace("Hello", body)))
    assert result.exit_code == 1
    assert "link 'a': 'https://example.com/x' points at a placeholder host" in result.output
    assert "link 'b': empty link" in result.output
    assert "link 'c'" in result.output


def test_footer_without_unsubscribe_is_an_error(tmp_path: Path, monkeypatch) -> None:
    """A folder's own base template without {{ unsubscribe_url }} fails the check."""
    monkeypatch.chdir(tmp_path)
    issue = _folder(tmp_path, MINIMAL_CONFIG, ISSUE)
    base = (ROOT / "templates" / "base.mjml.j2").read_text()
    write(tmp_path / "templates" / "base.mjml.j2", base.replace("{{ unsubscribe_url }}", "#"))
    result = run("check", issue)
    assert result.exit_code == 1
    assert "no unsubscribe link: the footer template (base.mjml.j2)" in result.output


def test_leftover_mjml_tag_is_an_error(tmp_path: Path, monkeypatch) -> None:
    """A misspelt MJML tag in a template survives MJML; check catches it."""
    monkeypatch.chdir(tmp_path)
    issue = _folder(tmp_path, MINIMAL_CONFIG, ISSUE)
    partial = (ROOT / "templates" / "blocks" / "text.mjml.j2").read_text()
    write(tmp_path / "templates" / "blocks" / "text.mjml.j2", partial.replace("mj-text", "mj-txt"))
    result = run("check", issue)
    assert result.exit_code == 1
    assert "MJML tag left in the output: <mj-txt" in result.output


def test_template_error_names_template_and_line(tmp_path: Path, monkeypatch) -> None:
    """An undefined variable in a template names the template file and its line."""
    monkeypatch.chdir(tmp_path)
    issue = _folder(tmp_path, MINIMAL_CONFIG, ISSUE)
    partial = (ROOT / "templates" / "blocks" / "text.mjml.j2").read_text()
    broken = partial.replace("{{ block.body | markdown }}", "{{ block.bodyy | markdown }}")
    template = write(tmp_path / "templates" / "blocks" / "text.mjml.j2", broken)
    line = next(n for n, x in enumerate(broken.splitlines(), 1) if "bodyy" in x)
    result = run("check", issue)
    assert result.exit_code == 1
    assert f"{template}:{line}: template error:" in result.output
    assert "bodyy" in result.output


def test_template_syntax_error_is_located(tmp_path: Path, monkeypatch) -> None:
    """A Jinja syntax error in a folder's template gives file and line, no traceback."""
    monkeypatch.chdir(tmp_path)
    issue = _folder(tmp_path, MINIMAL_CONFIG, ISSUE)
    template = write(tmp_path / "templates" / "blocks" / "text.mjml.j2", "<mj-section>\n{% if %}\n")
    result = run("render", issue)
    assert result.exit_code == 1
    assert f"{template}:2: template syntax error" in result.output
    assert "Traceback" not in result.output


def test_mjml_error_names_the_block(tmp_path: Path, monkeypatch) -> None:
    """An MJML parse error is mapped back to the block whose template produced it."""
    monkeypatch.chdir(tmp_path)
    issue = _folder(tmp_path, MINIMAL_CONFIG, ISSUE)
    write(
        tmp_path / "templates" / "blocks" / "text.mjml.j2",
        '<mj-section><mj-column><mj-text a="x>\n',
    )
    result = run("check", issue)
    assert result.exit_code == 1
    assert "MJML error" in result.output


def test_images_need_alt_but_not_a_link(tmp_path: Path, monkeypatch) -> None:
    """An image without alt text is an error; an image without href is fine."""
    monkeypatch.chdir(tmp_path)
    images = (
        '[[blocks]]\nkind = "images"\nimages = [\n'
        '  { src = "https://img.org/a.png", alt = "", width = 200 },\n'
        '  { src = "https://img.org/b.png", alt = "B", width = 200 },\n]\n'
    )
    result = run("check", _folder(tmp_path, MINIMAL_CONFIG, ISSUE + images))
    assert result.exit_code == 1
    assert "blocks[1].images[0].alt: image without alt text" in result.output
    assert "href" not in result.output
    assert "1 error(s)" in result.output


def test_schema_takes_one_file_or_several_and_nothing_else() -> None:
    """docs/check.schema.json: a file's object, or {ok, files, totals} of such objects; an
    object mixing the two, or without its totals, is refused."""
    one = {"file": "x.toml", "ok": True, "errors": [], "warnings": []}
    several = {"ok": True, "files": [one], "totals": {"files": 1, "errors": 0, "warnings": 0}}
    jsonschema.validate(one, SCHEMA)
    jsonschema.validate(several, SCHEMA)
    for bad in ({**several, "file": "x.toml"}, {"ok": True, "files": [one]}, {**one, "files": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)

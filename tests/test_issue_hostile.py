"""Hostile or mistaken issue files: exit 1 with one line naming the file and the place, never a
traceback or a process that runs away. Issue text is a template written by people: it takes
merge fields and simple conditions, nothing that loops, calls or loads other templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.models import Field
from newsletter.render import render_issue
from tests.compose_helpers import MINIMAL_CONFIG, run, write

HEAD = 'title = "News"\nsubject = "News"\npreheader = "p"\ndate = 2024-01-02\n'
EVENT = '[[blocks]]\nkind = "event"\ntitle = "E"\ndate = 2024-02-03\nstart = "09:30"\n'


def _issue(tmp_path: Path, text: str) -> Path:
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    path = tmp_path / "issues" / "x.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _one_clear_line(tmp_path: Path, monkeypatch, command: str, text: str) -> str:
    """Run `command` on the issue; return its one error line (checked: exit 1, no traceback)."""
    path = _issue(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    result = run(command, path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if str(path) in line]
    summary = re.compile(r"error\(s\), \d+ warning\(s\)$")  # warnings: the config's, also now
    errors = [x for x in lines if not summary.search(x) and not x.startswith("warning: ")]
    assert len(errors) == 1, result.output
    return errors[0].removeprefix("error: ")


@pytest.mark.parametrize(
    "zone", ["Europe", "Europe/", "America", "zone1970.tab", "../../etc/passwd", "", "UTC "]
)
@pytest.mark.parametrize("command", ["check", "render"])
def test_time_zone_that_is_not_one(tmp_path: Path, monkeypatch, command: str, zone: str) -> None:
    """A folder of the zone database, a data file or a path is an unknown time zone."""
    line = _one_clear_line(tmp_path, monkeypatch, command, f"{HEAD}{EVENT}timezones = [{zone!r}]\n")
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:10: blocks[0].timezones[0]: ")
    assert f"unknown time zone {zone!r}: use an IANA name such as 'Europe/London'" in line


NOT_IN_ISSUE_TEXT = {
    "include": ('{% include "x" %}', "{% include %}"),
    "import": ('{% import "x" as x %}', "{% import %}"),
    "from import": ('{% from "x" import y %}', "{% import %}"),
    "extends": ('{% extends "x" %}', "{% extends %}"),
    "range over the sandbox's bound": (
        "{% for i in range(100001) %}a{% endfor %}",
        "{% for %}",
    ),
    "range called alone": ("{{ range(100001) }}", "function call"),
    "nested ranges": (
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
        "{% for %}",
    ),
    "loop over a long string": ('{% for c in "abc" %}{{ c }}{% endfor %}', "{% for %}"),
    "string repetition": ('{{ "x" * 1000000000 }}', "'Mul'"),
    "power": ("{{ 9 ** 9 ** 9 }}", "'Pow'"),
    "string formatting": ('{{ "%0999999999d" % 1 }}', "'Mod'"),
    "a filter with a size": ('{{ "x" | center(1000000000) }}', "the filter 'center'"),
    "lipsum": ("{{ lipsum(1000000) }}", "function call"),
    "macro": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{% macro %}"),
    "set": ('{% set x = "a" %}{{ x }}', "{% set %}"),
}


@pytest.mark.parametrize(
    ("source", "named"), NOT_IN_ISSUE_TEXT.values(), ids=NOT_IN_ISSUE_TEXT.keys()
)
@pytest.mark.parametrize("command", ["check", "render", "send"])
def test_issue_text_takes_merge_fields_not_programs(
    tmp_path: Path, monkeypatch, command: str, source: str, named: str
) -> None:
    """Includes, imports, loops, calls and unbounded operations are one located error."""
    body = source.replace("\\", "\\\\").replace('"', '\\"')
    text = f'{HEAD}[[blocks]]\nkind = "text"\nbody = "{body}"\n'
    line = _one_clear_line(tmp_path, monkeypatch, command, text)
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:7: blocks[0].body: template error: ")
    assert named in line
    assert "is not allowed in issue text" in line


NOT_A_MERGE_FIELD = {
    "a private item of subscriber": ("{{ subscriber['__class__'] }}", "subscriber['__class__']"),
    "a number as a field name": ("{{ subscriber[0] }}", "subscriber[0]"),
    "an attribute of a merge field": ("{{ subscriber.name.upper }}", "subscriber.name.upper"),
    "an item of a merge field": ("{{ subscriber.name[0] }}", "subscriber.name[0]"),
    "the marker's own data": ("{{ subscriber.name.table }}", "subscriber.name.table"),
    "the template itself": ("{{ self }}", "'self'"),
}


@pytest.mark.parametrize(
    ("source", "named"), NOT_A_MERGE_FIELD.values(), ids=NOT_A_MERGE_FIELD.keys()
)
@pytest.mark.parametrize("command", ["check", "send"])
def test_only_subscriber_fields_are_merge_fields(
    tmp_path: Path, monkeypatch, command: str, source: str, named: str
) -> None:
    """`subscriber.x` and `subscriber["x"]` are the only names: anything else (items, attributes
    of a field, Jinja's own names) is one located error, never a traceback or a Python repr."""
    body = source.replace("\\", "\\\\").replace('"', '\\"')
    text = f'{HEAD}[[blocks]]\nkind = "text"\nbody = "{body}"\n'
    line = _one_clear_line(tmp_path, monkeypatch, command, text)
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:7: blocks[0].body: template error: ")
    assert named in line


def test_deeply_nested_expression_is_an_error(tmp_path: Path, monkeypatch) -> None:
    """An expression nested past Python's recursion limit is an error, not a RecursionError."""
    body = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    line = _one_clear_line(
        tmp_path, monkeypatch, "check", f'{HEAD}[[blocks]]\nkind = "text"\nbody = "{body}"\n'
    )
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:7: blocks[0].body: template error")


def test_merge_fields_conditions_and_raw_still_work(tmp_path: Path) -> None:
    """What issue text may use still renders: merge fields with defaults, {% if %}, raw."""
    body = (
        'Dear {{ subscriber.name | default(\\"reader\\") }}, '
        "{% if true %}yes{% else %}no{% endif %} {% raw %}{{ as written }}{% endraw %}"
    )
    path = _issue(tmp_path, f'{HEAD}[[blocks]]\nkind = "text"\nbody = "{body}"\n')
    rendered = render_issue(path, load_config(explicit=tmp_path, environ={}))
    assert Field("name", "reader") in rendered.text
    text = "".join(p for p in rendered.text if isinstance(p, str))
    assert "yes {{ as written }}" in text


CONDITION_ON_A_FIELD = {
    "if": "{% if subscriber.name %}Dear {{ subscriber.name }}{% else %}Dear reader{% endif %}",
    "elif": "{% if false %}a{% elif subscriber.city == 'Paris' %}b{% endif %}",
    "inline if": "{{ 'a' if subscriber.name else 'b' }}",
    "a test": "{% if subscriber.name is defined %}a{% endif %}",
}


@pytest.mark.parametrize("source", CONDITION_ON_A_FIELD.values(), ids=CONDITION_ON_A_FIELD.keys())
@pytest.mark.parametrize("command", ["check", "send"])
def test_a_condition_on_a_merge_field_is_an_error(
    tmp_path: Path, monkeypatch, command: str, source: str
) -> None:
    """Issue text is rendered once, before any reader is known: a condition on a merge field
    would be decided once for everyone (it always took the first branch, so a reader with no
    name got "Dear ,"). It is a located error saying to use a default instead."""
    body = source.replace("\\", "\\\\").replace('"', '\\"')
    text = f'{HEAD}[[blocks]]\nkind = "text"\nbody = "{body}"\n'
    line = _one_clear_line(tmp_path, monkeypatch, command, text)
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:7: blocks[0].body: template error: ")
    assert "once for every reader" in line
    assert "default(" in line


NESTED = {
    "arrays": "a = " + "[" * 100_000 + "]" * 100_000 + "\n",
    "inline tables": "a = " + "{b = " * 100_000 + "1" + "}" * 100_000 + "\n",
    "mixed": "a = " + "[{b = " * 50_000 + "1" + "}]" * 50_000 + "\n",
}


@pytest.mark.parametrize("text", NESTED.values(), ids=NESTED.keys())
@pytest.mark.parametrize("command", ["check", "render"])
def test_deeply_nested_toml_is_an_error(
    tmp_path: Path, monkeypatch, command: str, text: str
) -> None:
    """Arrays or tables nested 100,000 deep: a TOML error at the line, not a RecursionError."""
    line = _one_clear_line(tmp_path, monkeypatch, command, text)
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:1: invalid TOML: ")
    assert "nested too deeply" in line


@pytest.mark.parametrize("text", NESTED.values(), ids=NESTED.keys())
def test_archive_of_a_deeply_nested_issue_is_an_error(
    tmp_path: Path, monkeypatch, text: str
) -> None:
    """`archive` reads every issue file, also to see if a broken one is a draft: the same
    located error there, not a RecursionError."""
    path = _issue(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    result = run("archive", "-o", tmp_path / "site")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{path}:1: invalid TOML: " in result.output
    assert "nested too deeply" in result.output


def test_deeply_nested_config_is_an_error(tmp_path: Path, monkeypatch) -> None:
    """The same for newsletter.toml, which every command reads first."""
    path = _issue(tmp_path, HEAD)
    config = tmp_path / "newsletter.toml"
    config.write_text(MINIMAL_CONFIG + "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{config}:" in result.output
    assert "nested too deeply" in result.output


def test_a_byte_order_mark_is_read_as_utf8(tmp_path: Path, monkeypatch) -> None:
    """Editors on Windows save UTF-8 with a byte-order mark: an issue and a newsletter.toml that
    start with one are read like any other, not refused as `1:1: invalid TOML`."""
    bom = "\ufeff"
    path = _issue(tmp_path, bom + HEAD + '[[blocks]]\nkind = "text"\nbody = "Hello"\n')
    config = tmp_path / "newsletter.toml"
    config.write_text(bom + config.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run("check", path)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("day", "start", "zones"),
    [
        ("9999-12-31", "23:59", '["Etc/GMT+12", "Pacific/Kiritimati"]'),
        ("0001-01-01", "00:00", '["Pacific/Kiritimati", "Etc/GMT+12"]'),
    ],
    ids=["past 9999", "before year 1"],
)
@pytest.mark.parametrize("command", ["check", "render"])
def test_event_time_outside_the_calendar_is_located_at_the_date(
    tmp_path: Path, monkeypatch, command: str, day: str, start: str, zones: str
) -> None:
    """An event whose start, shown in another zone, falls outside years 1-9999 is an error at
    the issue's date line (was "template error: date value out of range" in event.mjml.j2)."""
    text = (
        f'{HEAD}[[blocks]]\nkind = "event"\ntitle = "E"\ndate = {day}\nstart = "{start}"\n'
        f"timezones = {zones}\n"
    )
    line = _one_clear_line(tmp_path, monkeypatch, command, text)
    assert line.startswith(f"{tmp_path / 'issues' / 'x.toml'}:8: blocks[0].date: ")
    assert "years 1 to 9999" in line


def test_a_decimal_where_a_whole_number_goes_says_so(tmp_path: Path, monkeypatch) -> None:
    """`width = 1.5`: "must be a whole number, not a decimal number" (was "..., not a number")."""
    text = (
        f'{HEAD}[[blocks]]\nkind = "article"\nheading = "H"\nbody = "b"\n'
        'image = { src = "https://i.org/a.png", alt = "A", width = 1.5 }\n'
    )
    line = _one_clear_line(tmp_path, monkeypatch, "check", text)
    assert line.endswith("image.width: must be a whole number, not a decimal number")

"""Checks on an issue and its rendered HTML: what would embarrass the sender or hurt delivery.

Errors block a send to a list; warnings are printed. Each finding names the file, the TOML path
and its line, as `issues/x.toml:12: blocks[2].items[0].url: '#' is a placeholder link`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from newsletter import mdtext
from newsletter.config import INIT_BASE_URL, INIT_FROM, Config, env_var
from newsletter.errors import ConfigError, Problem, Severity
from newsletter.issue import required
from newsletter.models import HEADER_CONTROL, Field, Image, Issue, Rendered, nodes, walk
from newsletter.render import fill, preview_value
from newsletter.tomlsource import KeyLines
from newsletter.urls import split, url_problem

GMAIL_CLIP = 102_400  # Gmail clips bigger HTML and hides the rest, unsubscribe link included
SIZE_WARNING = 90 * 1024
SUBJECT_WARNING = 90
URL_FIELDS = ("url", "src", "href")
MARKDOWN_FIELDS = ("body", "intro", "outro", "note", "description", "captions")
PLACEHOLDER_HOSTS = ("example.com", "example.org", "example.net", "localhost")
PLACEHOLDER_TLDS = (".example", ".invalid", ".test", ".localhost")


def lint(issue: Issue, lines: KeyLines, rendered: Rendered, config: Config) -> list[Problem]:
    problems = source_findings(issue, lines, config)
    html = fill(rendered.html, preview_value(config.newsletter.base_url), html=True)
    problems += [*_subject_line(issue, rendered, lines), *_output(issue, rendered, html)]
    problems += _image_widths(issue, lines, html, config)
    return problems


def source_findings(issue: Issue, lines: KeyLines, config: Config) -> list[Problem]:
    """The checks that need no rendering: they also run on an issue read only in part."""
    problems = [*_links(issue, lines), *_images(issue, lines), *_metadata(issue, lines, config)]
    problems += [*_dkim(config), *_smtp(config), *_footer_links(config)]
    problems += [*_example_settings(config), *_empty_text(issue, lines)]
    return problems


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == Severity.ERROR]


# ---------------------------------------------------------------------------------------------


def _links(issue: Issue, lines: KeyLines) -> Iterator[Problem]:
    ids = frozenset(b.id for b in issue.blocks if b is not None and b.id)  # None: unreadable
    for where, name, text in walk(issue):
        if name == "href" and not text:
            continue  # an image's link is optional: empty means the image links nowhere
        if name in URL_FIELDS:
            yield from _url(issue.path, lines, where, text, "", ids)
        elif name in MARKDOWN_FIELDS:
            for label, url in mdtext.link_targets(text):
                yield from _url(issue.path, lines, where, url, f"link '{label}': ", ids)


def _footer_links(config: Config) -> Iterator[Problem]:
    """The footer's Markdown is in every copy: its links meet the issue's rule."""
    no_lines = KeyLines("")  # the config's lines are not kept: the key names the place
    for label, url in mdtext.link_targets(config.newsletter.footer):
        yield from _url(config.path, no_lines, "newsletter.footer", url, f"link '{label}': ")


def _url(
    path: Path,
    lines: KeyLines,
    where: str,
    url: str,
    prefix: str,
    ids: frozenset[str] = frozenset(),
) -> Iterator[Problem]:
    """The problems of one link; `#id` is a link within the issue when a block has that id."""

    def problem(message: str, severity: Severity = Severity.ERROR) -> Problem:
        return Problem(
            path, prefix + message, field=where, line=lines.line(where), severity=severity
        )

    if url.strip().startswith("#") and url.strip()[1:] in ids:
        return
    reason = placeholder(url)
    broken = url_problem(url)
    if reason:
        yield problem(reason)
    elif broken:
        yield problem(f"{url!r} {broken}")
    elif urlsplit(url).scheme == "http":
        yield problem(f"{url!r} is plain http: use https if the site has it", Severity.WARNING)
    elif urlsplit(url).scheme not in ("https", "mailto"):
        yield problem(f"{url!r} is not an https:// or mailto: link")


def placeholder(url: str) -> str:
    """Why `url` is a placeholder rather than a real target, or '' when it looks real."""
    url = url.strip()
    if not url:
        return "empty link"
    if url == "#":
        return f"{url!r} is a placeholder link"
    if url.startswith("#"):
        return f"{url!r} links to no block: give the block it means id = {url[1:]!r}"
    parts = split(url)
    if parts is None:
        return ""  # not a URL at all: url_problem says so
    host = (parts.hostname or "").lower()
    if parts.scheme == "mailto":
        host = url.rpartition("@")[2].lower()
    if placeholder_host(host):
        return f"{url!r} points at a placeholder host ({host})"
    return ""


def placeholder_host(host: str) -> bool:
    """A host reserved for examples and tests (RFC 2606, RFC 6761), never a real reader's."""
    return (
        host in PLACEHOLDER_HOSTS
        or host.endswith(PLACEHOLDER_TLDS)
        or any(host.endswith("." + h) for h in PLACEHOLDER_HOSTS)
    )


def _images(issue: Issue, lines: KeyLines) -> Iterator[Problem]:
    for where, image in nodes(issue):
        if isinstance(image, Image) and not image.alt.strip():
            yield Problem(
                issue.path,
                "image without alt text (describe it for screen readers)",
                field=f"{where}.alt",
                line=lines.line(where),
            )


def _empty_text(issue: Issue, lines: KeyLines) -> Iterator[Problem]:
    """A required text left empty ("" or blanks): an empty heading, body or link text."""
    handled = ("subject", "alt", *URL_FIELDS)  # with messages of their own above
    for where, node in nodes(issue):
        if not dataclasses.is_dataclass(node) or isinstance(node, type):
            continue
        for fld in dataclasses.fields(node):
            value = getattr(node, fld.name)
            blank = isinstance(value, str) and not value.strip()
            if blank and required(fld) and fld.name not in handled:
                path = f"{where}.{fld.name}".lstrip(".")
                yield Problem(
                    issue.path,
                    "empty: write it, or remove the block",
                    field=path,
                    line=lines.line(path),
                )


def _subject_line(issue: Issue, rendered: Rendered, lines: KeyLines) -> Iterator[Problem]:
    """The subject as rendered is one header line: no line break or other control character
    (building the message refuses them, so `check` does too)."""
    for piece in rendered.subject:
        text = piece if isinstance(piece, str) else piece.default  # a default fills it per reader
        bad = HEADER_CONTROL.search(text) if text else None
        if bad is not None:
            yield Problem(
                issue.path,
                f"contains control character U+{ord(bad.group()):04X} (a line break or tab?): "
                "a subject is one line of text",
                field="subject",
                line=lines.line("subject"),
            )
            return


def _dkim(config: Config) -> list[Problem]:
    """The DKIM settings `send` would refuse: half set, or a key file it cannot read."""
    from newsletter.dkim import DkimSigner
    from newsletter.errors import InvalidInput

    try:
        DkimSigner.from_config(config)
    except InvalidInput as exc:
        return exc.problems
    return []


def _smtp(config: Config) -> list[Problem]:
    """The [smtp] settings `send` refuses before connecting (clear text off this machine)."""
    from newsletter.errors import InvalidInput

    if not config.smtp.host:
        return []  # the outbox: no connection
    from newsletter.transport import check_security

    try:
        check_security(config.smtp)
    except InvalidInput as exc:
        return [dataclasses.replace(p, path=config.path) for p in exc.problems]
    return []


def _metadata(issue: Issue, lines: KeyLines, config: Config) -> Iterator[Problem]:
    path = issue.path
    if not issue.subject.strip():
        yield Problem(path, "no subject", field="subject", line=lines.line("subject"))
    elif len(issue.subject) > SUBJECT_WARNING:
        yield Problem(
            path,
            f"subject is {len(issue.subject)} characters: mail apps cut it "
            f"after about {SUBJECT_WARNING}",
            field="subject",
            line=lines.line("subject"),
            severity=Severity.WARNING,
        )
    if not issue.preheader.strip():
        yield Problem(
            path,
            "no preheader: mail apps show the first text of the body instead",
            field="preheader",
            severity=Severity.WARNING,
        )
    if not config.newsletter.base_url:
        yield Problem(
            config.path,
            "missing: the https URL of the unsubscribe endpoint, needed in every message",
            field="newsletter.base_url",
        )
    if not config.newsletter.postal_address.strip():
        yield Problem(
            config.path,
            "no postal address: anti-spam law requires one in every newsletter",
            field="newsletter.postal_address",
        )
    yield from _derived_list_id(config)


def _sender_settings(config: Config) -> Iterator[tuple[str, str, str]]:
    """(key, value, host) of each setting that every message carries: its addresses and the
    base_url of its unsubscribe links."""
    n = config.newsletter
    pairs = [("from", n.from_), ("reply_to", n.reply_to), ("envelope_from", n.envelope_from)]
    pairs += [("bounce_address", n.bounce_address)]
    pairs += [("unsubscribe_mailto", n.unsubscribe_mailto), ("base_url", n.base_url)]
    for key, value in pairs:
        parts = split(value) if key == "base_url" else None
        host = (parts.hostname or "") if parts else value.rpartition("@")[2].rstrip(">").strip()
        if value:
            yield key, value, host.lower()


def _init_placeholder(config: Config, key: str, host: str) -> bool:
    """Is this setting still the value `init` wrote for it (marked REPLACE)?"""
    if key == "from":
        return config.from_address.lower() == INIT_FROM
    return key == "base_url" and host == urlsplit(INIT_BASE_URL).hostname


def _example_settings(config: Config) -> Iterator[Problem]:
    """Warnings: an address or base_url still at init's placeholder or at an example host."""
    lines = _config_lines(config)
    for key, value, host in _sender_settings(config):
        if _init_placeholder(config, key, host):
            message = f"{value!r} is still the placeholder `init` wrote: set your own before "
            message += "sending (a send through an SMTP server refuses it)"
        elif placeholder_host(host):
            message = f"{value!r} is at an example host ({host}): every message carries it; "
            message += "set your own before sending to readers"
        else:
            continue
        yield _setting_problem(config, lines, key, message, Severity.WARNING)


def refuse_placeholders(config: Config) -> None:
    """Before a send through an SMTP server: init's placeholders for `from` and `base_url`
    would give readers someone else's address and unsubscribe links (other example hosts are
    only warnings). Raise ConfigError naming each key."""
    if not config.smtp.host:
        return  # the outbox: nothing reaches a reader
    lines = _config_lines(config)
    found = [
        _setting_problem(
            config,
            lines,
            key,
            f"{value!r} is still the placeholder `init` wrote: set your own "
            f"{'address' if key == 'from' else 'URL'} in {_where_set(config, key)} before "
            "sending through an SMTP server",
        )
        for key, value, host in _sender_settings(config)
        if _init_placeholder(config, key, host)
    ]
    if found:
        raise ConfigError(found)


def _where_set(config: Config, key: str) -> str:
    """Where a [newsletter] key's value comes from: its environment variable, else the file."""
    var = env_var("newsletter", key)
    return var if var in config.from_env else "newsletter.toml"


def _setting_problem(
    config: Config, lines: KeyLines, key: str, message: str, severity: Severity = Severity.ERROR
) -> Problem:
    """A problem with a [newsletter] value, located where it was set (file line or variable)."""
    var = _where_set(config, key)
    if var != "newsletter.toml":
        return Problem(None, message, field=var, severity=severity)
    field = f"newsletter.{key}"
    return Problem(config.path, message, field=field, line=lines.line(field), severity=severity)


def _config_lines(config: Config) -> KeyLines:
    from newsletter.tomlsource import load

    return load(config.path)[1]


def _derived_list_id(config: Config) -> Iterator[Problem]:
    """Tokens are bound to the list id: one derived from `from` changes when `from` does."""
    if config.newsletter.list_id:
        return
    derived = config.list_id
    yield Problem(
        config.path,
        f"not set, so it is derived from `from` ({derived}): changing `from` would break the "
        f'unsubscribe link of every message sent. Set list_id = "{derived}" now',
        field="newsletter.list_id",
        line=_config_lines(config).line("newsletter.list_id"),
        severity=Severity.WARNING,
    )


def _output(issue: Issue, rendered: Rendered, html: str) -> Iterator[Problem]:
    size = len(html.encode())
    where = "rendered HTML"
    if size > GMAIL_CLIP:
        yield Problem(
            issue.path,
            f"{where} is {size:,} bytes: Gmail clips messages over "
            f"{GMAIL_CLIP:,} bytes and hides the footer",
            field=where,
        )
    elif size > SIZE_WARNING:
        yield Problem(
            issue.path,
            f"{where} is {size:,} bytes, close to Gmail's {GMAIL_CLIP:,}-byte clipping",
            field=where,
            severity=Severity.WARNING,
        )
    if "<mj-" in html:
        tag = html[html.index("<mj-") :].split(">")[0][:40]
        yield Problem(
            issue.path,
            f"MJML tag left in the output: {tag}> (misspelt or unknown to MJML)",
            field=where,
        )
    unsubscribe = Field("unsubscribe_url", source="message")
    if unsubscribe not in rendered.html or unsubscribe not in rendered.text:
        part = "base.mjml.j2" if unsubscribe not in rendered.html else "base.txt.j2"
        yield Problem(
            issue.path,
            f"no unsubscribe link: the footer template ({part}) must use {{{{ unsubscribe_url }}}}",
            field="templates",
        )
    for field in sorted(rendered.fields(), key=lambda f: f.name):
        if field.source == "subscriber" and field.default is None and field.name != "email":
            yield Problem(
                issue.path,
                f"merge field subscriber.{field.name} has no default: "
                f'add | default("...") for subscribers without it',
                field="merge fields",
                severity=Severity.WARNING,
            )


def _image_widths(issue: Issue, lines: KeyLines, html: str, config: Config) -> Iterator[Problem]:
    """An image wider than the column it sits in: browsers shrink it, Outlook does not (it
    takes the width attribute), so the page overflows there. The column is measured in the
    rendered HTML, so it follows the templates (body width, columns, padding)."""
    columns = image_columns(html)
    logo = config.newsletter.logo
    if logo and columns.get(logo):
        box = columns[logo].pop(0)
        if config.newsletter.logo_width > box:
            yield _too_wide(
                config.path, "newsletter.logo_width", None, config.newsletter.logo_width, box
            )
    for where, image in nodes(issue):
        if isinstance(image, Image) and columns.get(image.src):
            box = columns[image.src].pop(0)
            if image.width > box:
                path = f"{where}.width"
                yield _too_wide(issue.path, path, lines.line(path), image.width, box)


def _too_wide(path: Path, where: str, line: int | None, width: int, box: int) -> Problem:
    return Problem(
        path,
        f"{width} px is wider than the content column ({box} px): mail apps that take the "
        f"width as written (Outlook) overflow the page; use {box} or less",
        field=where,
        line=line,
        severity=Severity.WARNING,
    )


def image_columns(html: str) -> dict[str, list[int]]:
    """src -> the width (CSS px) of the column each image with that src sits in, in order
    (images with a width attribute: those the templates place, not those inside Markdown)."""
    parser = _Columns()
    parser.feed(html)
    parser.close()
    return parser.found


_VOID = {"img", "br", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
_PADDING = re.compile(r"padding(-left|-right)?\s*:\s*([^;]+)")
_SECTION = re.compile(r"max-width\s*:\s*(\d+(?:\.\d+)?)px")
_COLUMN = re.compile(r"mj-column-(per|px)-(\d+)(?:-(\d+))?")


class _Columns(HTMLParser):
    """Walks MJML's output keeping the open elements, to measure each image's column: the
    section's width (max-width), less its padding, times the column's share (its class),
    less the padding inside the column."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, dict[str, str]]] = []
        self.found: dict[str, list[int]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "img" and "width" in found:  # MJML's images; Markdown's have no width
            self.found.setdefault(found.get("src", ""), []).append(self.column())
        elif tag not in _VOID:
            self.open.append((tag, found))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                return

    def column(self) -> int:
        width, outer, inner, share = 600.0, 0.0, 0.0, None  # 600: MJML's default body width
        for _tag, attrs in self.open:
            style, classes = attrs.get("style", ""), attrs.get("class", "")
            if section := _SECTION.search(style):
                width, outer, inner, share = float(section.group(1)), 0.0, 0.0, None
                continue
            if column := _COLUMN.search(classes):
                share = _share(column, width - outer)
            if share is None:
                outer += _horizontal_padding(style)
            else:
                inner += _horizontal_padding(style)
        return int((width - outer if share is None else share) - inner)


def _share(column: re.Match[str], room: float) -> float:
    kind, whole, fraction = column.groups()
    if kind == "px":
        return float(whole)
    return room * float(f"{whole}.{fraction or 0}") / 100


def _horizontal_padding(style: str) -> float:
    left = right = 0.0
    for side, value in _PADDING.findall(style):
        sizes = [_px(v) for v in value.split()]
        if side == "-left":
            left = sizes[0] if sizes else 0.0
        elif side == "-right":
            right = sizes[0] if sizes else 0.0
        elif sizes:
            right = sizes[1] if len(sizes) > 1 else sizes[0]
            left = sizes[3] if len(sizes) > 3 else right
    return left + right


def _px(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(px)?", value.strip().removesuffix("!important").strip())
    return float(match.group(1)) if match else 0.0


@dataclasses.dataclass(frozen=True)
class CheckResult:
    path: Path
    problems: list[Problem]
    rendered: Rendered | None  # None when the issue could not be read or rendered

    @property
    def ok(self) -> bool:
        return not errors(self.problems)


def check_issue(path: Path, config: Config) -> CheckResult:
    """Read, render and lint `path`; every problem found, none raised.

    A problem in reading does not hide the rest: the parts that could be read are linted too
    (what was not read is left blank; findings about those blanks are dropped)."""
    from newsletter.errors import InvalidInput
    from newsletter.issue import read_partial
    from newsletter.render import render

    try:
        issue, lines, read = read_partial(path)
    except InvalidInput as exc:
        return CheckResult(path, exc.problems, None)
    if read:
        return CheckResult(path, read + _beside(read, source_findings(issue, lines, config)), None)
    try:
        rendered = render(issue, config)
    except InvalidInput as exc:
        found = lines.locate(exc.problems, path)
        return CheckResult(
            path, found + _beside(found, source_findings(issue, lines, config)), None
        )
    return CheckResult(path, lint(issue, lines, rendered, config), rendered)


def _beside(reported: list[Problem], found: list[Problem]) -> list[Problem]:
    """`found` without the findings at or under a place already reported (one message each)."""
    places = {(p.path, p.field) for p in reported if p.field}

    def under(p: Problem) -> bool:
        return any(
            p.path == path and (p.field == f or p.field.startswith((f + ".", f + "[")))
            for path, f in places
        )

    return [p for p in found if not under(p)]

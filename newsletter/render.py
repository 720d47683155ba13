"""Issue -> Rendered: Jinja2 -> MJML (mjml-python) -> HTML -> css-inline, and a plain-text twin.

Rendering runs once per issue. Merge fields (`{{ subscriber.name | default("reader") }}`) and
`unsubscribe_url` render as markers: short runs of letters and digits that Markdown, MJML and
css-inline all pass through untouched (mergefields.py makes them, and renders the issue's own
text). The result is split at the markers into a Template of literal chunks and open Fields,
which the message stage fills per recipient without rendering again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from newsletter import mdtext
from newsletter.config import Config
from newsletter.errors import InvalidInput, NewsletterError, Problem, TooDeep
from newsletter.issue import read_issue
from newsletter.markup import MAX_DEPTH, MAX_LINE, nesting_depth, wrap_lines
from newsletter.mergefields import (
    MARKER,
    FieldTable,
    SubscriberFields,
    default_filter,
    fill_content,
)
from newsletter.models import Event, Field, Issue, Rendered, Subscriber, Template, walk

FIELD_ROOM = 200  # octets kept free on an HTML line for merge-field values (unsubscribe URLs)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MARKER_BYTES = re.compile(MARKER.pattern.encode())
_INLINE_CSS = """
p { margin: 0 0 12px; }
a { color: %(accent)s; text-decoration: underline; }
ul, ol { margin: 0 0 12px; padding-left: 22px; }
li { margin: 0 0 6px; }
h3 { font-size: 18px; margin: 12px 0 4px; }
blockquote { margin: 0 0 12px; padding-left: 12px; border-left: 3px solid #cccccc; }
"""
# The words the templates add to an event, per language (`[newsletter] language`, its first part);
# a language not listed gets English.
WORDS = {
    "en": {"book": "Book your place", "deadline": "Deadline", "online": "Online"},
    "de": {"book": "Platz reservieren", "deadline": "Frist", "online": "Online"},
    "es": {"book": "Reserve su plaza", "deadline": "Fecha límite", "online": "En línea"},
    "fr": {"book": "Réservez votre place", "deadline": "Date limite", "online": "En ligne"},
    "it": {"book": "Prenota il tuo posto", "deadline": "Scadenza", "online": "Online"},
    "nl": {"book": "Reserveer uw plaats", "deadline": "Deadline", "online": "Online"},
    "pl": {"book": "Zarezerwuj miejsce", "deadline": "Termin", "online": "Online"},
    "pt": {"book": "Reserve o seu lugar", "deadline": "Prazo", "online": "Online"},
}


def render_issue(path: Path, config: Config) -> Rendered:
    issue, lines = read_issue(path)
    try:
        return render(issue, config)
    except InvalidInput as exc:
        raise InvalidInput(lines.locate(exc.problems, path)) from None


def render(issue: Issue, config: Config) -> Rendered:
    fields = FieldTable()
    content = content_digest(issue)
    issue = fill_content(issue, fields)
    html = render_html(issue, config, fields)
    text = render_text(issue, config, fields)
    parts = (
        fields.split(issue.subject),
        fields.split(issue.preheader),
        fields.split(html),
        fields.split(text),
    )
    return Rendered(issue.slug, *parts, digest=_digest(parts), content=content, draft=issue.draft)


def render_html(issue: Issue, config: Config, fields: FieldTable) -> str:
    try:
        source = _template(config, "base.mjml.j2", _context(issue, config, fields))
    except TooDeep as exc:
        raise InvalidInput([_too_deep(issue, config, exc)]) from None
    html = _inline(_mjml(source, issue, config), config)
    # a value past 998 would cost base64; what a marker becomes is unknown here
    return wrap_lines(html, MAX_LINE - FIELD_ROOM, opaque=_MARKER_BYTES)


def render_text(issue: Issue, config: Config, fields: FieldTable) -> str:
    links = _Links()
    context = {**_context(issue, config, fields), "ref": links.ref, "links": links.numbered}
    context["see"] = links.see
    text = _template(config, "base.txt.j2", context)
    text = mdtext.no_leading_dash(re.sub(r"[ \t]+\n", "\n", text))
    return re.sub(r"\n{3,}", "\n\n", text).lstrip("\n").rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Merge fields filled for a preview (the message stage fills them per recipient)


def fill(template: Template, value: Callable[[Field], str], *, html: bool) -> str:
    """Fill every Field of `template` (HTML-escaped when `html`): previews and the archive."""
    out = []
    for part in template:
        if isinstance(part, Field):
            filled = value(part)
            out.append(str(Markup.escape(filled)) if html else filled)
        else:
            out.append(part)
    return "".join(out)


def preview_value(base_url: str, subscriber: Subscriber | None = None) -> Callable[[Field], str]:
    """Values for a preview: `subscriber`'s (as a message to them has them: the column unless
    missing or blank, else the default), else a field's default; and an unsubscribe link that
    unsubscribes no one."""

    def value(field: Field) -> str:
        if field.source == "message":
            return f"{base_url}/unsubscribe/preview" if field.name == "unsubscribe_url" else ""
        own = _column(subscriber, field.name) if subscriber is not None else ""
        return own if own and not own.isspace() else field.default or ""

    return value


def _column(subscriber: Subscriber, name: str) -> str:
    """A merge field's column of a subscriber, named as message.py names it."""
    if name == "name":
        return subscriber.name
    return subscriber.email if name == "email" else subscriber.fields.get(name, "")


# ---------------------------------------------------------------------------------------------
# Templates


def _context(issue: Issue, config: Config, fields: FieldTable) -> dict[str, Any]:
    settings = config.newsletter
    base = settings.base_url
    social = [{"label": link.label, "url": link.url} for link in config.social_links]
    return {
        "issue": issue,
        "config": settings,
        "social": social,
        "social_header": social if settings.social_position in ("header", "both") else [],
        "social_footer": social if settings.social_position in ("footer", "both") else [],
        "subscriber": SubscriberFields(fields),
        "unsubscribe_url": fields.marker(Field("unsubscribe_url", source="message")),
        "web_url": f"{base}/{issue.slug}.html" if base and not issue.draft else "",
        "allow_html": issue.allow_html,
        "words": words(settings.language),
    }


def words(language: str) -> dict[str, str]:
    """The template's own words in `language` ('pt-BR' -> 'pt'), else in English."""
    return WORDS.get(language.split("-")[0].lower(), WORDS["en"])


def _template(config: Config, name: str, context: dict[str, Any]) -> str:
    env = _environment(tuple(config.template_dirs()))
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidInput(
            [
                Problem(
                    _template_path(env, exc.name),
                    f"template syntax error: {exc.message}",
                    line=exc.lineno,
                )
            ]
        ) from None
    except NewsletterError:
        raise  # from a filter (Markdown nested too deep): the caller says where
    except jinja2.TemplateNotFound as exc:
        raise InvalidInput.one(
            None,
            f"template not found: {exc.name} (looked in "
            f"{', '.join(map(str, config.template_dirs()))})",
        ) from None
    except Exception as exc:  # user-editable templates: any error there is the user's to fix
        path, line = _template_frame(exc)
        if path is None:
            raise
        raise InvalidInput([Problem(path, f"template error: {exc}", line=line)]) from None


def _template_path(env: jinja2.Environment, name: str | None) -> Path | None:
    if name is None:
        return None
    source = env.loader.get_source(env, name) if env.loader else None
    return Path(source[1]) if source and source[1] else Path(name)


def _template_frame(exc: BaseException) -> tuple[Path | None, int | None]:
    """The innermost template frame of a Jinja runtime error (Jinja rewrites tracebacks)."""
    found: tuple[Path | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(".j2"):
            found = (Path(frame.filename), frame.lineno)
    return found


@functools.cache
def _environment(dirs: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2", "html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        default=default_filter,
        d=default_filter,
        longdate=longdate,
        event_times=event_times,
        markdown=_markdown,
        md_inline=_md_inline,
        md_text=_md_text,
        md_inline_text=_md_inline_text,
        underline=_underline,
        wrap=mdtext.wrap,
        ascii_refs=ascii_refs,
    )
    env.globals["bullet"] = lambda text: mdtext.wrap(str(text), mdtext.WIDTH, mdtext.BULLET, "  ")
    return env


def ascii_refs(value: object) -> Markup:
    """Escaped text in ASCII, other characters as numeric references. MJML copies <mj-title>
    into the page's aria-label with Rust's debug escapes: a no-break space or a joiner in a
    title reached screen readers as `\\u{a0}`; references pass through it as written."""
    text = str(Markup.escape(value))
    return Markup("".join(c if c.isascii() else f"&#x{ord(c):X};" for c in text))  # noqa: S704  # escaped just above


@jinja2.pass_context
def _markdown(context: jinja2.runtime.Context, source: str) -> Markup:
    return Markup(mdtext.to_html(str(source), allow_html=bool(context.get("allow_html"))))  # noqa: S704  # markdown-it escapes unless the author allowed HTML


@jinja2.pass_context
def _md_inline(context: jinja2.runtime.Context, source: str) -> Markup:
    return Markup(mdtext.to_html_inline(str(source), allow_html=bool(context.get("allow_html"))))  # noqa: S704  # as above


@jinja2.pass_context
def _md_text(context: jinja2.runtime.Context, source: str) -> str:
    return mdtext.to_text(str(source), context["ref"])


@jinja2.pass_context
def _md_inline_text(context: jinja2.runtime.Context, source: str) -> str:
    return mdtext.inline_to_text(str(source), context["ref"])


def _underline(heading: str, rule: str = "-") -> str:
    heading = mdtext.wrap(str(heading))
    width = max(len(line) for line in heading.splitlines()) if heading else 0
    return f"{heading}\n{rule * width}"


class _Links:
    """Numbers link targets for the text part; the same URL keeps its number."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def ref(self, url: str) -> int:
        if url not in self.urls:
            self.urls.append(url)
        return self.urls.index(url) + 1

    def see(self, url: str) -> str:
        """' [n]' after a link's text; nothing for a link within the issue (`#id`)."""
        return "" if url.startswith("#") else f" [{self.ref(url)}]"

    def numbered(self) -> list[tuple[int, str]]:
        return [(n, url) for n, url in enumerate(self.urls, 1)]


def longdate(day: dt.date) -> str:
    """6 October 2021, whatever the machine's locale."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def event_times(event: Event) -> str:
    """The start time in each of the event's time zones: 09:30 BST / 10:30 CEST ('' without)."""
    if event.start is None or not event.timezones:
        return ""
    start = dt.datetime.combine(event.date, event.start, tzinfo=ZoneInfo(event.timezones[0]))
    shown = []
    for name in event.timezones:
        local = start.astimezone(ZoneInfo(name))
        day = "" if local.date() == event.date else f" ({longdate(local.date())})"
        shown.append(f"{local:%H:%M} {local.tzname()}{day}")
    return " / ".join(shown)


# ---------------------------------------------------------------------------------------------
# MJML, CSS inlining, line length


def _too_deep(issue: Issue, config: Config, exc: TooDeep) -> Problem:
    """Name the issue field (or the config's footer) whose Markdown nests too deep."""
    where = next((w for w, _name, text in walk(issue) if text == exc.source), None)
    path = issue.path
    if where is None and config.newsletter.footer == exc.source:
        path, where = config.path, "newsletter.footer"
    if where is None:  # a value a template made itself
        return Problem(config.template_dirs()[0], f"a value given to a Markdown filter: {exc}")
    return Problem(path, str(exc), field=where, line=_key_line(path, where))


def _key_line(path: Path, where: str) -> int | None:
    from newsletter.tomlsource import KeyLines

    try:
        return KeyLines(path.read_text(encoding="utf-8")).line(where)
    except (OSError, UnicodeDecodeError):
        return None


def _mjml(source: str, issue: Issue, config: Config) -> str:
    from mjml import mjml2html

    depth = nesting_depth(source)
    if depth > 2 * MAX_DEPTH:  # values are bounded on their own: only templates get here
        raise InvalidInput.one(
            config.template_dirs()[0],
            f"the templates make MJML nested {depth} levels deep (the limit is {2 * MAX_DEPTH})",
        )

    try:
        return str(mjml2html(source, disable_comments=True))
    except ValueError as exc:
        raise InvalidInput(
            [Problem(issue.path, f"MJML error: {exc}", field=_mjml_origin(source, str(exc)))]
        ) from None


def _mjml_origin(source: str, message: str) -> str:
    """Which block an MJML error came from: the last block marker before its byte offset."""
    match = re.search(r"position (\d+)", message)
    if match is None:
        return "templates (no position given by MJML)"
    before = source.encode()[: int(match.group(1))].decode(errors="ignore")
    blocks = re.findall(r"<!-- block (\d+) -->", before)
    if "<!-- footer -->" in before:
        return "footer (templates/base.mjml.j2)"
    return f"blocks[{blocks[-1]}]" if blocks else "templates/base.mjml.j2"


def _inline(html: str, config: Config) -> str:
    import css_inline

    css = _INLINE_CSS % {"accent": config.newsletter.accent_colour}
    inliner = css_inline.CSSInliner(
        inline_style_tags=False,  # keep MJML's <style> blocks: its media queries need !important
        keep_style_tags=True,
        keep_link_tags=True,
        load_remote_stylesheets=False,  # never any network access
        extra_css=css,
    )
    return str(inliner.inline(html))


def content_digest(issue: Issue) -> str:
    """The same issue under another file name or slug has the same digest (the rendered one
    differs: the archive link carries the slug); a send uses it to find earlier sends. `publish`
    is left out: it says where the issue appears, not what it says. Fields at their default
    are left out too, so a version that adds an optional key (a block `id`) does not make every
    issue written before it a changed issue."""
    anonymous = dataclasses.replace(issue, path=Path(), slug="", publish=False)
    text = json.dumps(canonical(anonymous), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(value: Any) -> Any:
    """`value` as JSON data: a dataclass as its type and its fields not at their default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        found: dict[str, Any] = {"": type(value).__name__}
        for fld in dataclasses.fields(value):
            item = getattr(value, fld.name)
            if not _at_default(fld, item):
                found[fld.name] = canonical(item)
        return found
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(key): canonical(item) for key, item in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # dates, times, paths, zones: their text is their identity


def _at_default(fld: dataclasses.Field[Any], value: Any) -> bool:
    if fld.default is not dataclasses.MISSING:
        return bool(value == fld.default)
    if fld.default_factory is not dataclasses.MISSING:
        return bool(value == fld.default_factory())
    return False


def _digest(parts: tuple[Template, ...]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        for chunk in part:
            digest.update(repr(chunk).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def write_outputs(
    rendered: Rendered, config: Config, folder: Path, subscriber: Subscriber | None = None
) -> list[tuple[Path, int]]:
    """Write <slug>.html and <slug>.txt (filled as a preview, with `subscriber`'s merge fields
    when given) into `folder`, atomically."""
    from newsletter.fileio import PUBLIC_FILE, atomic_write

    value = preview_value(config.newsletter.base_url, subscriber)
    outputs = [
        (folder / f"{rendered.slug}.html", fill(rendered.html, value, html=True)),
        (folder / f"{rendered.slug}.txt", fill(rendered.text, value, html=False)),
    ]
    written = []
    for path, text in outputs:
        data = text.encode()
        atomic_write(path, functools.partial(_write, data), mode=PUBLIC_FILE)
        written.append((path, len(data)))
    return written


def _write(data: bytes, handle: IO[bytes]) -> None:
    handle.write(data)

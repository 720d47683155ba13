"""Merge fields at render time: the markers that stand for them, and issue text that writes them.

A merge field (`{{ subscriber.name | default("reader") }}`, `unsubscribe_url`) renders as a
marker, a short run of letters and digits that Markdown, MJML and css-inline all pass through
untouched; `FieldTable.split` turns marked text back into a Template of literal chunks and open
Fields. Issue text (the author's strings in the TOML) is itself a template, rendered once in a
sandbox that allows merge fields, defaults and simple conditions, and nothing else.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2.filters import do_default

from newsletter.errors import InvalidInput, Problem
from newsletter.models import Field, Issue, Template

MARKER = re.compile(r"zzNLMF(\d{4})zz")


class FieldTable:
    """Hands out one marker per distinct Field and turns marked text back into a Template."""

    def __init__(self) -> None:
        self.fields: list[Field] = []

    def marker(self, field: Field) -> Marker:
        if field not in self.fields:
            self.fields.append(field)
        return Marker(f"zzNLMF{self.fields.index(field):04d}zz", field, self)

    def split(self, text: str) -> Template:
        parts: list[str | Field] = []
        for n, piece in enumerate(MARKER.split(text)):
            if n % 2:
                parts.append(self.fields[int(piece)])
            elif piece:
                parts.append(piece)
        return tuple(parts)


class Marker(str):
    """A merge field's marker; `default(...)` on it records the default instead of applying it."""

    field: Field
    table: FieldTable

    def __new__(cls, text: str, field: Field, table: FieldTable) -> Marker:
        obj = super().__new__(cls, text)
        obj.field, obj.table = field, table
        return obj

    def __html__(self) -> str:
        return str(self)


class SubscriberFields:
    """`subscriber` in templates and content: any attribute is a merge field."""

    def __init__(self, table: FieldTable) -> None:
        self._table = table

    def __getattr__(self, name: str) -> Marker:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._table.marker(Field(name))

    __getitem__ = __getattr__


def default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`; on a marker it records the default on the field, applied per reader."""
    if isinstance(value, Marker):
        field = dataclasses.replace(value.field, default=str(default_value))
        return value.table.marker(field)
    return do_default(value, default_value, boolean)


# ---------------------------------------------------------------------------------------------
# Issue text: Jinja in the author's strings (merge fields), with errors located by field


def fill_content(issue: Issue, fields: FieldTable) -> Issue:
    """`issue` with each string rendered as issue text; InvalidInput names each field that fails."""
    problems: list[Problem] = []
    env = _content_env()
    context = {"subscriber": SubscriberFields(fields)}

    def visit(value: Any, where: str) -> Any:
        if isinstance(value, str):
            return _content_string(env, value, context, issue.path, where, problems)
        if isinstance(value, tuple):
            return tuple(visit(v, f"{where}[{i}]") for i, v in enumerate(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: visit(getattr(value, f.name), _join(where, f.name))
                for f in dataclasses.fields(value)
                if f.name not in ("path", "kind")
            }
            return dataclasses.replace(value, **changes)
        return value

    filled = visit(issue, "")
    if problems:
        raise InvalidInput(problems)
    return filled  # type: ignore[no-any-return]  # visit returns an Issue for an Issue


def _content_string(
    env: jinja2.Environment,
    text: str,
    context: dict[str, Any],
    path: Path,
    where: str,
    problems: list[Problem],
) -> str:
    if "{{" not in text and "{%" not in text:
        return text
    try:
        tree = env.parse(text)
        _allowed_in_content(tree)
        return env.from_string(tree).render(context)
    except jinja2.TemplateError as exc:
        problems.append(Problem(path, f"template error: {exc}", field=where))
    except RecursionError:
        problems.append(Problem(path, "template error: nested too deeply", field=where))
    return text


# Issue text is a template written by people and rendered once, with markers for the merge
# fields: it needs output, merge fields with defaults and simple conditions, nothing that
# loops, calls or reaches other templates. Allowing only these keeps rendering time linear in
# the text (`range(10**5)` nested twice, `"x" * 10**9` or `{% include %}` cannot run).
_CONTENT_NODES = (
    jinja2.nodes.Template,
    jinja2.nodes.Output,
    jinja2.nodes.TemplateData,
    jinja2.nodes.Const,
    jinja2.nodes.Name,
    jinja2.nodes.Getattr,
    jinja2.nodes.Getitem,
    jinja2.nodes.Keyword,
    jinja2.nodes.Filter,
    jinja2.nodes.If,
    jinja2.nodes.CondExpr,
    jinja2.nodes.Not,
    jinja2.nodes.And,
    jinja2.nodes.Or,
    jinja2.nodes.Compare,
    jinja2.nodes.Operand,
    jinja2.nodes.Test,
    jinja2.nodes.Concat,
)
_CONTENT_FILTERS = frozenset({"default", "d"})
_TAG_NAMES = {
    "FromImport": "import",
    "CallBlock": "call",
    "Assign": "set",
    "AssignBlock": "set",
    "FilterBlock": "filter",
    "Scope": "autoescape",
    "ScopedEvalContextModifier": "autoescape",
}
_HOW = (
    'issue text, which takes merge fields such as {{ subscriber.name | default("reader") }}'
    " and {% if %}; to show braces as written, put them in {% raw %}...{% endraw %}"
)


def _allowed_in_content(tree: jinja2.nodes.Template) -> None:
    """Raise a SecurityError naming the first construct issue text may not use."""
    queue: collections.deque[tuple[jinja2.nodes.Node, int]] = collections.deque([(tree, 1)])
    while queue:  # a loop, not recursion: the tree may be deep; outer constructs first
        node, line = queue.popleft()
        line = node.lineno or line  # some wrapper nodes carry no line of their own
        if not isinstance(node, _CONTENT_NODES) or (
            isinstance(node, jinja2.nodes.Filter) and node.name not in _CONTENT_FILTERS
        ):
            raise jinja2.exceptions.SecurityError(
                f"{_construct(node)} (line {line} of the text) is not allowed in {_HOW}"
            )
        if isinstance(node, jinja2.nodes.If | jinja2.nodes.CondExpr):
            _constant_condition(node, line)
        if isinstance(node, jinja2.nodes.Name | jinja2.nodes.Getattr | jinja2.nodes.Getitem):
            _merge_field(node, line)
            continue  # a merge field: nothing inside it to check
        queue.extend((child, line) for child in node.iter_child_nodes())


def _constant_condition(node: jinja2.nodes.If | jinja2.nodes.CondExpr, line: int) -> None:
    """A condition may not test a merge field: the text is rendered once, before any reader is
    known, so it would be decided once for everyone (a marker is never empty)."""
    if node.test is None or not any(
        name.name == "subscriber" for name in node.test.find_all(jinja2.nodes.Name)
    ):
        return
    raise jinja2.exceptions.SecurityError(
        f"a condition on a merge field (line {line} of the text) would be decided once for "
        "every reader, not per reader: issue text is rendered before any reader is known; give "
        'the field a default instead, such as {{ subscriber.name | default("reader") }}'
    )


def _merge_field(node: jinja2.nodes.Expr, line: int) -> None:
    """Names in issue text are merge fields, `subscriber.x` or `subscriber["x"]`, and nothing
    else: not Jinja's own names (`self`), nor items or attributes of a field's value."""
    inner = getattr(node, "node", None)
    key = node.attr if isinstance(node, jinja2.nodes.Getattr) else None
    if isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
        key = node.arg.value if isinstance(node.arg.value, str) else None
    is_subscriber = isinstance(inner, jinja2.nodes.Name) and inner.name == "subscriber"
    if is_subscriber and isinstance(key, str) and not key.startswith("_"):
        return
    root = node
    while isinstance(root, jinja2.nodes.Getattr | jinja2.nodes.Getitem):
        root = root.node
    if isinstance(root, jinja2.nodes.Name) and root.name != "subscriber":  # a typo, or `self`
        raise jinja2.exceptions.UndefinedError(f"{root.name!r} is undefined")
    raise jinja2.exceptions.SecurityError(
        f"{_expression(node)} (line {line} of the text) is not a merge field: {_HOW}"
    )


def _expression(node: jinja2.nodes.Node) -> str:
    """`subscriber.name.upper`, `subscriber[0]`, `'self'`: the name as the author wrote it."""
    if isinstance(node, jinja2.nodes.Name):
        return repr(node.name)
    if isinstance(node, jinja2.nodes.Getattr):
        return f"{_expression(node.node).strip(chr(39))}.{node.attr}"
    if isinstance(node, jinja2.nodes.Getitem):
        arg = node.arg.value if isinstance(node.arg, jinja2.nodes.Const) else "..."
        return f"{_expression(node.node).strip(chr(39))}[{arg!r}]"
    return f"the expression {type(node).__name__!r}"


def _construct(node: jinja2.nodes.Node) -> str:
    kind = type(node).__name__
    if isinstance(node, jinja2.nodes.Filter):
        return f"the filter {node.name!r}"
    if isinstance(node, jinja2.nodes.Call):
        return "a function call such as range(...)"
    if isinstance(node, jinja2.nodes.Stmt):
        return f"{{% {_TAG_NAMES.get(kind, kind.lower())} %}}"
    return f"the operation {kind!r}"


class _NoTemplates(jinja2.BaseLoader):
    """Issue text may not include, import or extend templates (checked before rendering too)."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        raise jinja2.exceptions.SecurityError(f"issue text cannot load templates ({template!r})")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


@functools.cache
def _content_env() -> jinja2.Environment:
    env = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, loader=_NoTemplates()
    )
    env.filters["default"] = env.filters["d"] = default_filter
    env.globals.clear()  # no range, lipsum, cycler...: only the context's `subscriber`
    return env

"""newsletter.toml and the environment -> Config: find the file, read each declared key from
TOML or its environment variable, check it, and report every problem with where it came from.

`[newsletter] key` is overridden by NEWSLETTER_<KEY>, `[smtp] key` by NEWSLETTER_SMTP_<KEY>,
`[store] url` by NEWSLETTER_STORE_URL.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from newsletter.config.credentials import PASSWORD_ENV
from newsletter.config.settings import (
    Config,
    Settings,
    SignupSettings,
    SmtpSettings,
    StoreSettings,
)
from newsletter.errors import ConfigError, Problem
from newsletter.tomlsource import KeyLines, load, unknown_key

CONFIG_NAME = "newsletter.toml"
SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("newsletter", Settings),
    ("smtp", SmtpSettings),
    ("signup", SignupSettings),
    ("store", StoreSettings),
)

_T = TypeVar("_T")


def find_config(start: Path, explicit: Path | None = None, near: Path | None = None) -> Path:
    """`explicit` (a file, or a folder holding one); else the nearest newsletter.toml in
    `start` or its parents; else, when `near` (an issue file) is given, in its folder or
    their parents: an issue is checked with its own newsletter from anywhere."""
    if explicit is not None:
        path = explicit / CONFIG_NAME if explicit.is_dir() else explicit
        if not path.is_file():
            raise ConfigError.one(path, "no such file")
        return path
    starts = [start.resolve()] + ([near.resolve().parent] if near is not None else [])
    for first in starts:
        for folder in (first, *first.parents):
            if (folder / CONFIG_NAME).is_file():
                return folder / CONFIG_NAME
    places = " or its parents, nor in ".join(str(s) for s in starts)
    raise ConfigError.one(
        None,
        f"no {CONFIG_NAME} in {places} or its parents: run `newsletter init DIR`, "
        "or pass --config PATH",
    )


def load_config(
    start: Path | None = None,
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    path = find_config(start or Path.cwd(), explicit)
    data, lines = load(path)
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    for name in data:
        if name not in dict(SECTIONS):
            message = unknown_key(name, dict(SECTIONS)).replace("key", "table or key", 1)
            problems.append(_problem(path, lines, name, message))
    problems.extend(_store_password(data, path, lines))
    if "password" in data.get("smtp", {}):
        problems.append(
            _problem(
                path,
                lines,
                "smtp.password",
                f"a password does not belong in a file: set {PASSWORD_ENV} instead",
            )
        )
    settings = _section(Settings, "newsletter", data, env, path, lines, problems)
    smtp = _section(SmtpSettings, "smtp", data, env, path, lines, problems)
    signup = _section(SignupSettings, "signup", data, env, path, lines, problems)
    store = _section(StoreSettings, "store", data, env, path, lines, problems)
    problems.extend(_reserved(settings, env, path, lines))
    reported = {p.field for p in problems}  # a key given but refused is not also "missing"
    if not settings.name and not reported & {"newsletter.name", env_var("newsletter", "name")}:
        problems.append(_problem(path, lines, "newsletter.name", "missing (the newsletter's name)"))
    if not settings.from_ and not reported & {"newsletter.from", env_var("newsletter", "from")}:
        problems.append(_problem(path, lines, "newsletter.from", "missing (the sender address)"))
    if problems:
        raise ConfigError(problems)
    declared = {
        env_var(section, _toml_name(fld))
        for section, cls in SECTIONS
        for fld in dataclasses.fields(cls)
    }
    from_env = frozenset(declared & env.keys())
    return Config(
        root=path.parent,
        path=path,
        newsletter=settings,
        smtp=smtp,
        signup=signup,
        store=store,
        from_env=from_env,
    )


def _store_password(data: dict[str, Any], path: Path, lines: KeyLines) -> list[Problem]:
    """A password in the file's [store] url: refused, as [smtp] password is (the file is
    committed); the environment's URL, PGPASSWORD or ~/.pgpass may hold it."""
    from newsletter.urls import has_password

    url = data.get("store", {}).get("url") if isinstance(data.get("store"), dict) else None
    if not isinstance(url, str) or not has_password(url):
        return []
    message = (
        "a password does not belong in a file: set it in NEWSLETTER_STORE_URL, PGPASSWORD or "
        "~/.pgpass instead"
    )
    return [_problem(path, lines, "store.url", message)]


def _section(
    cls: type[_T],
    section: str,
    data: dict[str, Any],
    env: Mapping[str, str],
    path: Path,
    lines: KeyLines,
    problems: list[Problem],
) -> _T:
    table = data.get(section, {})
    if not isinstance(table, dict):
        problems.append(_problem(path, lines, section, "must be a table"))
        table = {}
    known = {_toml_name(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    for name in table:
        if name not in known and not (section == "smtp" and name == "password"):
            message = unknown_key(name, known)
            problems.append(_problem(path, lines, f"{section}.{name}", message))
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, fld in known.items():
        where = f"{section}.{name}"
        var = env_var(section, name)
        if _item_class(hints[fld.name]) is not None:
            tables = _tables(
                hints[fld.name], table.get(name), where, var in env, path, lines, known
            )
            problems += tables[1]
            values.update({fld.name: tables[0]} if name in table and not tables[1] else {})
            continue
        if var in env:
            value, problem = _from_env(env[var], hints[fld.name])
            where = var
        elif name in table:
            value, problem = _coerce(table[name], hints[fld.name])
        else:
            continue
        check = fld.metadata["check"]
        problem = problem or (check(value) if check is not None else None)
        if problem:
            location = (
                Problem(None, problem, field=var)
                if where == var
                else _problem(path, lines, where, problem)
            )
            problems.append(location)
        else:
            values[fld.name] = value
    return cls(**values)


def _item_class(hint: Any) -> Any:
    """The table class of an array of tables (`tuple[SocialLink, ...]`), else None."""
    args = get_args(hint)
    return args[0] if get_origin(hint) is tuple and dataclasses.is_dataclass(args[0]) else None


def _tables(
    hint: Any,
    value: Any,
    where: str,
    in_env: bool,
    path: Path,
    lines: KeyLines,
    outer: Collection[str] = (),
) -> tuple[tuple[Any, ...], list[Problem]]:
    """An array of tables such as [[newsletter.social]]: each read and checked like a section,
    every key required. Not settable from the environment: one variable cannot say it plainly."""
    problems: list[Problem] = []
    if in_env:
        message = f"cannot be set from the environment: write {where} in {CONFIG_NAME}"
        problems.append(Problem(None, message, field=env_var(*where.split(".", 1))))
    if value is None:
        return (), problems
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(_problem(path, lines, where, f"must be an array of tables ([[{where}]])"))
        return (), problems
    cls, items = _item_class(hint), []
    own = {_toml_name(f) for f in dataclasses.fields(cls)}
    for i, table in enumerate(value):
        item_where, found = f"{where}[{i}]", len(problems)
        astray = [k for k in table if k in outer and k not in own]  # TOML put them in the table
        for name in astray:
            section = where.rpartition(".")[0]
            message = (
                f"a [{section}] key, read here as a key of this [[{where}]] table: write it above "
                f"the first [[{where}]]"
            )
            problems.append(_problem(path, lines, f"{item_where}.{name}", message))
        table = {k: v for k, v in table.items() if k not in astray}
        item = _section(cls, item_where, {item_where: table}, {}, path, lines, problems)
        for fld in dataclasses.fields(cls):
            if not getattr(item, fld.name) and f"{item_where}.{fld.name}" not in {
                p.field for p in problems[found:]
            }:
                doc = str(fld.metadata["doc"]).rstrip(".")  # what the key holds, as missing
                message = f"missing: {doc[:1].lower()}{doc[1:]}"
                problems.append(_problem(path, lines, f"{item_where}.{fld.name}", message))
        items.append(item)
    return tuple(items), problems


_ADDRESS_KEYS = (
    "from_", "reply_to", "test_to", "unsubscribe_mailto", "envelope_from", "bounce_address",
)  # fmt: skip


def _reserved(
    settings: Settings, env: Mapping[str, str], path: Path, lines: KeyLines
) -> list[Problem]:
    """The address keys at a reserved name (news@x.test), unless allow_reserved_domains: the
    one rule of addresses.normalise_address, applied here because it needs two keys."""
    from newsletter.addresses import parse_mailbox
    from newsletter.errors import ReservedAddress

    if settings.allow_reserved_domains:
        return []
    problems = []
    for name in _ADDRESS_KEYS:
        value = getattr(settings, name)
        if not value:
            continue
        try:
            parse_mailbox(value)
        except ReservedAddress as exc:
            key = name.rstrip("_")
            var = env_var("newsletter", key)
            found = Problem(None, str(exc), field=var) if var in env else None
            problems.append(found or _problem(path, lines, f"newsletter.{key}", str(exc)))
    return problems


def _problem(path: Path, lines: KeyLines, field: str, message: str) -> Problem:
    return Problem(path, message, field=field, line=lines.line(field))


def _toml_name(fld: dataclasses.Field[Any]) -> str:
    return str(fld.metadata["toml"] or fld.name)


def env_var(section: str, name: str) -> str:
    if section == "newsletter":
        return f"NEWSLETTER_{name.upper()}"
    return f"NEWSLETTER_{section.upper()}_{name.upper()}"


def _base_type(hint: Any) -> Any:
    """`int | None` -> int; `tuple[float, ...]` -> tuple; others unchanged."""
    if isinstance(hint, types.UnionType):
        return next(a for a in get_args(hint) if a is not type(None))
    return get_origin(hint) or hint


def _coerce(value: Any, hint: Any) -> tuple[Any, str | None]:
    base = _base_type(hint)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value), None
    if base is tuple and _items(hint) is str:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return (tuple(value), None) if ok else (None, "must be a list of strings")
    if base is tuple:
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        return (tuple(float(v) for v in value), None) if ok else (None, "must be a list of numbers")
    if base is int and isinstance(value, bool):
        return None, "must be a whole number"
    if not isinstance(value, base):
        return None, f"must be {_type_word(base)}, not {type(value).__name__}"
    return value, None


def _from_env(raw: str, hint: Any) -> tuple[Any, str | None]:
    base = _base_type(hint)
    text = raw.strip()
    try:
        if base is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                return None, "must be true or false"
            return text.lower() in ("1", "true", "yes"), None
        if base is int:
            return int(text), None
        if base is float:
            return float(text), None
        if base is tuple and _items(hint) is str:
            return tuple(v.strip() for v in text.split(",") if v.strip()), None
        if base is tuple:
            return tuple(float(v) for v in text.split(",") if v.strip()), None
    except ValueError:
        return None, f"must be {_type_word(base)}, not {raw!r}"
    return raw, None


def _items(hint: Any) -> Any:
    """The item type of `tuple[X, ...]` (None for other hints)."""
    args = get_args(hint)
    return args[0] if get_origin(hint) is tuple and args else None


def _kind(hint: Any) -> str:
    """The type column of docs/configuration.md."""
    if _items(hint) is str:
        return "list of strings"
    return _type_word(_base_type(hint)).removeprefix("a ")


def _type_word(base: Any) -> str:
    words = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    return words.get(base, "a list of numbers")


def documented_keys() -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, environment variable, doc) for every key: docs/configuration.md."""
    rows = []
    for section, cls in SECTIONS:
        hints = get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            name = _toml_name(fld)
            default = fld.default
            tables = _item_class(hints[fld.name]) is not None  # not from the environment
            rows.append(
                (
                    f"[{section}] {name}",
                    "array of tables" if tables else _kind(hints[fld.name]),
                    "" if default in ("", None, ()) else repr(default),
                    "" if tables else env_var(section, name),
                    str(fld.metadata["doc"]),
                )
            )
    return rows

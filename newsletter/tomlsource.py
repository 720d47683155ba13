"""Read a TOML file with errors that say where: file:line:col, and the line of any key path.

tomllib gives values without positions, so `KeyLines` scans the source once to map a path such
as ``blocks[2].items[0].url`` to the line it was written on.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from newsletter.errors import InvalidInput, Problem

_TABLE = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r'^\s*([A-Za-z0-9_.\-"]+?)\s*=\s*(.*)$')
_INLINE_KEY = re.compile(r"([A-Za-z0-9_\-]+)\s*=")
_TOML_ERROR = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def load(path: Path) -> tuple[dict[str, Any], KeyLines]:
    """Parse `path`; raise InvalidInput with file:line:col on a syntax error."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not TOML
    except FileNotFoundError:
        raise InvalidInput.one(path, "no such file") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput.one(path, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInput.one(path, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput([_syntax_problem(path, str(exc))]) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        message = "invalid TOML: arrays or inline tables nested too deeply to read"
        raise InvalidInput([Problem(path, message, line=_deep_line(text))]) from None
    return data, KeyLines(text)


def unknown_key(key: str, known: Iterable[str]) -> str:
    """The message for an unknown key: with the nearest known one when a typo is likely
    (`accent_color` -> did you mean `accent_colour`?), in any case (`[SMTP]` -> `smtp`)."""
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1)
    return f"unknown key: did you mean `{by_lower[close[0]]}`?" if close else "unknown key"


def _deep_line(text: str, depth: int = 100) -> int | None:
    """The first line where brackets nest `depth` deep (a rough count: strings not skipped)."""
    level = 0
    for number, line in enumerate(text.splitlines(), 1):
        for char in line:
            level += (char in "[{") - (char in "]}")
            if level >= depth:
                return number
    return None


def _syntax_problem(path: Path, message: str) -> Problem:
    match = _TOML_ERROR.match(message)
    if match is None:
        return Problem(path, f"invalid TOML: {message}")
    text, line, column = match.groups()
    return Problem(path, f"invalid TOML: {text}", line=int(line), column=int(column))


class KeyLines:
    """Maps dotted key paths (with [i] for arrays of tables) to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self._scan(text.splitlines())

    def locate(self, problems: list[Problem], path: Path) -> list[Problem]:
        """`problems` with the line of their field filled in where `path` has none yet."""
        return [
            dataclasses.replace(p, line=self.line(p.field))
            if p.path == path and p.line is None and p.field
            else p
            for p in problems
        ]

    def line(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor that was found."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = _parent(path)
        return None

    def _scan(self, lines: list[str]) -> None:
        arrays: dict[str, int] = {}
        prefix = ""
        in_multiline = False
        open_array: str | None = None
        array_index = 0
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if in_multiline:
                in_multiline = not _toggles_multiline(line)  # an odd count of """ closes it
                continue
            if open_array is not None:
                if line.startswith("{"):
                    self._inline(f"{open_array}[{array_index}]", line, number)
                    array_index += 1
                if line.startswith("]"):
                    open_array = None
                continue
            if match := _ARRAY_TABLE.match(line):
                name = _resolve(match.group(1), arrays)
                arrays[name] = arrays.get(name, -1) + 1
                prefix = f"{name}[{arrays[name]}]"
                self._lines.setdefault(prefix, number)
            elif match := _TABLE.match(line):
                prefix = _resolve(match.group(1), arrays)
                self._lines.setdefault(prefix, number)
            elif match := _KEY.match(line):
                key = ".".join(k.strip().strip('"') for k in match.group(1).split("."))
                full = f"{prefix}.{key}" if prefix else key
                self._lines.setdefault(full, number)
                value = match.group(2).strip()
                if value.startswith("{"):
                    self._inline(full, value, number)
                if value.startswith("[") and not _closed(value):
                    open_array, array_index = full, 0
                in_multiline = _toggles_multiline(value)

    def _inline(self, path: str, text: str, number: int) -> None:
        self._lines.setdefault(path, number)
        for key in _INLINE_KEY.findall(text):
            self._lines.setdefault(f"{path}.{key}", number)


def _resolve(dotted: str, arrays: dict[str, int]) -> str:
    """The full path of a table header: enclosing arrays of tables get their current index."""
    parts = [p.strip().strip('"') for p in dotted.split(".")]
    path = ""
    for n, part in enumerate(parts):
        path = f"{path}.{part}" if path else part
        if path in arrays and n < len(parts) - 1:
            path = f"{path}[{arrays[path]}]"
    return path


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _toggles_multiline(text: str) -> bool:
    return (text.count('"""') + text.count("'''")) % 2 == 1


def _closed(value: str) -> bool:
    return value.count("[") <= value.count("]")

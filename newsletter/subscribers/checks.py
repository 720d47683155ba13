"""`subscribers check`: every problem of every row of a list, and repeated addresses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.addresses import address_key, key_hash
from newsletter.errors import InvalidInput, Problem, Severity
from newsletter.subscribers.csvfile import RowParser
from newsletter.subscribers.journal import open_list


@dataclass
class CheckReport:
    files: list[Path]
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]


def check_lists(paths: Sequence[Path], *, allow_reserved: bool = False) -> CheckReport:
    """Every problem of every row of each list (errors), and repeated addresses (warnings);
    an address at a reserved name is an error unless `allow_reserved`."""
    report = CheckReport(files=list(paths))
    for path in paths:
        try:
            report.rows += _check_one(path, report.problems, allow_reserved)
        except InvalidInput as exc:
            report.problems.extend(exc.problems)
    return report


def _check_one(path: Path, problems: list[Problem], allow_reserved: bool) -> int:
    seen: set[int] = set()
    repeated: dict[int, int] = {}  # hash -> line, for the (few) repeated addresses
    rows = 0
    with open_list(path) as reader:
        parser = RowParser(reader, allow_reserved=allow_reserved)
        for line, cells in reader.rows():
            rows += 1
            parsed = parser.parse(line, cells)
            if isinstance(parsed, list):
                problems.extend(parsed)
                continue
            compact = key_hash(address_key(parsed.email))
            if compact in seen:
                repeated[compact] = line
            seen.add(compact)
    if repeated:
        problems.extend(_repeats(path, repeated))
    return rows


def _repeats(path: Path, repeated: dict[int, int]) -> list[Problem]:
    """Warnings for addresses on more than one row: a second pass finds the first line."""
    first: dict[int, int] = {}
    found: list[Problem] = []
    with open_list(path) as reader:
        email = reader.index["email"]
        for line, cells in reader.rows():
            compact = key_hash(address_key(cells[email]))
            if compact not in repeated:
                continue
            if compact in first:
                message = f"same address as line {first[compact]}: only one gets mail"
                found.append(
                    Problem(path, message, field="email", line=line, severity=Severity.WARNING)
                )
            else:
                first[compact] = line
    return found

"""docs/architecture.md is the rule for imports: which module may import which, and where each
third-party library may be imported. Parsed from the document, so the two cannot drift."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "newsletter"
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def table(heading: str) -> dict[str, set[str]]:
    """`| `name` | ... | a, b, c |` rows of the table after `heading`: name -> {a, b, c}."""
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("module", "library") or set(cells[0]) <= {"-"}:
            continue
        names = [n.strip("` ") for n in cells[0].split(",")]
        allowed = {
            n.strip() for n in cells[-1 if heading.startswith("## Modules") else 1].split(",")
        }
        for name in names:
            rows[name] = allowed - {""}
    return rows


def module_of(path: Path) -> str:
    """The unit the rules name: a top-level module, or a package as a whole."""
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return "newsletter" if rel.stem == "__init__" else rel.stem


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, third-party top-level names) imported anywhere in `path`."""
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "newsletter":  # from newsletter import api: the module api
                names = [f"newsletter.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "newsletter":
                target = parts[1] if len(parts) > 1 else "newsletter"
                if (PACKAGE / f"{target}.py").exists() or (PACKAGE / target).is_dir():
                    ours.add(target)
                else:
                    ours.add("newsletter")  # a name of the package itself (__version__)
            elif parts[0] not in sys.stdlib_module_names and parts[0] != "__future__":
                theirs.add(parts[0])
    return ours, theirs


def units() -> dict[str, tuple[set[str], set[str]]]:
    found: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = module_of(path)
        ours, theirs = found.setdefault(unit, (set(), set()))
        mine, others = imports(path)
        ours.update(mine - {unit})
        theirs.update(others)
    return found


def test_every_module_is_in_the_table() -> None:
    """A new module gets a row (a layer and what it may import) before it lands."""
    rules = table("## Modules and what each may import")
    assert set(units()) == set(rules)


def test_modules_import_only_what_their_row_allows() -> None:
    """No module reaches up or across beyond its row (function-level imports included)."""
    rules = table("## Modules and what each may import")
    wrong = {
        unit: sorted(ours - rules[unit])
        for unit, (ours, _) in units().items()
        if ours - rules.get(unit, set())
    }
    assert wrong == {}


def test_the_table_names_no_import_that_is_gone() -> None:
    """Each allowance is used, so the table stays a true picture of the code."""
    rules = table("## Modules and what each may import")
    stale = {
        unit: sorted(rules[unit] - ours)
        for unit, (ours, _) in units().items()
        if rules[unit] - ours
    }
    assert stale == {}


def test_cli_reaches_the_send_machinery_only_through_the_api() -> None:
    """The issue's rule, stated on its own: cli imports none of the send machinery."""
    machinery = {
        "dispatch", "ledger", "ledger_people", "transport", "message", "dkim", "sends", "sending",
        "smtp",
    }  # fmt: skip
    for unit in ("cli", "cli_send", "cli_subscribers"):
        assert not units()[unit][0] & machinery, unit


def test_third_party_libraries_stay_in_their_modules() -> None:
    """typer/rich only in the CLI, starlette/uvicorn only in serve, aiosmtplib only in smtp..."""
    homes = table("## Where each third-party library lives")
    where: dict[str, set[str]] = {}
    for unit, (_, theirs) in units().items():
        for library in theirs:
            where.setdefault(library, set()).add(unit)
    libraries = {name for row in homes for name in row.split(", ")}
    assert set(where) <= libraries, sorted(set(where) - libraries)
    for row, allowed in homes.items():
        for library in row.split(", "):
            assert where.get(library, set()) <= allowed, (library, where.get(library))


def test_importing_newsletter_loads_no_front_end() -> None:
    """Stated in the document; checked in a fresh interpreter by tests/test_api.py."""
    assert re.search(r"`import newsletter` loads none of these", DOC)


def test_the_send_loop_and_the_endpoint_see_only_the_storage_protocols() -> None:
    """dispatch and serve reach lists and ledgers through store.py's protocols, never an
    implementation (the CSV lists, the SQLite ledgers): a PostgreSQL store plugs in there."""
    implementations = {"ledger", "ledger_people", "ledgerdb", "sends", "subscribers"}
    for unit in ("dispatch", "serve"):
        assert not units()[unit][0] & implementations, unit
        assert "store" in units()[unit][0], unit


def test_every_module_is_under_600_lines() -> None:
    """A module past ~600 lines has two concerns (STYLE.md): split it where the concern changes."""
    lines = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in lines.items() if n >= 600} == {}

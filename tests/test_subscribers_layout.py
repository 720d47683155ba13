"""The subscribers package: one concern per module, imports running one way, modules kept short."""

import ast
from pathlib import Path

import newsletter.subscribers

PACKAGE = Path(newsletter.subscribers.__file__).parent
# Top to bottom, as the package docstring lists them: a module imports only those below it.
LAYERS = [
    "csvstore",
    "consent",
    "status",
    "batch",
    "selection",
    "importers",
    "export",
    "listing",
    "checks",
    "rewrite",
    "suppression",
    "splice",
    "journal",
    "edits",
    "people",
    "csvfile",
]


def imported(path: Path) -> set[str]:
    """The modules of the package (or the package itself) that `path` imports from."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "newsletter.subscribers":
                found.add("__init__")
            elif node.module.startswith("newsletter.subscribers."):
                found.add(node.module.rsplit(".", 1)[1])
    return found


def test_every_module_has_a_layer() -> None:
    """Each module of the package is placed in LAYERS (and the package docstring lists it)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS)
    for name in LAYERS:
        assert f"    {name} " in (newsletter.subscribers.__doc__ or "")


def test_imports_run_one_way() -> None:
    """No module of the package imports one above it, itself or the package's __init__."""
    for position, name in enumerate(LAYERS):
        below = set(LAYERS[position + 1 :])
        assert imported(PACKAGE / f"{name}.py") <= below, name


def test_no_module_over_600_lines() -> None:
    """A module past 600 lines holds two concerns: split it."""
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 600, path.name

"""Problem severity is the Severity enum, and `check` prints exactly what it printed before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from newsletter.config import load_config
from newsletter.errors import Problem, Severity
from newsletter.lint import check_issue
from newsletter.subscribers import check_lists
from tests.compose_helpers import ROOT, run

FIXTURES = Path("tests") / "fixtures"  # relative to ROOT, so the golden files hold no home dir
ISSUES = sorted(p.relative_to(ROOT) for p in (ROOT / FIXTURES / "issues").glob("*.toml"))
GOLDEN = ROOT / "tests" / "golden" / "check"
CONFIG = Path("newsletter.toml")  # relative, as the findings in it name it: no home dir either
SCHEMA = json.loads((ROOT / "docs" / "check.schema.json").read_text())
UPDATE = os.environ.get("NEWSLETTER_UPDATE_GOLDEN") == "1"  # regenerate only on purpose


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _golden(name: str, produced: str) -> str:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(produced, encoding="utf-8")
    return path.read_text(encoding="utf-8")


def _fixture_problems() -> list[Problem]:
    config = load_config(explicit=ROOT / "newsletter.toml")
    problems = [p for issue in ISSUES for p in check_issue(issue, config).problems]
    lists = sorted((ROOT / FIXTURES / "subscribers").glob("*.csv"))
    return problems + check_lists(lists).problems


def test_fixtures_give_both_severities() -> None:
    """The fixtures produce errors and warnings, so the tests below see both kinds."""
    assert {p.severity for p in _fixture_problems()} == {"error", "warning"}


def test_every_problem_carries_a_severity_member() -> None:
    """Each problem the checks find in tests/fixtures has a Severity member, not a bare str."""
    problems = _fixture_problems()
    assert problems
    for problem in problems:
        assert type(problem.severity) is Severity, problem


def test_severity_is_its_plain_string() -> None:
    """A Severity compares, formats and serialises as its value, so output does not change."""
    assert Severity.WARNING == "warning"
    assert f"{Severity.ERROR}" == "error"
    assert json.dumps({"severity": Severity.WARNING}) == '{"severity": "warning"}'


@pytest.mark.parametrize("issue", ISSUES, ids=lambda p: p.stem)
def test_check_json_is_unchanged(issue: Path) -> None:
    """`check --json` on each fixture issue prints the recorded bytes, valid against the schema."""
    result = run("--config", CONFIG, "check", issue, "--json")
    assert result.exit_code == 1
    jsonschema.validate(json.loads(result.stdout), SCHEMA)
    assert result.stdout == _golden(f"{issue.stem}.json", result.stdout)


@pytest.mark.parametrize("issue", ISSUES, ids=lambda p: p.stem)
def test_check_text_is_unchanged(issue: Path) -> None:
    """`check` prints the recorded lines: errors bare, warnings after "warning: "."""
    result = run("--config", CONFIG, "check", issue)
    assert result.exit_code == 1
    assert result.output == _golden(f"{issue.stem}.txt", result.output)

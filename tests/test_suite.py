"""The suite itself holds up on a loaded machine: no hypothesis test races a clock."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck

TESTS = Path(__file__).resolve().parent


def hypothesis_tests() -> Iterator[tuple[str, Any]]:
    """(module.name, settings) of every hypothesis test in tests/."""
    for path in sorted(TESTS.glob("test_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        for name, test in vars(module).items():
            if name.startswith("test_") and hasattr(test, "hypothesis"):
                yield f"{path.stem}.{name}", test._hypothesis_internal_use_settings


def test_hypothesis_tests_have_no_timing_limits() -> None:
    """No per-example deadline and no too_slow health check: either fails correct code when the
    machine is busy (conftest.py's profile; a test's own settings must keep that)."""
    found = dict(hypothesis_tests())
    assert len(found) >= 15  # the import really found the property tests (19 when written)
    timed = sorted(name for name, s in found.items() if s.deadline is not None)
    checked = sorted(
        n for n, s in found.items() if HealthCheck.too_slow not in s.suppress_health_check
    )
    assert (timed, checked) == ([], [])

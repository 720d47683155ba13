"""The sample's test message scores at most 1.0 with SpamAssassin's local rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compose_helpers import ROOT, SAMPLE, run
from tests.waits import HANG

MAX_SCORE = 1.0


def test_sample_test_message_is_not_spammy(tmp_path: Path, monkeypatch) -> None:
    """`spamassassin -L -t` on the sample's [TEST] message: score <= 1.0 (rules printed)."""
    if shutil.which("spamassassin") is None:
        pytest.fail("spamassassin is missing: .ci/run installs Debian's spamassassin")
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "test-secret-for-spam-score-0123456")
    result = run("test", SAMPLE, "--to", "reader@example.org")
    assert result.exit_code == 0, result.output
    [message] = (tmp_path / "outbox" / "new").iterdir()
    report = subprocess.run(
        ["spamassassin", "-L", "-t"],
        input=message.read_bytes(),
        capture_output=True,
        timeout=HANG,
        check=True,
    ).stdout.decode(errors="replace")
    details = report.split("Content analysis details:", 1)[1].split("\n\n", 2)
    score = float(re.search(r"\((-?[\d.]+) points", details[0]).group(1))  # type: ignore[union-attr]
    print(f"SpamAssassin score {score}:\n{details[1]}")
    assert score <= MAX_SCORE, details[1]

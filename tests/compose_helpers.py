"""Shared helpers for the compose tests: a newsletter folder in a temp dir, a CLI runner."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from typer.testing import CliRunner, Result

from newsletter.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "issues" / "2021-09-cohes3ion.toml"
BLANK_LINKS = ROOT / "tests" / "fixtures" / "issues" / "2021-09-cohes3ion-blank-links.toml"


def sample_folder(tmp: Path) -> Path:
    """A copy of this repository's sample newsletter (config + issue) in `tmp`."""
    shutil.copy(ROOT / "newsletter.toml", tmp / "newsletter.toml")
    (tmp / "issues").mkdir()
    shutil.copy(SAMPLE, tmp / "issues" / SAMPLE.name)
    return tmp


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


MINIMAL_CONFIG = """
[newsletter]
name = "Test news"
from = "Test news <news@example.org>"
postal_address = "1 Test Street, Testtown"
base_url = "https://news.example.org"
"""

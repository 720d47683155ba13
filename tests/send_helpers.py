"""A newsletter folder with a list, and `newsletter` run as a real subprocess in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.waits import HANG

REPO = Path(__file__).resolve().parent.parent
ISSUE = "issues/2021-09-cohes3ion.toml"

NEWSLETTER = [sys.executable, "-m", "newsletter"]  # the real command, in a fresh process
TEST_SECRET = "test-secret-" + "x" * 20  # a throwaway value of the minimum length


def make_folder(tmp: Path, people: int, *, name: str = "news") -> Path:
    folder = tmp / "letter"
    (folder / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    shutil.copy(REPO / ISSUE, folder / ISSUE)
    write_list(folder, name, [f"reader{i}@example.org" for i in range(people)])
    return folder


def write_list(folder: Path, name: str, emails: list[str], status: str = "subscribed") -> Path:
    path = folder / "subscribers" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    rows = "".join(f"{e},Reader {i},{status}\n" for i, e in enumerate(emails))
    path.write_text("email,name,status\n" + rows, encoding="utf-8")
    return path


def smtp_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_SECURITY": "none",
        "NEWSLETTER_SMTP_RETRY_DELAYS": "0.05,0.1",
        "NEWSLETTER_SMTP_TIMEOUT": "30",  # healthy paths: only a hang may reach it, never load
        **extra,
    }


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_SECRET": TEST_SECRET, "PYTHONPATH": str(REPO)})
    env.update(extra or {})
    return env


def command(folder: Path, *args: str) -> list[str]:
    return [*NEWSLETTER, *args]


def run(
    folder: Path, *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run `newsletter ARGS` to its end; fail naming it if it hangs (no budget for its work)."""
    try:
        return subprocess.run(
            command(folder, *args),
            cwd=folder,
            env=env_for(env),
            capture_output=True,
            text=True,
            timeout=HANG,
            stdin=subprocess.DEVNULL,
            check=False,
            **kw,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"`newsletter {' '.join(args)}` hung for {HANG:g} s; stderr: {hung.stderr!r}")

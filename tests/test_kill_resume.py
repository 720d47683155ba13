"""A real `newsletter send` killed with SIGKILL at random moments, then resumed until done."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.send_helpers import ISSUE, command, env_for, make_folder, run, smtp_env
from tests.smtpd import SmtpServer

PEOPLE = 240
K = 4


def killed_run(folder: Path, env: dict[str, str], delay: float) -> int | None:
    """Start a send, SIGKILL it after `delay` s; its exit code when it finished first."""
    with subprocess.Popen(
        command(folder, "send", ISSUE, "--yes"),
        cwd=folder,
        env=env_for(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            return proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return None


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_9_then_resume(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path, seed: int
) -> None:
    """Everyone gets it or is unknown; copies twice only among unknown; <= K unknown per kill."""
    rng = random.Random(seed)
    server = make_smtp_server()
    folder = make_folder(tmp_path, PEOPLE)
    env = smtp_env(server.port, NEWSLETTER_SMTP_CONNECTIONS=str(K), NEWSLETTER_SMTP_RATE="150")
    kills, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        code = killed_run(folder, env, rng.uniform(0.5, 2.0))
        if code is not None:
            assert code == 0
            break
        kills += 1
    assert kills >= 1, "the send finished before any kill: nothing was tested"
    doc = json.loads(run(folder, "status", ISSUE, "--json", env=env).stdout)
    unknown = set(doc["unknown"])
    delivered = server.delivered()
    everyone = {f"reader{i}@example.org" for i in range(PEOPLE)}
    assert doc["counts"]["sent"] + len(unknown) == PEOPLE
    assert everyone <= set(delivered) | unknown
    assert {r for r, n in delivered.items() if n > 1} <= unknown
    print(f"seed {seed}: {kills} kills, {len(unknown)} unknown, {sum(delivered.values())} copies")
    assert len(unknown) <= K * kills

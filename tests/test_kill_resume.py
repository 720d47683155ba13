"""A real `newsletter send` killed with SIGKILL at random moments, then resumed until done.

Kills are placed by the server's progress (after a random number of further messages), with
some at a random moment of a run (start-up, plan, ledger, sending), so a loaded machine changes
how long the test takes, never what it tests. A run that makes no progress for STALL seconds
fails, naming the phase it was stuck in and who was still waiting.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.send_helpers import ISSUE, command, env_for, make_folder, run, smtp_env
from tests.smtpd import SmtpServer
from tests.waits import STALL

PEOPLE = 240
K = 4
EVERYONE = {f"reader{i}@example.org" for i in range(PEOPLE)}


@dataclass(frozen=True)
class Kill:
    """When to SIGKILL a run: once `messages` more arrived at the server, `pause` s later."""

    messages: int  # 0: do not wait for messages, kill `pause` s after the start
    pause: float


def random_kill(rng: random.Random) -> Kill:
    """About 5 kills mid-send and 1 in another phase per seed: each run costs a start-up."""
    if rng.random() < 0.2:  # any phase of a run, start-up and ledger creation included
        return Kill(0, rng.uniform(0.0, 1.5))
    return Kill(rng.randint(1, 90), rng.uniform(0.0, 0.02))  # mid-send, between messages


def killed_run(server: SmtpServer, folder: Path, env: dict[str, str], kill: Kill) -> int | None:
    """Start a send and SIGKILL it as `kill` says; its exit code when it finished first."""
    log = folder.parent / "send-stderr.txt"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            command(folder, "send", ISSUE, "--yes"),
            cwd=folder,
            env=env_for(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        if kill.messages:
            wait_for_messages(server, proc, len(server.messages) + kill.messages, log)
        code = proc.wait(kill.pause) if proc.poll() is None else proc.returncode
        assert code == 0, f"the send failed (exit {code}):\n{log.read_text()}"
        return code
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def wait_for_messages(
    server: SmtpServer, proc: subprocess.Popen[bytes], target: int, log: Path
) -> None:
    """Return when the server has `target` messages or the send ended; fail when no message
    arrived for STALL s while it ran."""
    first, last, since = len(server.messages), len(server.messages), time.monotonic()
    while proc.poll() is None and not server.wait_for_messages(target, timeout=0.05):
        if (count := len(server.messages)) != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > STALL:
            phase = "its first message" if last == first else f"message {last - first + 1}"
            waiting = sorted(EVERYONE - set(server.delivered()))
            pytest.fail(
                f"the send made no progress for {STALL:g} s, waiting for {phase} of this run; "
                f"{len(waiting)} never received, e.g. {waiting[:5]}; stderr:\n{log.read_text()}"
            )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_9_then_resume(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path, seed: int
) -> None:
    """Everyone gets it or is unknown; copies twice only among unknown; <= K unknown per kill."""
    rng = random.Random(seed)
    server = make_smtp_server()
    folder = make_folder(tmp_path, PEOPLE)
    env = smtp_env(server.port, NEWSLETTER_SMTP_CONNECTIONS=str(K), NEWSLETTER_SMTP_RATE="150")
    kills = 0
    while killed_run(server, folder, env, random_kill(rng)) is None:
        kills += 1
    assert kills >= 1, "the send finished before any kill: nothing was tested"
    doc = json.loads(run(folder, "status", ISSUE, "--json", env=env).stdout)
    unknown = set(doc["unknown"])
    delivered = server.delivered()
    print(f"seed {seed}: {kills} kills, {len(unknown)} unknown, {sum(delivered.values())} copies")
    lost = sorted(EVERYONE - set(delivered) - unknown)
    assert not lost, f"never received and not marked unknown: {lost}"
    assert doc["counts"]["sent"] + len(unknown) == PEOPLE, doc["counts"]
    twice = {r for r, n in delivered.items() if n > 1}
    assert twice <= unknown, f"received twice but not unknown: {sorted(twice - unknown)}"
    assert len(unknown) <= K * kills

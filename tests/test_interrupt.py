"""Ctrl-C during a real `newsletter send`: once stops after what is in flight, twice at once."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.send_helpers import ISSUE, command, env_for, make_folder, run, smtp_env
from tests.smtpd import Fault, SmtpServer
from tests.waits import HANG, wait_until


def test_second_ctrl_c_exits_130(
    make_smtp_server: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """SIGINT twice while a slow server holds the messages in flight: the first asks to
    finish them, the second stops at once with exit 130 and no traceback; the ledger has
    those in flight as unknown."""
    server = make_smtp_server()
    server.add_fault(Fault("DATA", hang=True, times=0))
    folder = make_folder(tmp_path, 20)
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            command(folder, "send", ISSUE, "--yes"),
            cwd=folder,
            env=env_for(smtp_env(server.port)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until(
            lambda: len(server.messages) > 0,
            "a message in flight",
            alive=lambda: proc.poll() is None,
        )
        proc.send_signal(signal.SIGINT)
        wait_until(
            lambda: "stopping" in log.read_text(),
            "the first Ctrl-C is taken",
            alive=lambda: proc.poll() is None,
        )
        proc.send_signal(signal.SIGINT)
        code = proc.wait(HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 130, text
    assert text.splitlines()[-1] == "interrupted"
    assert "Traceback" not in text
    doc = json.loads(run(folder, "status", ISSUE, "--json", env=smtp_env(server.port)).stdout)
    assert set(server.delivered()) <= set(doc["unknown"])  # in flight: they may have it
    assert doc["counts"]["sent"] == 0

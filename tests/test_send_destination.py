"""One send per issue, however the server or the issue is spelled: a partial send through one
server refuses a fresh ledger through any other spelling; `--continue-from` mails only the rest."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.ledger import ledger_path
from newsletter.transport import is_loopback, smtp_destination
from tests.send_helpers import HANG, ISSUE, command, env_for, make_folder, run, smtp_env
from tests.smtpd import SmtpServer, drop_after_data

PEOPLE = 6


def _ledgers(folder: Path) -> list[Path]:
    return sorted((folder / ".newsletter" / "sends").glob("*.sqlite"))


def _copies(*servers: SmtpServer) -> Counter[str]:
    total: Counter[str] = Counter()
    for server in servers:
        total.update(server.delivered())
    return total


@pytest.fixture
def partial(
    tmp_path: Path, make_smtp_server: Callable[..., SmtpServer]
) -> tuple[Path, SmtpServer, SmtpServer, Path]:
    """A folder whose issue went to 2 of 6 readers through server A on 127.0.0.1."""
    folder = make_folder(tmp_path, PEOPLE)
    first, other = make_smtp_server(), make_smtp_server()
    done = run(folder, "send", ISSUE, "--limit", "2", "--yes", env=smtp_env(first.port))
    assert done.returncode == 3, done.stderr  # recipients remain
    assert len(first.messages) == 2
    [ledger] = _ledgers(folder)
    return folder, first, other, ledger


def _rename_issue(folder: Path) -> str:
    renamed = "issues/2021-09-cohes3ion-again.toml"
    (folder / ISSUE).rename(folder / renamed)
    return renamed


RESPELLINGS = {
    "localhost": lambda a, b: ("localhost", a, ISSUE),
    "LOCALHOST": lambda a, b: ("LOCALHOST", a, ISSUE),
    "trailing dot": lambda a, b: ("localhost.", a, ISSUE),
    "another port": lambda a, b: ("127.0.0.1", b, ISSUE),
    "renamed issue file": lambda a, b: ("127.0.0.1", a, None),
}


@pytest.mark.parametrize("how", sorted(RESPELLINGS))
def test_another_spelling_refuses_and_mails_nobody(partial, how: str) -> None:
    """Every other spelling of where or what is sent refuses, naming the ledger and its counts;
    nobody gets a second copy and no new ledger appears."""
    folder, first, other, ledger = partial
    host, port, issue = RESPELLINGS[how](first.port, other.port)
    issue = issue or _rename_issue(folder)
    env = smtp_env(port, NEWSLETTER_SMTP_HOST=host)
    result = run(folder, "send", issue, "--yes", env=env)
    assert result.returncode == 1, result.stderr
    assert f"{ledger.resolve()} (smtp://127.0.0.1:{first.port}): 2 sent, 0 unknown" in (
        result.stderr
    )
    assert f"--continue-from {ledger.resolve()}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(first.messages) + len(other.messages) == 2
    assert _ledgers(folder) == [ledger]


def test_continue_from_mails_exactly_the_rest(partial) -> None:
    """`--continue-from` through another server sends to the 4 not yet mailed, once each; then
    that send resumes without the flag, and the first server's ledger refuses to resume."""
    folder, first, other, ledger = partial
    env = smtp_env(other.port)
    result = run(folder, "send", ISSUE, "--continue-from", str(ledger), "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 recipient(s) marked as its sends" in result.stderr
    assert len(other.messages) == PEOPLE - 2
    assert not set(first.delivered()) & set(other.delivered())
    assert _copies(first, other) == Counter({f"reader{i}@example.org": 1 for i in range(PEOPLE)})
    again = run(folder, "send", ISSUE, "--yes", env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing to send" in again.stderr
    back = run(folder, "send", ISSUE, "--yes", env=smtp_env(first.port))
    assert back.returncode == 1
    assert "another server" in back.stderr
    assert sum(_copies(first, other).values()) == PEOPLE


def test_continue_from_carries_over_a_renamed_issue(partial) -> None:
    """The same content under another file name continues from the old name's ledger."""
    folder, first, _, ledger = partial
    renamed = _rename_issue(folder)
    env = smtp_env(first.port)
    result = run(folder, "send", renamed, "--continue-from", str(ledger), "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert _copies(first) == Counter({f"reader{i}@example.org": 1 for i in range(PEOPLE)})


def test_continue_from_must_be_a_send_of_this_issue(partial, tmp_path: Path) -> None:
    """--continue-from naming anything else is refused before anything is sent."""
    folder, _, other, _ = partial
    stranger = tmp_path / "elsewhere.sqlite"
    result = run(
        folder, "send", ISSUE, "--continue-from", str(stranger), "--yes", env=smtp_env(other.port)
    )
    assert result.returncode == 1
    assert f"--continue-from {stranger}: not a ledger" in result.stderr
    assert other.messages == []


def test_an_outbox_send_never_blocks_an_smtp_send(tmp_path: Path, plain_smtp_server) -> None:
    """A whole send into the outbox (a rehearsal) does not count as mailing anyone."""
    folder = make_folder(tmp_path, PEOPLE)
    rehearsal = run(folder, "send", ISSUE, "--yes")
    assert rehearsal.returncode == 0, rehearsal.stderr
    result = run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port))
    assert result.returncode == 0, result.stderr
    assert len(plain_smtp_server.messages) == PEOPLE


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        (("Mail.Example.ORG.", None, "starttls"), "smtp://mail.example.org:587"),
        (("mail.example.org", 587, "starttls"), "smtp://mail.example.org:587"),
        (("mail.example.org", None, "tls"), "smtp://mail.example.org:465"),
        (("[0:0::1]", 25, "none"), "smtp://[::1]:25"),
        (("127.0.0.1.", 2525, "none"), "smtp://127.0.0.1:2525"),
        (("127.1", 2525, "none"), "smtp://127.0.0.1:2525"),
        (("2130706433", 2525, "none"), "smtp://127.0.0.1:2525"),
        (("0x7f.0.0.1", 2525, "none"), "smtp://127.0.0.1:2525"),
        (("::ffff:127.0.0.1", 2525, "none"), "smtp://127.0.0.1:2525"),
        (("[::FFFF:7f00:1]", 2525, "none"), "smtp://127.0.0.1:2525"),
        (("0:0:0:0:0:0:0:1", 2525, "none"), "smtp://[::1]:2525"),
        (("10.0.0.300", 25, "none"), "smtp://10.0.0.300:25"),  # no address: left as written
    ],
)
def test_destination_is_canonical(spelling: tuple[str, int | None, str], canonical: str) -> None:
    """Case, a trailing dot, brackets, IP spelling and a written-out default port are one key,
    so they share one ledger."""
    assert smtp_destination(*spelling) == canonical
    assert is_loopback(spelling[0]) == ("127.0.0.1" in canonical or "[::1]" in canonical)
    here = Path(".newsletter")
    assert ledger_path(here, "x", smtp_destination(*spelling)) == ledger_path(here, "x", canonical)


def test_unknown_rows_block_and_carry_over(
    tmp_path: Path, make_smtp_server: Callable[..., SmtpServer]
) -> None:
    """A reader left unknown (the connection dropped after the data) counts as maybe mailed:
    another server is refused, and `--continue-from` does not mail them either."""
    folder = make_folder(tmp_path, PEOPLE)
    first, other = make_smtp_server(), make_smtp_server()
    first.add_fault(drop_after_data())
    done = run(folder, "send", ISSUE, "--limit", "1", "--yes", env=smtp_env(first.port))
    assert done.returncode == 3, done.stderr
    [ledger] = _ledgers(folder)
    refused = run(folder, "send", ISSUE, "--yes", env=smtp_env(other.port))
    assert refused.returncode == 1
    assert f"{ledger.resolve()} (smtp://127.0.0.1:{first.port}): 0 sent, 1 unknown" in (
        refused.stderr
    )
    moved = run(
        folder, "send", ISSUE, "--continue-from", str(ledger), "--yes", env=smtp_env(other.port)
    )
    assert moved.returncode == 0, moved.stderr
    assert _copies(first, other) == Counter({f"reader{i}@example.org": 1 for i in range(PEOPLE)})


def test_a_ledger_killed_while_created_does_not_block(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """A kill right after the ledger file appeared leaves it empty (no tables): a rerun sends,
    and such a file elsewhere counts as nobody mailed."""
    folder = make_folder(tmp_path, PEOPLE)
    state = folder / ".newsletter"
    slug = Path(ISSUE).stem
    here = smtp_destination("127.0.0.1", plain_smtp_server.port, "none")
    for destination in (here, "smtp://elsewhere.example.org:587"):
        path = ledger_path(state, slug, destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    result = run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port))
    assert result.returncode == 0, result.stderr
    assert len(plain_smtp_server.messages) == PEOPLE


def test_continue_from_is_refused_for_the_outbox(partial) -> None:
    """The outbox mails nobody: continuing a send into it is a mistake, said so."""
    folder, _, _, ledger = partial
    result = run(folder, "send", ISSUE, "--continue-from", str(ledger), "--yes")
    assert result.returncode == 1
    assert "--continue-from is for SMTP sends" in result.stderr
    assert not (folder / "outbox").exists()


def test_a_third_server_continues_from_both_earlier_ones(
    partial, make_smtp_server: Callable[..., SmtpServer]
) -> None:
    """Two partial sends through two servers, then a third: the refusal names both ledgers in
    one command that works (each `--continue-from` once); everyone gets exactly one copy."""
    folder, first, second, ledger = partial
    env = smtp_env(second.port)
    moved = run(folder, "send", ISSUE, "--limit", "2", "--continue-from", str(ledger), "--yes",
                env=env)  # fmt: skip
    assert moved.returncode == 3, moved.stderr
    [later] = [path for path in _ledgers(folder) if path != ledger]
    third = make_smtp_server()
    refused = run(folder, "send", ISSUE, "--continue-from", str(later), "--yes",
                  env=smtp_env(third.port))  # fmt: skip
    assert refused.returncode == 1
    assert f"{ledger.resolve()} (smtp://127.0.0.1:{first.port}): 2 sent" in refused.stderr
    assert f"--continue-from {ledger.resolve()}" in refused.stderr
    assert f"--continue-from {later.resolve()}" in refused.stderr, refused.stderr
    assert third.messages == []
    both = ["--continue-from", str(ledger), "--continue-from", str(later)]
    result = run(folder, "send", ISSUE, *both, "--yes", env=smtp_env(third.port))
    assert result.returncode == 0, result.stderr
    copies = _copies(first, second, third)
    assert copies == Counter({f"reader{i}@example.org": 1 for i in range(PEOPLE)})


@pytest.mark.parametrize("where", ["another server", "the outbox"])
def test_status_elsewhere_names_the_send_that_happened(partial, where: str) -> None:
    """`status` configured for a server that sent nothing does not say "nothing has been sent"
    and stop there: it reports the one send that happened, naming where it went."""
    folder, first, other, ledger = partial
    env = smtp_env(other.port) if where == "another server" else None
    result = run(folder, "status", ISSUE, env=env)
    assert result.returncode == 0, result.stderr
    assert f"this is the send through smtp://127.0.0.1:{first.port}" in result.stderr
    assert "sent 2, failed 0" in result.stdout  # the report is status's result
    assert "Traceback" not in result.stderr
    assert _ledgers(folder) == [ledger]


def test_status_names_sends_through_another_server_it_does_not_know(partial) -> None:
    """After a continued send through server B, `status` through A (whose ledger does not know
    B's sends) says B's ledger sent more, rather than reporting A's counts alone."""
    folder, first, other, ledger = partial
    moved = run(folder, "send", ISSUE, "--limit", "1", "--continue-from", str(ledger), "--yes",
                env=smtp_env(other.port))  # fmt: skip
    assert moved.returncode == 3, moved.stderr
    [later] = [path for path in _ledgers(folder) if path != ledger]
    result = run(folder, "status", ISSUE, env=smtp_env(first.port))
    assert result.returncode == 0, result.stderr
    assert f"{later.resolve()} (smtp://127.0.0.1:{other.port}): 3 sent, 0 unknown" in (
        result.stderr
    )


def test_a_copy_of_the_issue_cannot_be_sent_while_the_original_is_connecting(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """The same issue under two file names, sent at once through two servers: while the first
    waits for its server's greeting (nothing sent or in flight yet), the second is refused and
    mails nobody."""
    folder = make_folder(tmp_path, PEOPLE)
    copy = "issues/2021-09-same-content.toml"
    shutil.copy(folder / ISSUE, folder / copy)
    connected = threading.Event()
    accepted: list[socket.socket] = []

    def accept(listener: socket.socket) -> None:
        accepted.append(listener.accept()[0])
        connected.set()

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never greets
        port = silent.getsockname()[1]
        threading.Thread(target=accept, args=(silent,), daemon=True).start()
        sending = subprocess.Popen(
            command(folder, "send", ISSUE, "--yes"), cwd=folder, env=env_for(smtp_env(port)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert connected.wait(HANG), "the first send never connected"
            second = run(folder, "send", copy, "--yes", env=smtp_env(plain_smtp_server.port))
        finally:
            sending.kill()
            sending.wait()
            for conn in accepted:
                conn.close()
    assert second.returncode == 1, second.stderr
    assert "is running" in second.stderr
    assert plain_smtp_server.messages == []

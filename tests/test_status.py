"""`status` finds a send whatever the environment says, asks when there are several, and lists
every send without an issue (issue 14, item 5)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import Newsletter
from newsletter.errors import LedgerMissing, SeveralSends
from tests.send_helpers import ISSUE, make_folder, run, smtp_env
from tests.smtpd import SmtpServer


def test_status_without_the_smtp_settings_finds_the_smtp_send(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """Sent through a server named only in the environment; status in a shell without those
    variables reports that send (the configured destination, the outbox, has none)."""
    folder = make_folder(tmp_path, 3)
    sent = run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port))
    assert sent.returncode == 0, sent.stderr
    shown = run(folder, "status", ISSUE, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["destination"] == f"smtp://127.0.0.1:{plain_smtp_server.port}"
    assert doc["counts"]["sent"] == 3


def test_several_destinations_are_listed_and_one_can_be_chosen(
    tmp_path: Path, make_smtp_server: Callable[..., SmtpServer]
) -> None:
    """Two servers sent parts, the configured one (a third) nothing: status names both and
    exits 1; --destination picks one."""
    folder = make_folder(tmp_path, 4)
    first, second, third = make_smtp_server(), make_smtp_server(), make_smtp_server()
    one = run(folder, "send", ISSUE, "--limit", "1", "--yes", env=smtp_env(first.port))
    assert one.returncode == 3, one.stderr
    [ledger] = sorted((folder / ".newsletter" / "sends").glob("*.sqlite"))
    two = run(folder, "send", ISSUE, "--continue-from", str(ledger), "--yes",
              env=smtp_env(second.port))  # fmt: skip
    assert two.returncode == 0, two.stderr
    asked = run(folder, "status", ISSUE, env=smtp_env(third.port))
    assert asked.returncode == 1
    for server in (first, second):
        assert f"smtp://127.0.0.1:{server.port}: " in asked.stderr, asked.stderr
    assert "--destination" in asked.stderr and "Traceback" not in asked.stderr
    chosen = run(folder, "status", ISSUE, "--json", "--destination",
                 f"smtp://127.0.0.1:{first.port}", env=smtp_env(third.port))  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["counts"]["sent"] == 1


def test_status_of_a_configured_destination_with_a_send_is_that_one(
    tmp_path: Path, plain_smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent to the outbox and to a server: the configured destination decides (API)."""
    folder = make_folder(tmp_path, 2)
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    assert run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port)).returncode == 0
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    assert Newsletter.open(folder).status(ISSUE).destination == "outbox"
    for name, value in smtp_env(plain_smtp_server.port).items():
        monkeypatch.setenv(name, value)
    smtp = Newsletter.open(folder).status(ISSUE)
    assert smtp.destination == f"smtp://127.0.0.1:{plain_smtp_server.port}"


def test_several_sends_is_an_error_with_the_destinations(
    tmp_path: Path, make_smtp_server: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API raises SeveralSends carrying the destinations; LedgerMissing when none."""
    folder = make_folder(tmp_path, 2)
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    with pytest.raises(LedgerMissing):
        Newsletter.open(folder).status(ISSUE)
    first, second = make_smtp_server(), make_smtp_server()
    limited = run(folder, "send", ISSUE, "--limit", "1", "--yes", env=smtp_env(first.port))
    assert limited.returncode == 3, limited.stderr
    ledgers = sorted((folder / ".newsletter" / "sends").glob("*.sqlite"))
    again = run(folder, "send", ISSUE, "--yes", "--continue-from", str(ledgers[0]),
                env=smtp_env(second.port))  # fmt: skip
    assert again.returncode == 0, again.stderr
    with pytest.raises(SeveralSends) as caught:
        Newsletter.open(folder).status(ISSUE)
    assert sorted(caught.value.destinations) == sorted(
        f"smtp://127.0.0.1:{s.port}" for s in (first, second)
    )


def test_status_without_an_issue_lists_every_send(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """One line per send on stdout: issue, destination, counts, last change; --json too."""
    folder = make_folder(tmp_path, 3)
    other = "issues/2021-10-second.toml"
    (folder / other).write_text((folder / ISSUE).read_text(encoding="utf-8"), encoding="utf-8")
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    limited = run(folder, "send", other, "--limit", "1", "--yes",
                  env=smtp_env(plain_smtp_server.port))  # fmt: skip
    assert limited.returncode in (0, 3), limited.stderr
    listed = run(folder, "status")
    assert listed.returncode == 0, listed.stderr
    lines = sorted(listed.stdout.splitlines())
    assert len(lines) == 2, listed.stdout
    first, second = (line.split("\t") for line in lines)
    assert first[:3] == ["2021-09-cohes3ion", "outbox", "3 sent"]
    assert second[:2] == ["2021-10-second", f"smtp://127.0.0.1:{plain_smtp_server.port}"]
    assert second[2].startswith("2 pending, 1 sent") and second[3].startswith("20")
    rows = json.loads(run(folder, "status", "--json").stdout)
    assert {row["issue"]: row["counts"]["sent"] for row in rows} == {
        "2021-09-cohes3ion": 3,
        "2021-10-second": 1,
    }


def test_status_without_an_issue_and_no_send(tmp_path: Path) -> None:
    """Nothing sent yet: nothing on stdout, a note on stderr, exit 0."""
    folder = make_folder(tmp_path, 1)
    listed = run(folder, "status")
    assert listed.returncode == 0 and listed.stdout == ""
    assert "no send yet" in listed.stderr


@pytest.mark.parametrize(
    "option", [["--failed"], ["--failed", "--csv"], ["--destination", "outbox"]]
)
def test_options_of_one_send_without_an_issue_are_a_usage_error(
    tmp_path: Path, option: list[str]
) -> None:
    """`status --failed` (or --destination) without an issue is a usage error naming the
    option, not the list of every send where failures or one destination were asked for."""
    folder = make_folder(tmp_path, 1)
    assert run(folder, "send", ISSUE, "--yes").returncode == 0
    listed = run(folder, "status", *option)
    assert listed.returncode == 2, listed.stdout
    assert listed.stdout == ""
    assert f"{option[0]} needs an ISSUE" in listed.stderr


def test_a_destination_with_no_send_names_the_option_that_finds_one(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """`status --destination` spelled otherwise than `status` lists it (here without the
    scheme): the error names the send there is and says to pass it to --destination."""
    folder = make_folder(tmp_path, 2)
    assert run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port)).returncode == 0
    where = f"smtp://127.0.0.1:{plain_smtp_server.port}"
    asked = run(folder, "status", ISSUE, "--destination", where.removeprefix("smtp://"))
    assert asked.returncode == 1
    assert f"({where})" in asked.stderr
    assert "pass --destination with the one in brackets" in asked.stderr, asked.stderr


def test_a_destination_that_is_no_server_names_the_option(tmp_path: Path) -> None:
    """`--destination smtp://host:abc` is one line naming --destination, exit 1."""
    folder = make_folder(tmp_path, 1)
    shown = run(folder, "status", ISSUE, "--destination", "smtp://host:abc")
    assert shown.returncode == 1
    assert shown.stderr.strip() == (
        "error: --destination: 'smtp://host:abc' is not outbox or smtp://host:port"
    )

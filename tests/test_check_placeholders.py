"""init's placeholder `from` and `base_url` (marked REPLACE) refuse a send through an SMTP
server, and are warnings for `check` and the outbox; other example hosts are only warnings."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from newsletter import Newsletter
from newsletter.errors import ConfigError
from newsletter.scaffold import init
from tests.send_helpers import run, smtp_env, write_list
from tests.smtpd import SmtpServer

ISSUE = "issues/2024-01-first-issue.toml"


def _init_folder(tmp_path: Path, **replace: str) -> Path:
    """A folder as `init` makes it, with a postal address and a reader; `replace` edits keys."""
    folder = tmp_path / "news"
    init(folder, dt.date(2024, 1, 2))
    config = folder / "newsletter.toml"
    text = config.read_text(encoding="utf-8").replace(
        'postal_address = ""', 'postal_address = "1 St"'
    )
    for key, value in replace.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    config.write_text(text, encoding="utf-8")
    write_list(folder, "subscribers", ["reader@example.net"])
    for issue in (folder / "issues").glob("*.toml"):  # init writes a draft: this one is ready
        issue.write_text(re.sub(r"(?m)^draft = true.*\n", "", issue.read_text("utf-8")), "utf-8")
    return folder


def test_check_warns_about_both_placeholders(tmp_path: Path) -> None:
    """`check` of a fresh folder: `from` and `base_url` are warnings naming the key and line."""
    folder = _init_folder(tmp_path)
    done = run(folder, "check", ISSUE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # findings are check's results: stdout
    config = (folder / "newsletter.toml").read_text(encoding="utf-8").splitlines()
    for key in ("from", "base_url"):
        line = next(n for n, text in enumerate(config, 1) if text.startswith(f"{key} = "))
        hit = [x for x in lines if f"newsletter.toml:{line}: newsletter.{key}:" in x]
        assert len(hit) == 1, done.stdout
        assert hit[0].startswith("warning: ") and "placeholder `init` wrote" in hit[0]


def test_outbox_send_goes_ahead_with_a_warning(tmp_path: Path) -> None:
    """A send into the outbox (no [smtp] host) shows the warnings and sends."""
    folder = _init_folder(tmp_path)
    done = run(folder, "send", ISSUE, "--yes")
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "newsletter.base_url" in done.stderr
    assert len(list((folder / "outbox" / "new").iterdir())) == 1


def test_smtp_send_is_refused_naming_each_key(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """A send through an SMTP server is refused before connecting: one line per key, with
    newsletter.toml and its line; nothing is sent and no ledger is written."""
    folder = _init_folder(tmp_path)
    done = run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port))
    assert done.returncode == 1, done.stderr
    refused = [x for x in done.stderr.splitlines() if "placeholder `init` wrote" in x]
    assert len(refused) == 2, done.stderr
    assert "newsletter.toml:7: newsletter.from:" in refused[0]
    assert "newsletter.toml:14: newsletter.base_url:" in refused[1]
    assert all("before sending through an SMTP server" in x for x in refused)
    assert plain_smtp_server.messages == []
    assert not (folder / ".newsletter" / "sends").exists() or not any(
        (folder / ".newsletter" / "sends").iterdir()
    )


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("from", '"Another name <NEWS@Example.ORG>"', "newsletter.from"),
        ("base_url", '"https://news.example.org/letters"', "newsletter.base_url"),
    ],
)
def test_api_plan_refuses_each_placeholder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str, field: str
) -> None:
    """Newsletter.plan refuses too (not only the command line), for each placeholder alone,
    however its display name, case or path was changed."""
    real = {"from": '"News <news@letters.example.net>"', "base_url": '"https://example.net/n"'}
    folder = _init_folder(tmp_path, **{**real, key: value})
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "127.0.0.1")  # refused before any connection
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")
    nl = Newsletter.open(folder)
    with pytest.raises(ConfigError) as caught:
        nl.plan(folder / ISSUE)
    assert [p.field for p in caught.value.problems] == [field]
    assert caught.value.problems[0].path == folder.resolve() / "newsletter.toml"


def test_other_example_hosts_are_sent_with_a_warning(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """`from` and `base_url` at another example host (not init's values) warn but send."""
    folder = _init_folder(
        tmp_path,
        **{
            "from": '"News <news@letters.example.com>"',
            "base_url": '"https://letters.example.com"',
        },
    )
    done = run(folder, "send", ISSUE, "--yes", env=smtp_env(plain_smtp_server.port))
    assert done.returncode == 0, done.stderr
    assert "is at an example host (letters.example.com)" in done.stderr
    assert len(plain_smtp_server.messages) == 1


def test_environment_value_replaces_the_placeholder(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """NEWSLETTER_FROM and NEWSLETTER_BASE_URL set for real: the file's placeholders no longer
    apply, and the send goes through."""
    folder = _init_folder(tmp_path)
    env = smtp_env(
        plain_smtp_server.port,
        NEWSLETTER_FROM="News <news@letters.example.net>",
        NEWSLETTER_BASE_URL="https://letters.example.net",
    )
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "placeholder `init` wrote" not in done.stderr
    assert len(plain_smtp_server.messages) == 1


def test_a_placeholder_from_the_environment_names_the_variable(
    tmp_path: Path, plain_smtp_server: SmtpServer
) -> None:
    """init's value set in NEWSLETTER_FROM (the file holds a real one): the refusal names the
    variable, which wins over the file, not the file's line that a user would edit in vain;
    check's warning names it too."""
    real = {"from": '"News <news@letters.example.net>"', "base_url": '"https://example.net/n"'}
    folder = _init_folder(tmp_path, **real)
    env = smtp_env(plain_smtp_server.port, NEWSLETTER_FROM="news@example.org")
    done = run(folder, "send", ISSUE, "--yes", env=env)
    assert done.returncode == 1, done.stderr
    assert "error: NEWSLETTER_FROM: 'news@example.org' is still the placeholder" in done.stderr
    assert "newsletter.toml" not in done.stderr.split("NEWSLETTER_FROM:")[1].split("\n")[0]
    assert plain_smtp_server.messages == []
    checked = run(folder, "check", ISSUE, env={"NEWSLETTER_FROM": "news@example.org"})
    assert "warning: NEWSLETTER_FROM: 'news@example.org' is still the placeholder" in checked.stdout

"""`preview --serve`: a real server on loopback that re-renders on change and shows errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from newsletter.config import load_config
from newsletter.serve import preview_app
from tests.compose_helpers import MINIMAL_CONFIG, write
from tests.serve_helpers import running

ISSUE = (
    'title = "T"\nsubject = "S"\ndate = 2024-01-02\n[[blocks]]\nkind = "text"\nbody = "{body}"\n'
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(tmp_path / "issues" / "x.toml", ISSUE.format(body="First version"))
    with running(preview_app(issue, load_config(explicit=tmp_path))) as url:
        yield url, issue


def _edit(path: Path, body: str) -> None:
    _write(path, ISSUE.format(body=body))


def _write(path: Path, text: str) -> None:
    """Write `text` so that the server sees a change, however coarse the file clock."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    while path.stat().st_mtime_ns == before:
        time.sleep(0.01)
        path.write_text(text)


def test_serves_the_rendered_issue_with_reload_script(served) -> None:
    """GET / is the rendered HTML plus the script that reloads it on change."""
    url, _ = served
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert "First version" in page.text
    assert "/__version" in page.text
    assert "First version" in httpx.get(url + "/text", timeout=10).text


def test_change_bumps_version_and_content(served) -> None:
    """Saving the issue changes /__version and the page shows the new text."""
    url, issue = served
    before = httpx.get(url + "/__version", timeout=10).text
    _edit(issue, "Second version")
    assert httpx.get(url + "/__version", timeout=10).text != before
    assert "Second version" in httpx.get(url + "/", timeout=10).text


def test_errors_show_in_the_page(served) -> None:
    """A broken issue shows its located error in the page; the server keeps running."""
    url, issue = served
    _write(issue, ISSUE.format(body="x") + "bogus = 1\n")
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert "does not render" in page.text
    assert "bogus: unknown key" in page.text
    _edit(issue, "Fixed again")
    assert "Fixed again" in httpx.get(url + "/", timeout=10).text


def _port_in_use() -> tuple[object, int]:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


@pytest.mark.parametrize("command", [["serve"], ["preview", "issues/x.toml", "--serve"]])
@pytest.mark.parametrize("port", ["70000", "-1", "in use"])
def test_a_port_that_cannot_be_listened_on_is_one_line(
    tmp_path: Path, monkeypatch, command: list[str], port: str
) -> None:
    """serve and preview --serve on a port out of range or in use: exit 1 with one line naming
    the address and what to do (was an OverflowError traceback, or uvicorn's exit 3)."""
    from tests.compose_helpers import run

    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    write(tmp_path / "issues" / "x.toml", ISSUE.format(body="x"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    holder, busy = _port_in_use()
    try:
        number = str(busy) if port == "in use" else port
        result = run(*command, "--port", number)
    finally:
        holder.close()  # type: ignore[attr-defined]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert f"127.0.0.1:{number}: cannot listen" in errors[0]


def test_serves_the_issue_as_a_subscriber(tmp_path: Path) -> None:
    """`preview --serve --as`: the page and /text carry that subscriber's merge fields."""
    from newsletter.models import Subscriber

    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    issue = write(
        tmp_path / "issues" / "x.toml",
        ISSUE.format(body="Hi {{ subscriber.name | default('reader') }}"),
    )
    reader = Subscriber(email="ann@example.org", name="Ann & Co")
    with running(preview_app(issue, load_config(explicit=tmp_path), reader)) as url:
        assert "Hi Ann &amp; Co" in httpx.get(url + "/", timeout=10).text
        assert "Hi Ann & Co" in httpx.get(url + "/text", timeout=10).text


@pytest.mark.parametrize("command", [["serve"], ["preview", "issues/x.toml", "--serve"]])
def test_a_port_in_use_says_which_and_what_to_pass(
    tmp_path: Path, monkeypatch, command: list[str]
) -> None:
    """A port in use is one line in our words: the port, and `--port N` to pass instead; not
    the OS's text (`[Errno 98] Address already in use`) nor uvicorn's."""
    from tests.compose_helpers import run

    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    write(tmp_path / "issues" / "x.toml", ISSUE.format(body="x"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    holder, busy = _port_in_use()
    try:
        result = run(*command, "--port", str(busy))
    finally:
        holder.close()  # type: ignore[attr-defined]
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"error: 127.0.0.1:{busy}: cannot listen: port {busy} is in use by another program; "
        "pass another with --port N"
    )
    assert "Errno" not in result.output and "already in use" not in result.output


MAIL_CATCHER_PORTS = {1025, 1080, 8025}  # aiosmtpd 8025; Mailpit, MailHog 1025/8025; MailCatcher


@pytest.mark.parametrize("command", [["serve"], ["preview"]])
def test_default_ports_leave_local_mail_catchers_alone(command: list[str]) -> None:
    """serve and preview --serve listen by default on ports no local mail-debugging tool
    takes, and not on each other's."""
    from typer.main import get_command

    from newsletter.cli import app

    def default_port(name: str) -> int:
        [port] = [p for p in get_command(app).commands[name].params if p.name == "port"]  # type: ignore[attr-defined]
        return int(port.default)

    port = default_port(command[0])
    assert port not in MAIL_CATCHER_PORTS
    assert port != default_port({"serve": "preview", "preview": "serve"}[command[0]])


def test_serve_on_an_ipv6_address_prints_a_url_that_works(tmp_path: Path, monkeypatch) -> None:
    """`serve --host ::1`: the address in the printed URL is in brackets (http://[::1]:N/...),
    as a browser or curl needs it."""
    import socket

    import newsletter.serve
    from tests.compose_helpers import run

    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    monkeypatch.setattr(newsletter.serve, "run_unsubscribe", lambda *a, sock, **_: sock.close())
    result = run("serve", "--host", "::1", "--port", "0")
    assert result.exit_code == 0, result.output
    assert "unsubscribe endpoint at http://[::1]:" in result.output


def test_preview_without_a_browser_prints_only_the_path_on_stdout(
    tmp_path: Path, monkeypatch
) -> None:
    """`preview` where no browser opens: stdout holds the file's path alone (a script may open
    it); the note that no browser was found goes to stderr."""
    import webbrowser

    from tests.compose_helpers import run

    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    write(tmp_path / "issues" / "x.toml", ISSUE.format(body="x"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    result = run("preview", "issues/x.toml")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "build" / "x.html")]
    assert "no browser found" in result.stderr


def test_a_port_in_use_on_an_ipv6_address_is_named_in_brackets(tmp_path: Path, monkeypatch) -> None:
    """The one line for a taken port writes an IPv6 address as [::1]:N, not ::1:N (which reads
    as an address with no port)."""
    import socket

    from tests.compose_helpers import run

    try:
        holder = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    with holder:
        port = holder.getsockname()[1]
        result = run("serve", "--host", "::1", "--port", str(port))
    assert result.exit_code == 1
    assert f"error: [::1]:{port}: cannot listen: port {port} is in use" in result.output

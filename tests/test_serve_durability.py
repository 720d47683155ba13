"""`serve` never drops an unsubscribe: a list it cannot read or write still yields a durable
suppression entry and a 200; only a suppression file it cannot write yields a 503.

The failures are real, and real for root too (tests may run as root, which ignores file modes):
immutable files and folders (chattr +i, or chmod when not root), a lock file that is a folder,
a file size limit (RLIMIT_FSIZE) standing in for a full disk, broken CSV.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.errors import InvalidInput
from newsletter.serve import unsubscribe_app
from newsletter.subscribers import read_list, select, suppressed_path
from newsletter.tokens import make_token
from tests.serve_helpers import SECRET, make_folder, running, write_list
from tests.test_serve import _wait_until_up, free_port

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"
ADA = "ada@example.org"
ADA_DIGEST = hashlib.sha256(ADA.encode()).hexdigest()
BIG = "x" * (200 * 1024)  # over the csv module's 128 KiB field limit


@dataclass
class Site:
    root: Path
    main: Path  # holds ada, zofia, jurgen
    events: Path  # holds ada, bob: the list the tests break

    def token(self, email: str = ADA) -> str:
        return make_token(SECRET, load_config(explicit=self.root).list_id, email)

    def suppressed(self) -> str:
        path = suppressed_path(self.root)
        return path.read_text() if path.is_file() else ""


@pytest.fixture
def site(tmp_path: Path) -> Site:
    root = make_folder(tmp_path)
    folder = root / "subscribers"
    main = write_list(folder / "main.csv", [ADA, "zofia@example.net", "jurgen@example.com"])
    events = write_list(folder / "events.csv", [ADA, "bob@example.org"])
    return Site(root, main, events)


def post(site: Site, email: str = ADA) -> httpx.Response:
    config = load_config(explicit=site.root)
    with running(unsubscribe_app(config, SECRET)) as url:
        link = f"{url}/unsubscribe/{site.token(email)}"
        return httpx.post(link, headers=FORM, content=ONE_CLICK, timeout=10)


def statuses(path: Path) -> dict[str, str]:
    return {p.email: p.status for p in read_list(path)}


# ---------------------------------------------------------------------------------------------
# Ways to break a list for real


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """No process may change `path` (or, for a folder, its entries); root included."""
    if os.geteuid() != 0:  # a mode is enough; a file unreadable, as one may not replace it
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o000)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def header_field_too_long(site: Site) -> contextlib.AbstractContextManager[None]:
    site.events.write_text(f"email,{BIG}\r\n{ADA},Ada\r\n")
    return contextlib.nullcontext()


def header_without_email(site: Site) -> contextlib.AbstractContextManager[None]:
    site.events.write_text(f"address,name\r\n{ADA},Ada\r\n")
    return contextlib.nullcontext()


def row_field_too_long(site: Site) -> contextlib.AbstractContextManager[None]:
    site.events.write_text(f"email,name\r\n{ADA},Ada\r\nbob@example.org,{BIG}\r\n")
    return contextlib.nullcontext()


def row_not_utf8(site: Site) -> contextlib.AbstractContextManager[None]:
    site.events.write_bytes(f"email,name\r\n{ADA},Ada\r\nbob@example.org,".encode() + b"\xff\r\n")
    return contextlib.nullcontext()


def lock_is_a_folder(site: Site) -> contextlib.AbstractContextManager[None]:
    (site.events.parent / f".{site.events.name}.lock").mkdir()
    return contextlib.nullcontext()


def list_file_read_only(site: Site) -> contextlib.AbstractContextManager[None]:
    return immutable(site.events)


BREAKAGES: list[Callable[[Site], contextlib.AbstractContextManager[None]]] = [
    header_field_too_long,
    header_without_email,
    row_field_too_long,
    row_not_utf8,
    lock_is_a_folder,
    list_file_read_only,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__)
def test_a_broken_list_still_records_the_unsubscribe(
    site: Site, breakage: Callable[[Site], contextlib.AbstractContextManager[None]], caplog
) -> None:
    """200, the healthy list changed, the suppression file holds the digest, the log says why."""
    with caplog.at_level(logging.INFO, logger="newsletter.serve"), breakage(site):
        before = site.events.read_bytes()
        answer = post(site)
        assert site.events.read_bytes() == before
    assert answer.status_code == 200
    assert "You are unsubscribed" in answer.text
    assert statuses(site.main)[ADA] == "unsubscribed"
    assert ADA_DIGEST in site.suppressed()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "events.csv" in warnings[0] and ADA_DIGEST in warnings[0]
    assert "ada@" not in caplog.text.lower()


def test_a_list_linked_to_a_missing_file_still_records_the_unsubscribe(site: Site, caplog) -> None:
    """A list that is a link to a file not there now (a disk not mounted) is a list that cannot
    be read, not one to skip: the suppression file takes the address, the log names the list,
    and the link is left as it is for when its file is back."""
    target = site.root / "elsewhere" / "events.csv"
    site.events.unlink()
    site.events.symlink_to(target)
    with caplog.at_level(logging.INFO, logger="newsletter.serve"):
        answer = post(site)
    assert answer.status_code == 200
    assert statuses(site.main)[ADA] == "unsubscribed"
    assert ADA_DIGEST in site.suppressed()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "events.csv" in warnings[0]
    assert site.events.is_symlink() and not target.exists()


def test_a_read_only_subscribers_folder_still_records_the_unsubscribe(site: Site, caplog) -> None:
    """No list can be written at all: 200 and the suppression entry; both lists are named."""
    with caplog.at_level(logging.WARNING, logger="newsletter.serve"), immutable(site.main.parent):
        answer = post(site)
    assert answer.status_code == 200
    assert statuses(site.main)[ADA] == statuses(site.events)[ADA] == "subscribed"
    assert ADA_DIGEST in site.suppressed()
    assert "main.csv" in caplog.text and "events.csv" in caplog.text
    assert "ada@" not in caplog.text.lower()


def test_a_suppression_entry_blocks_the_next_send(site: Site) -> None:
    """The lists still say subscribed, but the next selection leaves the address out."""
    lock_is_a_folder(site)
    assert post(site).status_code == 200
    assert statuses(site.events)[ADA] == "subscribed"
    selection = select(site.root)
    assert ADA not in [person.email for person in selection]
    assert selection.left_out.get("suppressed") == 1  # the row in events.csv


def test_subscribers_commands_show_the_suppressed_row(site: Site) -> None:
    """`subscribers list` shows the row as suppressed, `stats` counts it as held back."""
    lock_is_a_folder(site)
    assert post(site).status_code == 200
    listed = CliRunner().invoke(app, ["--config", str(site.root), "subscribers", "list"])
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[2] for row in rows if row[0] == ADA] == [
        "suppressed",
        "unsubscribed",
    ]  # events, main
    counted = CliRunner().invoke(app, ["--config", str(site.root), "subscribers", "stats"])
    assert "subscribed rows held back by the suppression file: 1" in counted.stdout


# ---------------------------------------------------------------------------------------------
# When even the suppression file cannot be written: 503, and no claim of success


def state_folder_is_a_file(site: Site) -> contextlib.AbstractContextManager[None]:
    (site.root / ".newsletter").write_text("not a folder\n")
    return contextlib.nullcontext()


def suppression_file_read_only(site: Site) -> contextlib.AbstractContextManager[None]:
    suppressed_path(site.root).parent.mkdir()
    suppressed_path(site.root).write_text("# sha256 of an address key, then why\n")
    return immutable(suppressed_path(site.root))


@pytest.mark.parametrize(
    "state", [state_folder_is_a_file, suppression_file_read_only], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("email", [ADA, "stranger@example.org"], ids=["broken-list", "no-list"])
def test_no_durable_record_answers_503(site: Site, state, email: str, caplog) -> None:
    """A broken list (or no list) and an unwritable suppression file: 503 + Retry-After."""
    lock_is_a_folder(site)
    with caplog.at_level(logging.INFO, logger="newsletter.serve"), state(site):
        answer = post(site, email)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "60"
    assert "unsubscribed" not in answer.text.lower()
    assert ADA_DIGEST not in site.suppressed()
    digest = hashlib.sha256(email.encode()).hexdigest()
    assert "NOT recorded" in caplog.text and digest in caplog.text
    assert email.split("@")[0] + "@" not in caplog.text


# ---------------------------------------------------------------------------------------------
# A full disk: the real `newsletter serve` under a file size limit (EFBIG, as ENOSPC would)


LIMITED = (  # RLIMIT_FSIZE, then exec: no preexec_fn (fork in a threaded process)
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_a_full_disk_for_the_list_still_records_the_unsubscribe(site: Site) -> None:
    """A list rewrite that cannot fit (EFBIG) leaves the list intact; the small entry fits."""
    write_list(site.events, [ADA] + [f"reader{n}@example.org" for n in range(40)])
    assert site.events.stat().st_size > 2048
    before = site.events.read_bytes()
    port = free_port()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET.decode()}
    command = [sys.executable, "-c", LIMITED, "-m", "newsletter", "--config", str(site.root)]
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        link = f"http://127.0.0.1:{port}/unsubscribe/{site.token()}"
        _wait_until_up(link, server)
        answer = httpx.post(link, headers=FORM, content=ONE_CLICK, timeout=10)
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=20)
    assert answer.status_code == 200
    assert site.events.read_bytes() == before
    assert not [p for p in site.events.parent.iterdir() if p.name.endswith(".tmp")]
    assert statuses(site.main)[ADA] == "unsubscribed"
    assert ADA_DIGEST in site.suppressed()
    assert "events.csv" in err and "file-size limit is reached" in err and "ada@" not in err


def test_cli_unsubscribe_with_an_unwritable_list_records_it_anyway(site: Site) -> None:
    """The shared mechanism: `subscribers unsubscribe` names the list and records the address."""
    lock_is_a_folder(site)
    done = CliRunner().invoke(app, ["--config", str(site.root), "subscribers", "unsubscribe", ADA])
    assert done.exit_code == 1
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert f"{site.events}: {site.events.parent / ('.' + site.events.name)}.lock: " in done.stderr
    assert "a folder is where a file is needed" in done.stderr
    assert f"{ADA}: recorded as unsubscribed anyway" in done.stderr
    assert ADA_DIGEST in site.suppressed()
    assert statuses(site.main)[ADA] == "unsubscribed"


def test_a_damaged_suppression_file_still_takes_the_entry(site: Site) -> None:
    """Blank, damaged and unterminated lines (hand edits): the entry is still written on a line
    of its own, and a send then refuses naming the damaged line instead of guessing."""
    bob = hashlib.sha256(b"bob@example.org").hexdigest()
    suppressed_path(site.root).parent.mkdir()
    suppressed_path(site.root).write_text(f"# entries\n   \nnot-a-digest x\n{bob} unsubscribed")
    assert post(site, "stranger@example.org").status_code == 200
    lines = suppressed_path(site.root).read_text().splitlines()
    stranger = hashlib.sha256(b"stranger@example.org").hexdigest()
    assert lines[3:] == [f"{bob} unsubscribed", f"{stranger} unsubscribed"]
    with pytest.raises(InvalidInput) as refused:
        list(select(site.root))
    assert str(refused.value).startswith(f"{suppressed_path(site.root)}:3: not an entry")


def test_a_cr_only_list_never_loses_the_unsubscribe(site: Site) -> None:
    """An old Mac export (CR line ends): read or refused, the address stops getting mail."""
    site.events.write_bytes(f"email,name\r{ADA},Ada\rbob@example.org,Bob\r".encode())
    assert post(site).status_code == 200
    assert statuses(site.main)[ADA] == "unsubscribed"  # that alone blocks it everywhere
    events = site.events.read_bytes()
    assert ADA_DIGEST in site.suppressed() or b"unsubscribed" in events

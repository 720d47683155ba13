"""A throwaway PostgreSQL cluster for the store's tests (Debian's postgresql-15 binaries).

`initdb` once per session and per xdist worker, in a temporary folder, listening on a unix
socket in that folder and on a loopback port; each test gets a database of its own. Run as the
unprivileged user `nobody` when the tests run as root (PostgreSQL refuses root). fsync is off:
these tests are about what the senders record, not about surviving a power loss (a stopped or
crashed server keeps every commit: the OS has them; synchronous_commit stays on).

With the binaries absent the tests fail (`.ci/run` installs them), never skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(os.environ.get("NEWSLETTER_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "newsletter"
PASSWORD = "pg-test-password"  # noqa: S105  # a throwaway cluster's, for the password tests
RUN_AS = "nobody"  # the unprivileged user a root test run starts the server as


class Cluster:
    """One PostgreSQL server in `folder`: a unix socket there and `port` on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = _free_port()
        self._names = itertools.count(1)

    # -- life ------------------------------------------------------------------------------

    def init(self) -> Cluster:
        pwfile = self.folder / "pwfile"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        _hand_over(self.folder, pwfile)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
            "--locale=C.UTF-8",
        )  # fmt: skip
        pwfile.unlink()
        return self

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.folder} -c fsync=off "
            "-c full_page_writes=off -c max_connections=100"
        )
        log = self.folder / "server.log"
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-o", options, "-l", str(log))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as if it crashed; clients see the link break)."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, tcp: bool = False, password: bool = False) -> str:
        """A URL of a database here: the unix socket (trusted), or the port (a password is
        asked; in the URL with `password`)."""
        if tcp:
            secret = f":{PASSWORD}" if password else ""
            return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{dbname}"
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.folder}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return name

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement.encode())

    def _run(self, program: str, *args: str) -> None:
        command = [str(BIN / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"{program} {' '.join(args[:2])} failed: {done.stderr.strip()}\n{tail}")


def make_cluster() -> Cluster:
    """A new cluster, started; fails (not skips) without the server binaries."""
    if not (BIN / "initdb").is_file() or not (BIN / "pg_ctl").is_file():
        pytest.fail(
            f"the PostgreSQL server binaries are not in {BIN}: install them "
            "(apt-get install postgresql-15) or set NEWSLETTER_PG_BIN; `.ci/run` does"
        )
    folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))  # /tmp: reachable by RUN_AS
    cluster = Cluster(folder).init()
    cluster.start()
    return cluster


def _hand_over(*paths: Path) -> None:
    """Give the folder to the unprivileged user the server runs as (root runs only)."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(RUN_AS)
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's cluster (one per xdist worker), stopped and removed at the end."""
    cluster = make_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a new, empty database of the session's cluster (not migrated)."""
    return pg_cluster.url(pg_cluster.create_database())

"""The PostgreSQL store's foundation (issue 12): [store] url, `store migrate`, `store check`,
clear errors without a driver, a server or the right schema, and nothing loaded without it."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.config import load_config
from newsletter.errors import ConfigError, StoreSchemaMismatch, StoreUnavailable
from newsletter.pg.connection import connect, where
from newsletter.pg.migrations import LATEST, MIGRATIONS, migrate, require_current
from tests.pgcluster import PASSWORD, Cluster
from tests.send_helpers import ISSUE, REPO, make_folder, run


def store_env(url: str, **extra: str) -> dict[str, str]:
    return {"NEWSLETTER_STORE_URL": url, **extra}


def test_migrate_creates_the_schema_and_a_second_run_does_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """`store migrate` on an empty database brings it to the latest version; again: no-op."""
    folder = make_folder(tmp_path, 1)
    first = run(folder, "store", "migrate", env=store_env(pg_url))
    assert first.returncode == 0, first.stderr
    assert f"schema version 0 -> {LATEST}" in first.stderr
    again = run(folder, "store", "migrate", env=store_env(pg_url))
    assert again.returncode == 0, again.stderr
    assert f"schema version {LATEST}, nothing to do" in again.stderr
    with connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == [number for number, _ in MIGRATIONS]


def test_concurrent_migrations_take_turns(pg_url: str) -> None:
    """Several migrations at once (several machines): each succeeds, the schema once."""
    results: list[tuple[int, int] | BaseException] = []

    def one() -> None:
        try:
            with connect(pg_url) as conn:
                results.append(migrate(conn, where(pg_url)))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(0, LATEST)] + [(LATEST, LATEST)] * 3  # type: ignore[type-var]  # tuples


def test_check_before_migrate_says_to_migrate(tmp_path: Path, pg_url: str) -> None:
    """`store check` on a store never migrated: its version, exit 1, and the command to run."""
    folder = make_folder(tmp_path, 1)
    shown = run(folder, "store", "check", env=store_env(pg_url))
    assert shown.returncode == 1
    assert f"schema version: 0 (this newsletter: {LATEST})" in shown.stdout
    assert "run `newsletter store migrate`" in shown.stderr


def test_check_of_a_newer_store_says_to_upgrade(tmp_path: Path, pg_url: str) -> None:
    """`store check` on a store a newer newsletter migrated: exit 1, and the advice is to
    upgrade this newsletter (`store migrate` would refuse it)."""
    folder = make_folder(tmp_path, 1)
    with connect(pg_url) as conn:
        migrate(conn, "here")
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (LATEST + 1,))
        conn.commit()
    shown = run(folder, "store", "check", env=store_env(pg_url))
    assert shown.returncode == 1
    assert "upgrade this one" in shown.stderr
    assert "store migrate" not in shown.stderr


def test_check_shows_version_and_counts(tmp_path: Path, pg_url: str) -> None:
    """After migrate, `store check --json`: where, the version, the counts, nothing running."""
    folder = make_folder(tmp_path, 1)
    assert run(folder, "store", "migrate", env=store_env(pg_url)).returncode == 0
    shown = run(folder, "store", "check", "--json", env=store_env(pg_url))
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["version"] == doc["expected"] == LATEST
    assert doc["counts"]["sends"] == 0
    assert doc["running"] == []
    assert doc["where"].endswith(f"/{pg_url.split('/')[3].split('?')[0]}")


def test_a_store_at_another_version_is_refused(pg_url: str) -> None:
    """A store at an older (or newer) version than this newsletter's is refused, saying what
    to do."""
    with connect(pg_url) as conn:
        with pytest.raises(StoreSchemaMismatch, match="run `newsletter store migrate`"):
            require_current(conn, "here")
        migrate(conn, "here")
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (LATEST + 1,))
        conn.commit()
        with pytest.raises(StoreSchemaMismatch, match="upgrade this one"):
            require_current(conn, "here")


def test_unreachable_store_is_one_clear_line_without_the_password(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """A URL nobody answers at: exit 6, one line naming host, port and database; the
    password in the URL is never printed."""
    folder = make_folder(tmp_path, 1)
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/lists?connect_timeout=5"
    shown = run(folder, "store", "check", env=store_env(url))
    assert shown.returncode == StoreUnavailable.exit_code == 6
    assert "the store at 127.0.0.1:1/lists: cannot connect:" in shown.stderr
    assert PASSWORD not in shown.stderr + shown.stdout
    assert "Traceback" not in shown.stderr


def test_wrong_password_names_the_server_not_the_password(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """A refused login: exit 6, the reason from the server, never the password given."""
    folder = make_folder(tmp_path, 1)
    url = pg_cluster.url("postgres", tcp=True).replace("@", ":not-the-password@")
    shown = run(folder, "store", "check", env=store_env(url))
    assert shown.returncode == 6
    assert "password authentication failed" in shown.stderr
    assert "not-the-password" not in shown.stderr + shown.stdout


@pytest.mark.parametrize("source", ["url", "PGPASSWORD", "pgpass"])
def test_the_password_comes_from_the_url_pgpassword_or_pgpass(
    tmp_path: Path, pg_cluster: Cluster, source: str
) -> None:
    """Over TCP the cluster asks for a password: libpq's three places each work."""
    folder = make_folder(tmp_path, 1)
    env = store_env(pg_cluster.url("postgres", tcp=True, password=source == "url"))
    if source == "PGPASSWORD":
        env["PGPASSWORD"] = PASSWORD
    if source == "pgpass":
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:{pg_cluster.port}:*:newsletter:{PASSWORD}\n")
        pgpass.chmod(0o600)
        env["PGPASSFILE"] = str(pgpass)
    shown = run(folder, "store", "migrate", env=env)
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stderr + shown.stdout


def refused_in_the_file(folder: Path, url: str) -> Path:
    """`url` written as [store] url in the folder's newsletter.toml is refused, without its
    password (s3cret...); the file."""
    toml = folder / "newsletter.toml"
    toml.write_text(toml.read_text() + f'\n[store]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(folder, environ={})
    assert "NEWSLETTER_STORE_URL, PGPASSWORD or ~/.pgpass" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    return toml


def test_a_password_in_the_files_store_url_is_refused(tmp_path: Path) -> None:
    """newsletter.toml is committed: a [store] url with a password is a located error; the
    same URL in NEWSLETTER_STORE_URL is accepted."""
    folder = make_folder(tmp_path, 1)
    url = "postgresql://news:s3cret@db.example.org/news"
    toml = refused_in_the_file(folder, url)
    toml.write_text(toml.read_text().replace(f'url = "{url}"', 'url = ""'))
    config = load_config(folder, environ={"NEWSLETTER_STORE_URL": url})
    assert config.store.url == url


def test_a_store_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    """[store] url must be a PostgreSQL URL; the message shows it masked."""
    folder = make_folder(tmp_path, 1)
    with pytest.raises(ConfigError) as caught:
        load_config(folder, environ={"NEWSLETTER_STORE_URL": "mysql://u:pw@h/db"})
    assert "NEWSLETTER_STORE_URL" in str(caught.value)
    assert "mysql://u:***@h/db" in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_a_key_value_store_url_is_refused_without_its_password(tmp_path: Path) -> None:
    """libpq's `key=value` form is not a URL: refused, and the message never shows the
    password it carries (quoted or not)."""
    folder = make_folder(tmp_path, 1)
    for value in ("host=db user=news password=s3cret dbname=news", "password = 's3 cret'"):
        with pytest.raises(ConfigError) as caught:
            load_config(folder, environ={"NEWSLETTER_STORE_URL": value})
        assert "is not a PostgreSQL URL" in str(caught.value)
        assert "s3" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://news:s3cret-pw@[::1/news",  # libpq quotes a URL it cannot parse
        "postgresql://news@[::1/news?password=s3cret-pw",
    ],
)
def test_a_url_libpq_cannot_parse_is_refused_without_its_password(tmp_path: Path, url: str) -> None:
    """libpq quotes the whole URL in its error: the password is masked there too."""
    folder = make_folder(tmp_path, 1)
    shown = run(folder, "store", "check", env=store_env(url))
    assert shown.returncode == StoreUnavailable.exit_code
    assert "s3cret-pw" not in shown.stderr + shown.stdout
    assert "Traceback" not in shown.stderr


@pytest.mark.parametrize("secret", ["ab/cd-s3cret", "ab?cd-s3cret", "ab#cd-s3cret"])
def test_a_password_with_a_url_delimiter_is_never_shown(tmp_path: Path, secret: str) -> None:
    """A password pasted into the URL without percent-encoding its `/`, `?` or `#`: wherever
    libpq and our messages then split the URL, no part of it is shown; in the committed file,
    the URL is refused as one with a password."""
    folder = make_folder(tmp_path, 1)
    url = f"postgresql://someone:{secret}@127.0.0.1:1/lists?connect_timeout=5"
    shown = run(folder, "store", "check", env=store_env(url))
    assert shown.returncode == StoreUnavailable.exit_code
    assert "s3cret" not in shown.stderr + shown.stdout
    refused_in_the_file(folder, url)


def test_without_the_driver_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    """[store] url set, psycopg not installed: one line with the pip command, exit 1."""
    folder = make_folder(tmp_path, 1)
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from newsletter.cli import main\n"
        "sys.argv = ['newsletter', 'store', 'check']\n"
        "main()\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env={"NEWSLETTER_STORE_URL": "postgresql://u:pw@h/db", "PYTHONPATH": str(REPO),
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert shown.returncode == 1, shown.stderr
    assert "pip install 'newsletter[postgres]'" in shown.stderr
    assert "postgresql://u:***@h/db" in shown.stderr


def test_without_a_store_nothing_loads_psycopg(tmp_path: Path) -> None:
    """The embedded default never imports psycopg nor newsletter.pg: the package, the CLI
    and a whole send to the outbox."""
    folder = make_folder(tmp_path, 2)
    script = (
        "import sys, newsletter, newsletter.api\n"
        "from newsletter.cli import main\n"
        f"sys.argv = ['newsletter', 'send', {ISSUE!r}, '--yes']\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('psycopg', 'newsletter.pg')))\n"
        "print(loaded)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env={"NEWSLETTER_SECRET": "x" * 40, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "[]"


def test_a_store_connection_is_a_real_one(pg_url: str) -> None:
    """The fixture's database answers (the cluster runs as an unprivileged user)."""
    with psycopg.connect(pg_url) as conn:
        user = conn.execute("SELECT current_user").fetchone()
    assert user == ("newsletter",)


def test_without_the_server_binaries_the_store_tests_fail_not_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/pgcluster.py with no initdb/pg_ctl: a failure that says what to install."""
    import tests.pgcluster

    monkeypatch.setattr(tests.pgcluster, "BIN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql-15"):
        tests.pgcluster.make_cluster()


def test_serve_started_with_the_store_down_is_restarted_by_the_documented_unit(
    tmp_path: Path,
) -> None:
    """`serve` refuses to start while the store cannot be reached (exit 6): the systemd unit
    of docs/deployment.md must then start it again until the store is back, never give up
    after systemd's default five quick failures (a web host booting before its database)."""
    import configparser
    import re

    folder = make_folder(tmp_path, 1)
    url = "postgresql://someone@127.0.0.1:1/lists?connect_timeout=5"
    shown = run(folder, "serve", "--port", "0", env=store_env(url))
    assert shown.returncode == StoreUnavailable.exit_code
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    [unit] = re.findall(r"```ini\n(.*?)```", text, flags=re.DOTALL)
    parsed = configparser.ConfigParser(strict=False)
    parsed.read_string(unit)
    assert parsed["Service"]["Restart"] in ("on-failure", "always")
    assert float(parsed["Service"]["RestartSec"].rstrip("s")) >= 1
    assert parsed["Unit"]["StartLimitIntervalSec"] == "0"


@given(st.text(alphabet=string.ascii_letters + string.digits + "/?#@:&%!$*+,;", min_size=1))
def test_masked_never_shows_a_url_password(password: str) -> None:
    """Whatever a pasted password holds, masked() hides it and has_password() sees it (but
    `/` then `?key=value`: that reads as a path and a query, as a reader would read it)."""
    from newsletter.urls import has_password, masked

    url = f"postgresql://news:{password}@db.example.org:5432/news"
    shown = masked(url)
    assert shown == "postgresql://news:***@db.example.org:5432/news"
    assert has_password(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://news@db.example.org/news?sslpassword=k3y-s3cret",
        "postgresql://news@db.example.org/news?sslmode=verify-full&SSLPASSWORD=k3y-s3cret",
        "host=db.example.org user=news sslpassword=k3y-s3cret",
    ],
)
def test_an_ssl_key_passphrase_is_a_password_too(url: str) -> None:
    """`sslpassword` (the passphrase of the client's key) is a secret as `password` is: masked
    wherever a URL is shown, and refused in the committed newsletter.toml."""
    from newsletter.pg.connection import scrub
    from newsletter.urls import has_password, masked

    assert "k3y-s3cret" not in masked(url)
    assert has_password(url)
    if "://" in url:  # the key=value form is refused before libpq ever sees it
        assert "k3y-s3cret" not in scrub(f"libpq quoted {url} whole", url)

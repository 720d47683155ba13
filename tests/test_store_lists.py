"""The subscriber side of the PostgreSQL store (issue 12): named lists imported into the store,
`serve` on the store from a folder with nothing but newsletter.toml, a send that selects from
the store, export in the CSV format, the consent rules, purge and all-or-nothing imports.

Every test runs against a real throwaway cluster (tests/pgcluster.py)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import mailbox
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from newsletter.addresses import address_key, key_hash
from newsletter.config import load_config
from newsletter.errors import Refused
from newsletter.pg.lists import PgStore
from newsletter.pg.rows import khash
from newsletter.serve import endpoint_secret, route_prefix
from newsletter.store import Bounce
from newsletter.tokens import make_token
from tests.pgcluster import _free_port
from tests.send_helpers import ISSUE, REPO, TEST_SECRET, command, env_for, make_folder, run
from tests.waits import HANG, wait_until

EXAMPLE = REPO / "subscribers" / "example.csv"
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def store_env(url: str) -> dict[str, str]:
    return {"NEWSLETTER_STORE_URL": url}


def migrated(tmp_path: Path, pg_url: str, people: int = 1) -> Path:
    """A sending folder (its own subscribers/ holds `people` readers the store does not have)
    whose store is migrated."""
    folder = make_folder(tmp_path, people)
    done = run(folder, "store", "migrate", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    return folder


def excel_export(path: Path, emails: list[str]) -> Path:
    """A list as European Excel saves it: a BOM, semicolons, CRLF, a quoted `;` in a name."""
    rows = ["email;name;status;city"] + [
        f'{e};"Name; {i}";subscribed;Köln' for i, e in enumerate(emails)
    ]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    return path


def statuses(url: str) -> dict[tuple[str, str], str]:
    """(list, email) -> status, read on a new connection (what is committed)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT l.name, s.email, s.status FROM subscribers s JOIN lists l ON l.id = s.list_id"
        ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def every_row(url: str) -> str:
    """Every row of every table of the store, as text."""
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        return "\n".join(
            f"{table}: {row}"
            for table in sorted(tables)
            for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        )


def export(folder: Path, *args: str, env: dict[str, str] | None = None) -> bytes:
    """`newsletter subscribers export ARGS`: its stdout as bytes (line ends as written)."""
    done = subprocess.run(
        command(folder, "subscribers", "export", *args),
        cwd=folder,
        env=env_for(env),
        capture_output=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def outbox(folder: Path) -> list[str]:
    return sorted(str(m["To"]) for m in mailbox.Maildir(folder / "outbox", create=False))


@contextlib.contextmanager
def serving(folder: Path, url: str) -> Iterator[str]:
    """`newsletter serve` in `folder` on a free port; its base URL with the route prefix."""
    port = _free_port()
    process = subprocess.Popen(
        command(folder, "serve", "--port", str(port)),
        cwd=folder,
        env=env_for(store_env(url)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    prefix = route_prefix(load_config(folder).newsletter.base_url)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/", timeout=5).status_code > 0
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, "serve listening", alive=lambda: process.poll() is None, stall=HANG)
        yield base + prefix
    finally:
        process.terminate()
        process.wait(HANG)
        assert process.stderr is not None
        process.stderr.close()


def link(folder: Path, base: str, email: str) -> str:
    config = load_config(folder)
    key = endpoint_secret(config, {"NEWSLETTER_SECRET": TEST_SECRET})
    return f"{base}/unsubscribe/{make_token(key, config.list_id, email)}"


def test_import_then_serve_and_send_on_the_store(tmp_path: Path, pg_url: str) -> None:
    """Issue 12, test 1: the sample list and an Excel export imported; `serve` on the store in a
    folder with only newsletter.toml: GET inert, POST unsubscribes (committed before the 200),
    a forged link 400; a later send selects from the store and leaves the person out."""
    folder = migrated(tmp_path, pg_url)
    excel = excel_export(tmp_path / "excel.csv", ["ana@example.org", "ben@example.org"])
    for source, name in ((EXAMPLE, "news"), (excel, "members")):
        done = run(
            folder, "subscribers", "import", str(source), "--into", name, env=store_env(pg_url)
        )
        assert done.returncode == 0, done.stderr
    assert statuses(pg_url)[("members", "ana@example.org")] == "subscribed"
    web = tmp_path / "web"
    web.mkdir()
    shutil.copy(folder / "newsletter.toml", web / "newsletter.toml")

    with serving(web, pg_url) as base:
        target = link(web, base, "ada@example.org")
        assert httpx.get(target, timeout=10).status_code == 200
        assert statuses(pg_url)[("news", "ada@example.org")] == "subscribed"
        answer = httpx.post(target, content=ONE_CLICK, headers=FORM, timeout=10)
        assert answer.status_code == 200
        assert statuses(pg_url)[("news", "ada@example.org")] == "unsubscribed"
        forged = target[:-3] + ("AAA" if not target.endswith("AAA") else "BBB")
        assert httpx.post(forged, content=ONE_CLICK, headers=FORM, timeout=10).status_code == 400
    assert sorted(p.name for p in web.iterdir()) == ["newsletter.toml"]

    sent = run(folder, "send", ISSUE, "--yes", env=store_env(pg_url))
    assert sent.returncode == 0, sent.stderr
    got = outbox(folder)
    assert not any("ada@example.org" in to for to in got)
    assert not any("reader0@example.org" in to for to in got)  # the folder's subscribers/: unread
    assert any("ana@example.org" in to for to in got)
    assert any("zofia.wojcik@example.net" in to for to in got)


def test_send_with_list_names_a_store_list(tmp_path: Path, pg_url: str) -> None:
    """`send --list NAME` selects that list of the store only; a list it lacks is an error."""
    folder = migrated(tmp_path, pg_url)
    excel = excel_export(tmp_path / "excel.csv", ["ana@example.org"])
    for source, name in ((EXAMPLE, "news"), (excel, "members")):
        assert (
            run(
                folder, "subscribers", "import", str(source), "--into", name, env=store_env(pg_url)
            ).returncode
            == 0
        )
    missing = run(folder, "send", ISSUE, "--list", "nope", "--yes", env=store_env(pg_url))
    assert missing.returncode != 0
    assert "no list named 'nope'" in missing.stderr
    sent = run(folder, "send", ISSUE, "--list", "members", "--yes", env=store_env(pg_url))
    assert sent.returncode == 0, sent.stderr
    assert [to for to in outbox(folder) if "@" in to] and all(
        "ana@example.org" in to for to in outbox(folder)
    )


def test_concurrent_unsubscribes_from_several_clients_all_commit(
    tmp_path: Path, pg_url: str
) -> None:
    """Forty one-click unsubscribes from eight clients at once: every one is committed."""
    folder = migrated(tmp_path, pg_url)
    people = [f"p{i}@example.org" for i in range(40)]
    source = tmp_path / "people.csv"
    source.write_text("email\n" + "\n".join(people) + "\n", encoding="utf-8")
    assert (
        run(
            folder, "subscribers", "import", str(source), "--into", "news", env=store_env(pg_url)
        ).returncode
        == 0
    )
    answers: list[int] = []

    with serving(folder, pg_url) as base:

        def client(mine: list[str]) -> None:
            with httpx.Client(timeout=HANG) as http:
                for email in mine:
                    answers.append(
                        http.post(
                            link(folder, base, email), content=ONE_CLICK, headers=FORM
                        ).status_code
                    )

        threads = [threading.Thread(target=client, args=(people[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == [200] * 40
    assert set(statuses(pg_url).values()) == {"unsubscribed"}


def test_purge_leaves_no_row_with_the_address(tmp_path: Path, pg_url: str) -> None:
    """After purge, no table of the store holds the address (its history, its rows in two
    lists, a send's record); only the digest of the suppression entry stays, and a later
    import cannot bring the person back."""
    folder = migrated(tmp_path, pg_url)
    env = store_env(pg_url)
    assert (
        run(folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=env).returncode
        == 0
    )
    assert run(folder, "subscribers", "unsubscribe", "Ada@Example.org", env=env).returncode == 0
    assert (
        run(
            folder,
            "subscribers",
            "add",
            "ada@example.org",
            "--list",
            "other",
            "--resubscribe",
            env=env,
        ).returncode
        == 0
    )
    with psycopg.connect(pg_url) as conn:  # a send's record of her, as a sender writes it
        send = conn.execute(
            "INSERT INTO sends (slug, destination, digest) VALUES ('x', 'outbox', 'd') RETURNING id"
        ).fetchone()
        assert send is not None
        conn.execute(
            "INSERT INTO send_recipients (send_id, id, khash, email, name, state, reply)"
            " VALUES (%s, 1, %s, 'ada@example.org', 'Ada Lovelace', 2, '250 ok <ada@example.org>')",
            (send[0], khash("ada@example.org")),
        )
    people = PgStore(pg_url, folder)
    people.record_consent("ada@example.org", list_name="news", source="web form", text="Yes",
                          at="2024-01-01T00:00:00Z", confirmed_at="")  # fmt: skip
    people.soft_bounce("ada@example.org", issue="x", status="4.2.2", at=dt.datetime.now(dt.UTC))
    people.close()
    assert "ada@example.org" in every_row(pg_url)
    purged = run(folder, "subscribers", "purge", "ada@example.org", "--yes", env=env)
    assert purged.returncode == 0, purged.stderr
    assert "deleted from news" in purged.stdout and "deleted from other" in purged.stdout
    left = every_row(pg_url).casefold()
    assert "ada@example.org" not in left and "lovelace" not in left
    again = run(folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=env)
    assert "ada@example.org is in the suppression list" in again.stderr
    assert ("news", "ada@example.org") not in statuses(pg_url)


def test_a_bad_import_leaves_the_store_unchanged(tmp_path: Path, pg_url: str) -> None:
    """Bad rows: each named file:line, exit non-zero, and not one row of the file is stored."""
    folder = migrated(tmp_path, pg_url)
    env = store_env(pg_url)
    assert (
        run(folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=env).returncode
        == 0
    )
    before = every_row(pg_url)
    bad = REPO / "tests" / "fixtures" / "subscribers" / "bad_rows.csv"
    for into in ("news", "fresh"):
        done = run(folder, "subscribers", "import", str(bad), "--into", into, env=env)
        assert done.returncode != 0
        assert f"{bad}:3: email:" in done.stderr
        assert f"nothing was written to {into}" in done.stderr
    many = tmp_path / "many.csv"  # past the first batch sent to the server, then a bad value
    rows = [f"r{i}@example.org,Reader {i},Paris" for i in range(1500)] + ["x@example.org,X,Lo\x00n"]
    many.write_text("email,name,city\n" + "\n".join(rows) + "\n", encoding="utf-8")
    done = run(folder, "subscribers", "import", str(many), "--into", "news", env=env)
    assert done.returncode != 0
    assert f"{many}:1502: city: a NUL character" in done.stderr
    assert every_row(pg_url) == before


@pytest.mark.parametrize("into", ["", ".", ".."])
def test_an_import_into_no_list_name_is_refused(tmp_path: Path, pg_url: str, into: str) -> None:
    """`--into ""` (an unset shell variable) names no list: refused, no list created (before,
    a list named "" was made, and every send without --list mailed it)."""
    folder = migrated(tmp_path, pg_url)
    done = run(folder, "subscribers", "import", str(EXAMPLE), "--into", into, env=store_env(pg_url))
    assert done.returncode == 1
    assert "is not a list name, such as news" in done.stderr
    assert "lists: " not in every_row(pg_url)


def test_export_then_import_into_a_fresh_store_gives_the_same_rows(
    tmp_path: Path, pg_cluster: object, pg_url: str
) -> None:
    """`export --list news > file`, imported into another store, exports byte for byte the same
    (the CSV format of docs/subscribers.md: UTF-8, CRLF, the lists' own columns kept)."""
    from tests.pgcluster import Cluster

    assert isinstance(pg_cluster, Cluster)
    folder = migrated(tmp_path, pg_url)
    env = store_env(pg_url)
    assert (
        run(folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=env).returncode
        == 0
    )
    first = export(folder, "--list", "news", env=env)
    assert first.startswith(b"email,name,status,tags,subscribed_at,unsubscribed_at,source,city\r\n")
    assert "Łódź".encode() in first
    snapshot = tmp_path / "snapshot.csv"
    snapshot.write_bytes(first)
    other = pg_cluster.url(pg_cluster.create_database())
    assert run(folder, "store", "migrate", env=store_env(other)).returncode == 0
    again = run(
        folder, "subscribers", "import", str(snapshot), "--into", "news", env=store_env(other)
    )
    assert again.returncode == 0, again.stderr
    assert export(folder, "--list", "news", env=store_env(other)) == first
    only = export(folder, "--status", "bounced", env=env)
    assert only.count(b"\r\n") == 2 and b"bounce@example.com" in only


def test_export_of_the_csv_lists(tmp_path: Path) -> None:
    """Without a store, `export` writes the folder's lists as one CSV list."""
    folder = make_folder(tmp_path, 2)
    shutil.copy(EXAMPLE, folder / "subscribers" / "example.csv")
    done = export(folder, "--list", "example")
    assert done.endswith(b"\r\n") and b"\r\n\r\n" not in done
    rows = list(csv.reader(io.StringIO(done.decode())))
    assert rows == list(csv.reader(io.StringIO(EXAMPLE.read_text(encoding="utf-8"))))
    every = export(folder)
    assert b"reader1@example.org" in every and b"ada@example.org" in every


def test_store_check_counts_lists_by_status(tmp_path: Path, pg_url: str) -> None:
    """`store check` shows the rows of each list by status and the suppression entries."""
    folder = migrated(tmp_path, pg_url)
    env = store_env(pg_url)
    assert (
        run(folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=env).returncode
        == 0
    )
    shown = run(folder, "store", "check", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "list news (subscribed): 8" in shown.stdout
    assert "list news (bounced): 1" in shown.stdout
    assert "subscriber rows: 10" in shown.stdout


# ---------------------------------------------------------------------------------------------
# The consent rules, on the store itself


@pytest.fixture
def store(tmp_path: Path, pg_url: str) -> Iterator[PgStore]:
    from newsletter.pg.connection import connect, where
    from newsletter.pg.migrations import migrate

    with connect(pg_url) as conn:
        migrate(conn, where(pg_url))
    found = PgStore(pg_url, tmp_path)
    yield found
    found.close()


def test_unsubscribed_anywhere_blocks_everywhere_unless_scoped(store: PgStore) -> None:
    """An unsubscribe in one list keeps the address out of every list's send; with
    scope_list only out of that list; add refuses them unless resubscribe."""
    store.add("a@example.org", list_path=Path("one"))
    store.add("a@example.org", list_path=Path("two"))
    store.set_status("a@example.org", "unsubscribed", lists=[Path("one")], scope_list=True)
    assert [s.email for s in store.select([Path("two")])] == ["a@example.org"]
    assert [s.email for s in store.select([Path("one")])] == []
    store.set_status("a@example.org", "unsubscribed", lists=[Path("two")])
    assert list(store.select(None)) == []
    with pytest.raises(Refused):
        store.add("a@example.org", list_path=Path("three"))
    store.add("a@example.org", list_path=Path("three"), resubscribe=True)
    assert [s.list_path for s in store.select(None)] == [Path("three")]


def test_a_suppression_only_gets_stronger(store: PgStore) -> None:
    """bounced is not weakened by a later unsubscribe; an unknown address is suppressed; a
    bounce before a re-subscription is not applied, and applying bounces twice changes nothing."""
    store.add("b@example.org")
    store.set_status("b@example.org", "bounced")
    change = store.set_status("b@example.org", "unsubscribed")
    assert change.changed == [] and change.held == [Path("subscribers")]
    assert store.lookup("b@example.org") is not None
    assert store.lookup("b@example.org").status == "bounced"  # type: ignore[union-attr]  # just checked
    assert store.set_status("nobody@example.org", "unsubscribed").suppressed
    with pytest.raises(Refused):
        store.add("nobody@example.org")
    store.add("c@example.org")
    assert [c.email for c in store.apply_bounces([Bounce("c@example.org", 0.0)])] == []
    assert [c.email for c in store.apply_bounces([Bounce("c@example.org", 4e9)])] == [
        "c@example.org"
    ]
    assert store.apply_bounces([Bounce("c@example.org", 4e9)]) == []


def test_watch_reports_each_unsubscribe_committed_since_the_last_call(store: PgStore) -> None:
    """Between batches: the blocks committed since the last call, nothing when none was."""
    for email in ("d@example.org", "e@example.org"):
        store.add(email, list_path=Path("news"))
    blocked = store.watch(store.select(None))
    assert blocked() == set()
    store.set_status("d@example.org", "unsubscribed")
    assert blocked() == {(key_hash(address_key("d@example.org")), "")}
    assert blocked() == set()
    store.set_status("e@example.org", "unsubscribed", lists=[Path("news")], scope_list=True)
    store.suppress("f@example.org", "complained")
    assert blocked() == {
        (key_hash(address_key("e@example.org")), "news"),
        (key_hash(address_key("f@example.org")), ""),
    }


def test_status_history_records_every_change_with_its_source(store: PgStore) -> None:
    """Every add and status change is a line of the person's history: list, status, source."""
    store.add("g@example.org", list_path=Path("news"))
    store.set_status("g@example.org", "unsubscribed", source="unsubscribe link")
    found = [
        (list_, status, source) for list_, status, _at, source in store.history("g@example.org")
    ]
    assert found == [("news", "subscribed", "cli"), ("news", "unsubscribed", "unsubscribe link")]


def test_consent_records_and_soft_bounces_are_kept_per_person(store: PgStore) -> None:
    """Consent records and soft bounces (people.sqlite's fields) are stored by address; the
    soft bounces counted within their window."""
    store.record_consent("h@example.org", list_name="news", source="web form", text="Yes, mail me",
                         at="2024-01-01T00:00:00Z", confirmed_at="")  # fmt: skip
    day = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    counts = [
        store.soft_bounce("h@example.org", issue="x", status="4.2.2", at=day + dt.timedelta(days=d))
        for d in (0, 10, 45)
    ]
    assert counts == [1, 2, 1]


def test_list_stats_and_unsubscribe_work_on_the_store(tmp_path: Path, pg_url: str) -> None:
    """`subscribers list`, `stats`, `add` and `unsubscribe --list X --only-this-list` act on
    the store's named lists, not on the folder's subscribers/."""
    folder = migrated(tmp_path, pg_url)
    env = store_env(pg_url)
    assert (
        run(folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=env).returncode
        == 0
    )
    added = run(folder, "subscribers", "add", "ada@example.org", "--list", "club", env=env)
    assert added.stdout == "added ada@example.org to club\n"
    gone = run(
        folder,
        "subscribers",
        "unsubscribe",
        "ada@example.org",
        "--list",
        "club",
        "--only-this-list",
        env=env,
    )
    assert gone.stdout == "ada@example.org: unsubscribed in club\n"
    shown = run(
        folder, "subscribers", "list", "--status", "unsubscribed", env=env
    ).stdout.splitlines()
    assert "ada@example.org\t\tunsubscribed\t\tclub" in shown
    assert not any("reader0@example.org" in line for line in shown)
    stats = run(folder, "subscribers", "stats", env=env).stdout
    assert "news: 10 rows (8 subscribed, 1 unsubscribed, 1 bounced)" in stats
    assert "club: 1 rows (1 unsubscribed)" in stats
    assert "recipients of a send to every list: 8" in stats  # club's block is for club only


def test_serve_answers_503_while_the_store_is_down_then_recovers(
    tmp_path: Path, pg_cluster: object, pg_url: str
) -> None:
    """The store stopped: a one-click POST gets 503 (never a 200 for nothing committed); once it
    is back, the same POST unsubscribes, on a new connection."""
    from tests.pgcluster import Cluster

    assert isinstance(pg_cluster, Cluster)
    folder = migrated(tmp_path, pg_url)
    assert (
        run(
            folder, "subscribers", "import", str(EXAMPLE), "--into", "news", env=store_env(pg_url)
        ).returncode
        == 0
    )
    with serving(folder, pg_url) as base:
        target = link(folder, base, "ada@example.org")
        assert httpx.get(target, timeout=10).status_code == 200
        pg_cluster.stop("immediate")
        try:
            down = httpx.post(target, content=ONE_CLICK, headers=FORM, timeout=HANG)
        finally:
            pg_cluster.start()
        assert down.status_code == 503
        up = httpx.post(target, content=ONE_CLICK, headers=FORM, timeout=HANG)
        assert up.status_code == 200
    assert statuses(pg_url)[("news", "ada@example.org")] == "unsubscribed"

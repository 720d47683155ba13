"""The sign-up form, `subscribers show` and `subscribers purge` on the PostgreSQL store (issue 12
with issues 11 and 13): double opt-in through serve's routes with the requests in the store,
everything held on a person read from it, and purge erasing it all.

Every test runs against a real throwaway cluster (tests/pgcluster.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest

from newsletter.config import load_config
from newsletter.pg.lists import PgStore
from newsletter.serve import unsubscribe_app
from newsletter.store import Signup
from tests.send_helpers import ISSUE, run
from tests.serve_helpers import SECRET
from tests.signup_helpers import call, link_for, outbox
from tests.test_store_lists import every_row, migrated, statuses, store_env

SUBSCRIBE = "/newsletter/subscribe"  # the repository's newsletter.toml has a /newsletter base URL
SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "person.schema.json").read_text())


@pytest.fixture
def folder(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose store is migrated and named by NEWSLETTER_STORE_URL (so the app and the
    API in this process use the store, as `serve` would)."""
    root = migrated(tmp_path, pg_url)
    monkeypatch.setenv("NEWSLETTER_STORE_URL", pg_url)
    return root


def post(root: Path, url: str, **kwargs: Any) -> httpx.Response:
    """One POST to serve's app on the store, in this process (its connection closed after)."""
    config = load_config(explicit=root)
    store = PgStore(config.store.url, root)
    try:
        return call(unsubscribe_app(config, SECRET, store), "POST", url, **kwargs)
    finally:
        store.close()


def sign_up(root: Path, email: str, **fields: str) -> None:
    answer = post(root, SUBSCRIBE, data={"email": email, **fields})
    assert answer.status_code == 200 and "Check your inbox" in answer.text


def confirm(root: Path, email: str) -> str:
    answer = post(root, link_for(root, email))
    assert answer.status_code == 200, answer.text
    return answer.text


def shown(root: Path, pg_url: str, email: str) -> dict[str, Any]:
    done = run(root, "subscribers", "show", email, "--json", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def test_a_sign_up_is_pending_in_the_store_until_confirmed(folder: Path, pg_url: str) -> None:
    """POST the form: a `pending` row in the store's default list, never selected, and one
    confirmation mail; POST its link: subscribed, selected, with one consent record."""
    sign_up(folder, "Ann@Example.org", name="Ann Smith")
    assert statuses(pg_url) == {("subscribers", "Ann@example.org"): "pending"}
    store = PgStore(pg_url, folder)
    assert list(store.select(None)) == []
    assert store.held("ann@example.org").consents == ()
    assert "You are subscribed" in confirm(folder, "Ann@example.org")
    assert statuses(pg_url) == {("subscribers", "Ann@example.org"): "subscribed"}
    assert [(s.email, s.name) for s in store.select(None)] == [("Ann@example.org", "Ann Smith")]
    held = store.held("ann@example.org")
    [record] = held.consents
    assert (record.list, record.source) == ("subscribers", "web form")
    assert record.text.startswith("Yes, send me this newsletter")
    assert record.at <= record.confirmed_at
    assert [(e.status, e.source) for e in held.history] == [
        ("pending", "web form"),
        ("subscribed", "web form"),
    ]
    [signup] = held.signups
    assert (signup.list, signup.name, signup.confirmed_at) == (
        "subscribers",
        "Ann Smith",
        record.confirmed_at,
    )
    store.close()


def test_confirming_twice_on_the_store_records_one_consent(folder: Path, pg_url: str) -> None:
    """A replayed confirmation link changes nothing: one consent record, and an unsubscribe
    made since stays."""
    sign_up(folder, "ann@example.org")
    confirm(folder, "ann@example.org")
    store = PgStore(pg_url, folder)
    store.set_status("ann@example.org", "unsubscribed", source="unsubscribe link")
    assert "confirmed before" in confirm(folder, "ann@example.org")
    assert statuses(pg_url) == {("subscribers", "ann@example.org"): "unsubscribed"}
    assert len(store.held("ann@example.org").consents) == 1
    store.close()


def test_one_confirmation_per_address_per_period_on_the_store(folder: Path, pg_url: str) -> None:
    """The store refuses a second request of the address (any spelling) within the period and
    takes one after it."""
    store = PgStore(pg_url, folder)
    first = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)

    def ask(email: str, at: dt.datetime) -> bool:
        return store.request_signup(Signup(email, None, at), since=at - hour)

    assert ask("ann@example.org", first)
    assert not ask("ANN@example.ORG", first + dt.timedelta(minutes=59))
    assert ask("bob@example.org", first + dt.timedelta(minutes=59))
    assert ask("ann@example.org", first + dt.timedelta(minutes=61))
    store.close()


def test_someone_who_left_comes_back_on_the_store_only_by_confirming(
    folder: Path, pg_url: str
) -> None:
    """A request changes nothing for an address that unsubscribed (no pending row, no new
    name); confirming subscribes it again."""
    store = PgStore(pg_url, folder)
    store.add("ann@example.org", name="Ann", list_path=Path("subscribers"))
    store.set_status("ann@example.org", "unsubscribed", source="test")
    sign_up(folder, "ann@example.org", name="Somebody Else")
    assert statuses(pg_url) == {("subscribers", "ann@example.org"): "unsubscribed"}
    confirm(folder, "ann@example.org")
    [row] = store.select(None)
    assert (row.status, row.name) == ("subscribed", "Ann")  # a form never renames anyone
    store.close()


def test_a_pending_person_gets_no_issue_from_the_store(folder: Path, pg_url: str) -> None:
    """`newsletter send` with the store mails the confirmed sign-up, never the one who has not
    confirmed."""
    for person in ("confirmed@example.org", "waiting@example.org"):
        sign_up(folder, person)
    confirm(folder, "confirmed@example.org")
    done = run(folder, "send", ISSUE, "--yes", "--json", env=store_env(pg_url))
    assert done.returncode == 0, done.stderr
    issues = [m["To"] for m in outbox(folder) if "Confirm" not in m["Subject"]]
    assert issues == ["confirmed@example.org"]


def test_show_on_the_store_gives_everything_held(folder: Path, pg_url: str) -> None:
    """`subscribers show --json` with the store: each row (list name, place, every column),
    the history with its sources, the consent, a soft bounce and the sign-up."""
    sign_up(folder, "ann@example.org", name="Ann")
    confirm(folder, "ann@example.org")
    store = PgStore(pg_url, folder)
    store.add("ann@example.org", list_path=Path("events"))
    store.add("bob@example.org", list_path=Path("events"))
    store.soft_bounce("ann@example.org", issue="x", status="4.2.2", at=dt.datetime.now(dt.UTC),
                      window_days=30)  # fmt: skip
    store.set_status("ANN@example.org", "unsubscribed", source="unsubscribe link")
    store.close()
    doc = shown(folder, pg_url, "Ann@Example.ORG")
    assert doc["held"] is True and doc["key"] == "ann@example.org"
    assert [(r["file"], r["line"], r["columns"]["status"]) for r in doc["rows"]] == [
        ("events", 2, "unsubscribed"),
        ("subscribers", 2, "unsubscribed"),
    ]
    assert doc["rows"][1]["columns"]["name"] == "Ann"
    assert doc["suppressed"] is None
    assert [(e["list"], e["status"], e["source"]) for e in doc["history"]] == [
        ("subscribers", "pending", "web form"),
        ("subscribers", "subscribed", "web form"),
        ("events", "subscribed", "cli"),
        ("events", "unsubscribed", "unsubscribe link"),
        ("subscribers", "unsubscribed", "unsubscribe link"),
    ]
    assert [c["source"] for c in doc["consents"]] == ["web form"]
    assert [(b["issue"], b["status"]) for b in doc["soft_bounces"]] == [("x", "4.2.2")]
    assert [s["list"] for s in doc["signups"]] == ["subscribers"]
    assert shown(folder, pg_url, "bob@example.org")["history"][0]["list"] == "events"


def test_show_on_the_store_of_an_unknown_address_holds_nothing(folder: Path, pg_url: str) -> None:
    doc = shown(folder, pg_url, "nobody@example.org")
    assert doc["held"] is False and doc["rows"] == [] and doc["signups"] == []


def test_purge_on_the_store_erases_the_sign_up_and_its_link_stops_working(
    folder: Path, pg_url: str
) -> None:
    """After `subscribers purge` no table of the store holds the address or the name it gave
    (its pending row, history, sign-up); only a suppression entry stays, and the old link
    subscribes nobody."""
    sign_up(folder, "erase.me@example.org", name="Erase Me")
    link = link_for(folder, "erase.me@example.org")
    done = run(folder, "subscribers", "purge", "erase.me@example.org", "--yes",
               env=store_env(pg_url))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deleted from subscribers" in done.stdout
    left = every_row(pg_url).casefold()
    assert "erase.me" not in left and "erase me" not in left
    assert post(folder, link).status_code == 400
    assert statuses(pg_url) == {}
    doc = shown(folder, pg_url, "erase.me@example.org")
    assert doc["suppressed"] == {"reason": "purged"}
    assert (doc["rows"], doc["history"], doc["signups"]) == ([], [], [])
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM signups").fetchone() == (0,)

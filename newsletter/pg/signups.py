"""Sign-ups from the web form in the store (store.SubscriberStore's request_signup,
withdraw_signup and confirm_signup), under the rules of subscribers/people.py's signups table:
one confirmation mail per address per period, a person new to the list held there as `pending`
(scoped to that list, so never mailed and blocking nothing else), and a consent record when they
confirm. Each request and each confirmation is one transaction (the request and its pending
row, or the subscription, the confirmation and the consent record, commit together).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.pg.lists import blocking_rows, checked, is_suppressed, subscribe
from newsletter.pg.rows import DEFAULT_LIST, ensure_list, khash, list_name, record
from newsletter.store import Confirmed, Signup
from newsletter.subscribers.csvfile import stamp
from newsletter.subscribers.people import SIGNUP_KEPT

if TYPE_CHECKING:
    from newsletter.pg.lists import PgStore

SOURCE = "web form"


def request(store: PgStore, signup: Signup, since: dt.datetime) -> bool:
    """Record the sign-up unless the address asked after `since` (then False, nothing
    written); forgets sign-ups older than SIGNUP_KEPT. The transaction takes the lock every
    change takes, so two requests at once cannot both pass."""
    email, name = checked(signup.email, signup.name, allow_reserved=store.allow_reserved)
    target, asked = _target(signup.list_path), stamp(signup.asked_at)
    with store.link.transaction("cannot record a sign-up") as conn:
        oldest = stamp(signup.asked_at - SIGNUP_KEPT)
        conn.execute("DELETE FROM signups WHERE asked_at < %s", (oldest,))
        recent = conn.execute(
            "SELECT 1 FROM signups WHERE khash = %s AND asked_at > %s", (khash(email), stamp(since))
        ).fetchone()
        if recent is not None:
            return False
        conn.execute(
            "INSERT INTO signups (khash, email, list, name, asked_at, consent)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (khash(email), email, target, name, asked, signup.consent),
        )
        _hold(conn, email, name, target, asked)
    return True


def _hold(conn: Any, email: str, name: str, target: str, asked: str) -> None:
    """A person new to the list: a `pending` row kept to this list. Anyone the list has is left
    as they are, and an unsubscribed, bounced, complained or suppressed (purged) address gets no
    row: only confirming brings them back."""
    if blocking_rows(conn, email, target) or is_suppressed(conn, email):
        return
    list_id = ensure_list(conn, target)
    done = conn.execute(
        "INSERT INTO subscribers (list_id, khash, email, name, status, scope, subscribed_at,"
        " source) VALUES (%s, %s, %s, %s, 'pending', 'list', %s, %s)"
        " ON CONFLICT (list_id, khash) DO NOTHING",
        (list_id, khash(email), email, name, asked, SOURCE),
    )
    if done.rowcount:
        record(conn, email, target, "pending", asked, SOURCE)


def withdraw(store: PgStore, signup: Signup) -> None:
    """Forget a sign-up whose confirmation could not be sent (the person may ask again at once);
    its pending row stays, never mailed."""
    with store.link.transaction("cannot withdraw a sign-up", changes=False) as conn:
        conn.execute(
            "DELETE FROM signups WHERE khash = %s AND list = %s AND asked_at = %s AND"
            " confirmed_at = ''",
            (khash(signup.email), _target(signup.list_path), stamp(signup.asked_at)),
        )


def confirm(
    store: PgStore, email: str, list_path: Path | None, asked_at: dt.datetime, when: dt.datetime
) -> Confirmed:
    """Subscribed to the list even after an unsubscribe, a bounce, a complaint or a suppression
    (they asked again), the request marked confirmed and the consent recorded: all or none."""
    target, confirmed = _target(list_path), stamp(when)
    with store.link.transaction("cannot confirm a sign-up") as conn:
        row = conn.execute(
            "SELECT id, email, name, asked_at, consent, confirmed_at FROM signups"
            " WHERE khash = %s AND list = %s AND asked_at = %s ORDER BY id LIMIT 1 FOR UPDATE",
            (khash(email), target, stamp(asked_at)),
        ).fetchone()
        if row is None:
            return Confirmed.UNKNOWN
        if row[5]:
            return Confirmed.ALREADY
        stored, name, asked, text = str(row[1]), str(row[2]), str(row[3]), str(row[4])
        subscribe(conn, stored, name, (), target, True, SOURCE, confirmed)
        conn.execute("UPDATE signups SET confirmed_at = %s WHERE id = %s", (confirmed, row[0]))
        conn.execute(
            "INSERT INTO consent (khash, email, list, at, source, text, confirmed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (khash(stored), stored, target, asked, SOURCE, text, confirmed),
        )
    return Confirmed.SUBSCRIBED


def _target(list_path: Path | None) -> str:
    return list_name(list_path) if list_path is not None else DEFAULT_LIST

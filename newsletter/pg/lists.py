"""The subscriber store in PostgreSQL (store.SubscriberStore): named lists, their rows, every
status change with its time and source, and the hashed suppression entries.

The consent rules are the CSV lists' (subscribers/): only `subscribed` rows get mail; any other
status of an address in any list blocks it everywhere unless that row's scope is `list`; a
status only ever gets stronger; `add` refuses a blocked address unless `resubscribe`. Every
change is one transaction, committed before the method returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from newsletter.addresses import address_key, key_digest, normalise_address
from newsletter.errors import BadAddress, InvalidInput, Refused
from newsletter.models import STATUSES, SUPPRESSING, Status, Subscriber
from newsletter.people_types import Held, Purged
from newsletter.pg.rows import (
    DEFAULT_LIST,
    ROW_COLUMNS,
    Link,
    ensure_list,
    khash,
    list_ids,
    list_name,
    record,
    should_change,
    subscriber,
    unsigned,
)
from newsletter.store import Added, Blocked, Bounce, Confirmed, Recipients, Signup, StatusChange
from newsletter.subscribers.csvfile import join_tags, name_problem, now, split_tags, stamp
from newsletter.subscribers.selection import LEFT_OUT_REASONS
from newsletter.subscribers.status import subscribed_since


class PgStore:
    """The lists of the store at `url`. `folder` is the newsletter's (for messages only: the
    store needs no subscribers/ nor .newsletter/)."""

    def __init__(self, url: str, folder: Path, *, allow_reserved: bool = False) -> None:
        self.link = Link(url)
        self.folder = folder
        self.allow_reserved = allow_reserved

    def close(self) -> None:
        self.link.close()

    # -- read ------------------------------------------------------------------------------

    def list_names(self) -> list[str]:
        with self.link.transaction("cannot read the lists", changes=False) as conn:
            return [str(r[0]) for r in conn.execute("SELECT name FROM lists ORDER BY name")]

    def select(self, lists: Sequence[Path] | None = None, tags: Sequence[str] = ()) -> Recipients:
        names = None if lists is None else [list_name(p) for p in lists]
        with self.link.transaction("cannot read the lists", changes=False) as conn:
            if names is not None:
                list_ids(conn, names)  # a list the store lacks is an error, not "nobody"
        return PgSelection(self, names, tags)

    def lookup(self, email: str) -> Subscriber | None:
        sql = (
            f"SELECT l.name, {ROW_COLUMNS}, s.scope, s.extra FROM subscribers s"  # noqa: S608  # constant columns
            " JOIN lists l ON l.id = s.list_id WHERE s.khash = %s ORDER BY l.name LIMIT 1"
        )
        with self.link.transaction("cannot read the lists", changes=False) as conn:
            row = conn.execute(sql, (khash(email),)).fetchone()
        return None if row is None else subscriber(row[0], row[1:8], row[8], row[9])

    # -- change ----------------------------------------------------------------------------

    def add(
        self,
        email: str,
        *,
        name: str = "",
        tags: Sequence[str] = (),
        list_path: Path | None = None,
        resubscribe: bool = False,
        source: str = "cli",
    ) -> Added:
        """Subscribe an address to a list (default `subscribers`), under the rules of
        subscribers.consent.add."""
        stored, name = checked(email, name, allow_reserved=self.allow_reserved)
        target = list_name(list_path) if list_path is not None else DEFAULT_LIST
        with self.link.transaction("cannot add") as conn:
            return subscribe(conn, stored, name, tags, target, resubscribe, source, now())

    def set_status(
        self,
        email: str,
        status: Status,
        *,
        when: dt.datetime | None = None,
        source: str = "",
        lists: Sequence[Path] | None = None,
        scope_list: bool = False,
    ) -> StatusChange:
        """Durable when it returns (committed). No row holds the address and the status
        suppresses: a suppression entry instead."""
        if status not in STATUSES:
            raise InvalidInput.one(
                None, f"unknown status {status!r} (one of: {', '.join(STATUSES)})"
            )
        moment = stamp(when) if when is not None else now()
        names = None if lists is None else [list_name(p) for p in lists]
        with self.link.transaction("cannot change a status") as conn:
            held, changed = _change(conn, email, status, moment, source, names, scope_list)
            suppressed = False
            if status in SUPPRESSING and not held:
                suppressed = suppress_entry(conn, email, status)
                if suppressed:
                    record(conn, email, "", status, moment, source)
        return StatusChange(email, status, [Path(n) for n in changed], [Path(n) for n in held],
                            suppressed)  # fmt: skip

    def suppress(self, email: str, reason: str) -> bool:
        with self.link.transaction("cannot suppress") as conn:
            return suppress_entry(conn, email, reason)

    def apply_bounces(self, bounces: Sequence[Bounce]) -> list[StatusChange]:
        """Idempotent, and never undoes a later re-subscription (as the CSV store)."""
        latest = {address_key(b.email): b for b in bounces}  # oldest first: the latest wins
        return [
            self.set_status(b.email, "bounced", when=_utc(b.at), source="bounce during send")
            for b in latest.values()
            if self._bounce_missing(b)
        ]

    def _bounce_missing(self, bounce: Bounce) -> bool:
        with self.link.transaction("cannot read the lists", changes=False) as conn:
            rows = conn.execute(
                "SELECT status, subscribed_at FROM subscribers WHERE khash = %s",
                (khash(bounce.email),),
            ).fetchall()
            suppressed = is_suppressed(conn, bounce.email)
        since = [Subscriber(bounce.email, fields={"subscribed_at": str(r[1])}) for r in rows]
        if any(subscribed_since(s, bounce.at) for s in since):
            return False
        weaker = any(should_change(str(r[0]), "bounced") for r in rows)
        return weaker or (not rows and not suppressed)

    def batched(self) -> AbstractContextManager[None]:
        """Nothing to batch: every change is its own transaction, committed when it returns."""
        return contextlib.nullcontext()

    # -- sign-ups from the web form (pg.signups) and a person's records (pg.people) ----------

    def request_signup(self, signup: Signup, *, since: dt.datetime) -> bool:
        from newsletter.pg.signups import request

        return request(self, signup, since)

    def withdraw_signup(self, signup: Signup) -> None:
        from newsletter.pg.signups import withdraw

        withdraw(self, signup)

    def confirm_signup(
        self, email: str, list_path: Path | None, asked_at: dt.datetime, *, when: dt.datetime
    ) -> Confirmed:
        from newsletter.pg.signups import confirm

        return confirm(self, email, list_path, asked_at, when)

    def held(self, email: str) -> Held:
        """Everything the store holds on the address, read in one snapshot (pg.people.held)."""
        from newsletter.pg.people import held

        return held(self, email)

    def purge(self, email: str) -> Purged:
        """Erase the address on request, in one transaction (pg.people.purge)."""
        from newsletter.pg.people import purge

        return purge(self, email)

    # -- what the store holds on a person besides their rows (people.sqlite of the CSV side) --

    def record_consent(
        self, email: str, *, list_name: str, source: str, text: str, at: str, confirmed_at: str
    ) -> None:
        """What the person agreed to, when and where (the fields of people.sqlite's)."""
        with self.link.transaction("cannot record consent", changes=False) as conn:
            conn.execute(
                "INSERT INTO consent (khash, email, list, at, source, text, confirmed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (khash(email), email, list_name, at, source, text, confirmed_at),
            )

    def soft_bounce(
        self, email: str, *, issue: str, status: str, at: dt.datetime, window_days: int = 30
    ) -> int:
        """Record a soft bounce; how many the address had within `window_days` up to `at`."""
        moment, since = stamp(at), stamp(at - dt.timedelta(days=window_days))
        with self.link.transaction("cannot record a soft bounce", changes=False) as conn:
            conn.execute(
                "INSERT INTO soft_bounces (khash, email, at, issue, status)"
                " VALUES (%s, %s, %s, %s, %s)",
                (khash(email), email, moment, issue, status),
            )
            row = conn.execute(
                "SELECT count(*) FROM soft_bounces WHERE khash = %s AND at > %s AND at <= %s",
                (khash(email), since, moment),
            ).fetchone()
        return int(row[0]) if row else 0

    def history(self, email: str) -> list[tuple[str, str, str, str]]:
        """(list, status, at, source) of every status change of the address, oldest first."""
        with self.link.transaction("cannot read the history", changes=False) as conn:
            rows = conn.execute(
                "SELECT list, status, at, source FROM status_history WHERE khash = %s ORDER BY id",
                (khash(email),),
            ).fetchall()
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def watch(self, recipients: Recipients) -> Blocked:
        """Between batches, one query: the blocking changes committed since the last call
        (every change takes the same lock before its number, so none is missed)."""
        seen = [0]

        def blocked() -> set[tuple[int, str]]:
            with self.link.transaction("cannot read the unsubscribes", changes=False) as conn:
                rows = conn.execute(_CHANGES, (seen[0], seen[0])).fetchall()
            pairs: set[tuple[int, str]] = set()
            for compact, list_, scope, _status, number in rows:
                if compact is None:  # the highest number read (None: nothing changed)
                    seen[0] = max(seen[0], int(number or 0))
                else:
                    pairs.add((unsigned(int(compact)), str(list_) if scope == "list" else ""))
            return pairs

        return blocked


# The blocks numbered after the last call, and the highest number now (a last row of NULLs),
# read in one statement: one snapshot, so no change falls between the two.
_CHANGES = """
WITH changed AS (
    SELECT s.khash, l.name, s.scope, s.status, s.changed
      FROM subscribers s JOIN lists l ON l.id = s.list_id WHERE s.changed > %s
    UNION ALL
    SELECT khash, '', '', 'suppressed', changed FROM suppressed WHERE changed > %s
)
SELECT khash, name, scope, status, changed FROM changed WHERE status <> 'subscribed'
UNION ALL
SELECT NULL, NULL, NULL, NULL, max(changed) FROM changed
"""


def _utc(unix: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


def is_suppressed(conn: Any, email: str) -> bool:
    digest = key_digest(address_key(email))
    return (
        conn.execute("SELECT 1 FROM suppressed WHERE digest = %s", (digest,)).fetchone() is not None
    )


def suppress_entry(conn: Any, email: str, reason: str) -> bool:
    digest = key_digest(address_key(email))
    done = conn.execute(
        "INSERT INTO suppressed (digest, khash, reason) VALUES (%s, %s, %s)"
        " ON CONFLICT (digest) DO NOTHING",
        (digest, khash(email), reason),
    )
    return bool(done.rowcount)


def checked(email: str, name: str, *, allow_reserved: bool) -> tuple[str, str]:
    """(the address as stored, the name trimmed), or the error `add` gives for either."""
    stored, _smtputf8 = normalise_address(email, allow_reserved=allow_reserved)
    name = name.strip()
    problem = name_problem(name)
    if problem:
        raise InvalidInput.one(None, problem, field="name")
    return stored, name


def subscribe(
    conn: Any,
    email: str,
    name: str,
    tags: Sequence[str],
    target: str,
    resubscribe: bool,
    source: str,
    moment: str,
) -> Added:
    """`add` inside the caller's transaction, under the rules of subscribers.consent.add."""
    wanted = [t.strip() for t in tags if t.strip()]
    blocking = blocking_rows(conn, email, target)
    if not resubscribe:
        _refuse(conn, email, blocking)
    list_id = ensure_list(conn, target)
    created, changed = _upsert(conn, list_id, target, email, (name, wanted), source, moment)
    if resubscribe:
        again = _resubscribe(conn, (list_id, target), email, blocking, source, moment)
        changed = again or changed
    return Added(email, Path(target), created=created, changed=changed)


def blocking_rows(conn: Any, email: str, target: str) -> list[tuple[str, str, str]]:
    """(list, status, unsubscribed_at) of the rows that keep `email` out of `target`."""
    rows = conn.execute(
        "SELECT l.name, s.status, s.unsubscribed_at FROM subscribers s"
        " JOIN lists l ON l.id = s.list_id WHERE s.khash = %s AND s.status <> 'subscribed'"
        " AND (s.scope <> 'list' OR l.name = %s) ORDER BY l.name",
        (khash(email), target),
    ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def _refuse(conn: Any, email: str, blocking: list[tuple[str, str, str]]) -> None:
    if blocking:
        where, status, since = blocking[0]
        raise Refused(email, status, Path(where), None, since)
    if is_suppressed(conn, email):
        raise Refused(email, "suppressed")


def _upsert(
    conn: Any,
    list_id: int,
    list_: str,
    email: str,
    wanted: tuple[str, list[str]],
    source: str,
    moment: str,
) -> tuple[bool, bool]:
    """(created, changed): a new subscribed row, or the row's empty name and missing tags
    (`wanted`: the name and tags given)."""
    name, tags = wanted
    row = conn.execute(
        "SELECT name, tags FROM subscribers WHERE list_id = %s AND khash = %s FOR UPDATE",
        (list_id, khash(email)),
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO subscribers (list_id, khash, email, name, tags, subscribed_at, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (list_id, khash(email), email, name, join_tags(tags), moment, source),
        )
        record(conn, email, list_, "subscribed", moment, source)
        return True, True
    new_name = row[0] or name
    new_tags = join_tags(split_tags(row[1]).union(tags))
    if (new_name, new_tags) == (row[0], row[1]):
        return False, False
    conn.execute(
        "UPDATE subscribers SET name = %s, tags = %s WHERE list_id = %s AND khash = %s",
        (new_name, new_tags, list_id, khash(email)),
    )
    return False, True


def _resubscribe(
    conn: Any,
    into: tuple[int, str],
    email: str,
    blocking: list[tuple[str, str, str]],
    source: str,
    moment: str,
) -> bool:
    """The person asked again: subscribed here (`into`: the list's id and name), their other
    blocks kept to their own lists, their suppression entry gone."""
    list_id, list_ = into
    key = khash(email)
    done = conn.execute(
        "UPDATE subscribers SET status = 'subscribed', subscribed_at = %s, unsubscribed_at = '',"
        " scope = '', changed = nextval('subscriber_changes')"
        " WHERE list_id = %s AND khash = %s AND status <> 'subscribed'",
        (moment, list_id, key),
    )
    changed = bool(done.rowcount)
    if changed:
        record(conn, email, list_, "subscribed", moment, source)
    others = sorted({b[0] for b in blocking if b[0] != list_})
    scoped = conn.execute(
        "UPDATE subscribers s SET scope = 'list' FROM lists l WHERE l.id = s.list_id"
        " AND s.khash = %s AND l.name = ANY(%s) AND s.status <> 'subscribed' AND s.scope <> 'list'",
        (key, others),
    )
    digest = key_digest(address_key(email))
    gone = conn.execute("DELETE FROM suppressed WHERE digest = %s", (digest,))
    return changed or bool(scoped.rowcount) or bool(gone.rowcount)


def _change(
    conn: Any,
    email: str,
    status: Status,
    moment: str,
    source: str,
    names: list[str] | None,
    scope_list: bool,
) -> tuple[list[str], list[str]]:
    """(lists holding the address, lists changed): `status` set where it is stronger."""
    if names is not None:
        list_ids(conn, names)
    rows = conn.execute(
        "SELECT l.name, s.list_id, s.status FROM subscribers s JOIN lists l ON l.id = s.list_id"
        " WHERE s.khash = %s AND (%s::text[] IS NULL OR l.name = ANY(%s)) ORDER BY l.name"
        " FOR UPDATE OF s",
        (khash(email), names, names),
    ).fetchall()
    changed = []
    for list_, list_id, current in rows:
        if not should_change(str(current), status):
            continue
        conn.execute(_SET_STATUS[status == "subscribed"], {
            "status": status, "at": moment, "scope": "list" if scope_list else "",
            "keep": not scope_list and status != "subscribed", "l": list_id, "k": khash(email),
        })  # fmt: skip
        record(conn, email, str(list_), status, moment, source)
        changed.append(str(list_))
    return [str(r[0]) for r in rows], changed


# [True]: back to subscribed (its time, no unsubscribed_at, no scope); [False]: a block, scoped
# to the list with `--only-this-list`, else keeping the row's scope.
_SET_STATUS = {
    True: "UPDATE subscribers SET status = %(status)s, subscribed_at = %(at)s,"
    " unsubscribed_at = '', scope = '', changed = nextval('subscriber_changes')"
    " WHERE list_id = %(l)s AND khash = %(k)s",
    False: "UPDATE subscribers SET status = %(status)s, unsubscribed_at = %(at)s,"
    " scope = CASE WHEN %(keep)s THEN scope ELSE %(scope)s END,"
    " changed = nextval('subscriber_changes') WHERE list_id = %(l)s AND khash = %(k)s",
}


class PgSelection:
    """The recipients of a send from the store, streamed through a server-side cursor (never
    the whole list in memory): the chosen lists in the order given (default: every list, by
    name), rows in import order, deduplicated, the blocked and untagged left out."""

    def __init__(self, store: PgStore, names: list[str] | None, tags: Sequence[str]) -> None:
        self.store = store
        self.folder = store.folder
        self.default = names is None
        self.names = list(dict.fromkeys(store.list_names() if names is None else names))
        self.lists = [Path(n) for n in self.names]
        self.tags = frozenset(t.strip().casefold() for t in tags if t.strip())
        self.left_out: dict[str, int] = {}
        self.empty_lists: list[Path] = []
        self.subscribed = 0

    def __iter__(self) -> Iterator[Subscriber]:
        left_out: Counter[str] = Counter()
        seen: set[int] = set()
        given: Counter[str] = Counter()
        self.subscribed = 0
        for row in self._rows():
            list_, status, blocked = str(row[0]), str(row[8]), bool(row[11])
            cells = row[1:8]
            if status != "subscribed":
                left_out[status if status in STATUSES else "invalid"] += 1
                continue
            self.subscribed += 1
            reason = self._reason(cells, int(row[10]), blocked, seen)
            if reason:
                left_out[reason] += 1
                continue
            try:
                normalise_address(str(cells[0]), allow_reserved=self.store.allow_reserved)
            except BadAddress:
                left_out["invalid"] += 1
                continue
            seen.add(int(row[10]))
            given[list_] += 1
            yield subscriber(list_, cells, str(row[9]), row[12])
        self.empty_lists = [Path(n) for n in self.names if not given[n]]
        self.left_out = {r: left_out[r] for r in LEFT_OUT_REASONS if left_out[r]}

    def _reason(self, cells: Any, compact: int, blocked: bool, seen: set[int]) -> str:
        if blocked:
            return "suppressed"
        if self.tags and not self.tags & {t.casefold() for t in split_tags(str(cells[3]))}:
            return "tag"
        return "duplicate" if compact in seen else ""

    def _rows(self) -> Iterator[tuple[Any, ...]]:
        conn = self.store.link.open(autocommit=False)
        try:
            with conn.cursor(name="newsletter_selection") as cursor:
                cursor.itersize = 2000
                cursor.execute(_SELECT, (self.names,))
                yield from cursor
        finally:
            conn.close()

    def spec(self) -> dict[str, Any]:
        return {"default": self.default, "lists": list(self.names), "tags": sorted(self.tags)}

    def why_empty(self) -> str:
        if not self.names:
            hint = "`newsletter subscribers import FILE --into NAME`"
            return f"no list to send to: the store has no list ({hint})"
        names = ", ".join(self.names)
        why = ", ".join(f"{n} {reason}" for reason, n in self.left_out.items())
        if not self.subscribed:
            return f"{names}: no subscribed reader" + (f" ({why})" if why else "")
        if self.tags and self.left_out.get("tag"):
            wanted = " or ".join(repr(t) for t in sorted(self.tags))
            return f"no subscribed reader of {names} has the tag {wanted} (left out: {why})"
        return f"every subscribed reader of {names} is left out ({why})"


# A row is blocked by a non-subscribed row of the address (anywhere, or in its own list when
# that row's scope is `list`) or by a suppression entry: the rule of subscribers.suppression.
_SELECT = f"""
SELECT l.name, {ROW_COLUMNS}, s.status, s.scope, s.khash,
       EXISTS (SELECT 1 FROM subscribers b WHERE b.khash = s.khash AND b.status <> 'subscribed'
                  AND (b.scope <> 'list' OR b.list_id = s.list_id))
       OR EXISTS (SELECT 1 FROM suppressed x WHERE x.khash = s.khash),
       s.extra
  FROM unnest(%s::text[]) WITH ORDINALITY AS chosen(name, n)
  JOIN lists l ON l.name = chosen.name
  JOIN subscribers s ON s.list_id = l.id
 ORDER BY chosen.n, s.position
"""  # noqa: S608  # constant columns

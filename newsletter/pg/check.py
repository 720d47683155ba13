"""`newsletter store migrate` and `newsletter store check`: the schema, and what the store
holds. Each count is one (label, SQL) line of `COUNTS`: a new table adds one."""

from __future__ import annotations

from newsletter.pg.connection import Conn, connect, reporting, where
from newsletter.pg.migrations import LATEST, migrate, version
from newsletter.store import Migration, RunningSend, State, StoreCheck

COUNTS: list[tuple[str, str]] = [
    ("sends", "SELECT count(*) FROM sends"),
    ("send recipients", "SELECT count(*) FROM send_recipients"),
    ("lists", "SELECT count(*) FROM lists"),
    ("subscriber rows", "SELECT count(*) FROM subscribers"),
    ("suppression entries", "SELECT count(*) FROM suppressed"),
]

# One more count per list and status: "list news (subscribed)"
_BY_LIST = """
SELECT l.name, s.status, count(*) FROM subscribers s JOIN lists l ON l.id = s.list_id
GROUP BY l.name, s.status ORDER BY l.name, s.status
"""

_RUNNING = """
SELECT s.id, s.slug, s.destination,
       (SELECT count(*) FROM send_workers w
         WHERE w.send_id = s.id AND w.finished_at IS NULL AND w.lease_until > now())
FROM sends s
WHERE s.replaced_at IS NULL
  AND EXISTS (SELECT 1 FROM send_recipients r WHERE r.send_id = s.id AND r.state IN (0, 1, 3))
ORDER BY s.id
"""

_STATES = "SELECT state, count(*) FROM send_recipients WHERE send_id = %s GROUP BY state"


def migrate_store(url: str) -> Migration:
    """Bring the store's schema to this newsletter's version (nothing to do: the same)."""
    place = where(url)
    with connect(url) as conn:
        before, after = migrate(conn, place)
    return Migration(place, before, after)


def check_store(url: str) -> StoreCheck:
    """Connect, read the version; when it is current, the counts and the sends in progress."""
    place = where(url)
    with connect(url) as conn, reporting(place, "cannot read the store"):
        found = version(conn)
        if found != LATEST:
            return StoreCheck(place, found, LATEST, {}, ())
        counts = {label: _count(conn, sql) for label, sql in COUNTS}
        for name, status, count in conn.execute(_BY_LIST).fetchall():
            counts[f"list {name} ({status})"] = int(count)
        running = tuple(_running(conn))
    return StoreCheck(place, found, LATEST, counts, running)


def _count(conn: Conn, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _running(conn: Conn) -> list[RunningSend]:
    found = []
    for send_id, slug, destination, workers in conn.execute(_RUNNING).fetchall():
        states: dict[int, int] = dict(conn.execute(_STATES, (send_id,)).fetchall())
        counts = {state.label: int(states.get(int(state), 0)) for state in State}
        found.append(RunningSend(slug, destination, counts, int(workers)))
    return found

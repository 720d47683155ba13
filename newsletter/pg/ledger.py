"""One send's ledger in the store, shared by any number of senders (store.SendLedger).

Each sender is a worker (`host:pid:start`, unique per process) with a lease in `send_workers`.
It claims batches of pending recipients (`SELECT ... FOR UPDATE SKIP LOCKED`: each row goes
to one sender), records each attempt `sending` under its name before the data goes out, then
the outcome. A claim is the row's `worker` while its state is still pending: a sender whose
lease expired loses its claims (back to pending, for anyone) and its attempts in flight (to
`unknown`: never resent by themselves). `start` only succeeds on a row still claimed by this
sender, so a sender that was presumed dead never sends what another took over.

Before `save()` (a plan not yet confirmed) everything happens in one open transaction: the
first sender's snapshot is one transaction, and the other senders' plans wait on its row in
`sends` until it is committed, then join it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from newsletter.addresses import key_hash
from newsletter.pg import leases
from newsletter.pg.connection import Conn, reporting
from newsletter.store import Entry, Failure, Lease, Row, State, WorkerShare

# ARRAY(...): the locking subquery runs once, whatever the plan (as `IN (...)`, a nested loop
# ran it once per row of the send, each time past the rows already taken: the whole list)
_CLAIM = """
UPDATE send_recipients SET worker = %(me)s
WHERE send_id = %(send)s AND id = ANY(ARRAY(
    SELECT id FROM send_recipients
    WHERE send_id = %(send)s AND state = 0 AND worker IS NULL
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
RETURNING id, email, name, list_path, fields, attempts
"""

# Deferred rows nobody live is retrying: those of this sender, of no sender, or of one whose
# lease ended (finished or expired)
_CLAIM_DEFERRED = """
UPDATE send_recipients r
SET worker = %(me)s, next_at = CASE WHEN %(now)s THEN NULL ELSE next_at END
WHERE r.send_id = %(send)s AND r.state = 3
  AND (r.worker IS NULL OR r.worker = %(me)s OR NOT EXISTS (
    SELECT 1 FROM send_workers w WHERE w.send_id = r.send_id AND w.worker = r.worker
    AND w.finished_at IS NULL AND w.lease_until > now()))
RETURNING id, email, name, list_path, fields, attempts, next_at
"""

_START = """
UPDATE send_recipients SET state = 1, attempts = attempts + 1, at = %s
WHERE send_id = %s AND id = %s AND worker = %s AND state IN (0, 3)
"""

_SET = """
UPDATE send_recipients SET state = %s, code = %s, reply = %s, at = %s, next_at = %s, worker = %s
WHERE send_id = %s AND id = %s
"""

_ROW = "SELECT id, email, name, list_path, fields, attempts FROM send_recipients WHERE send_id = %s"


class PgLedger:
    """The ledger of one send in the store, as one sender (`worker`) sees and writes it."""

    def __init__(
        self,
        conn: Conn,
        send_id: int,
        *,
        url: str,
        worker: str,
        place: str,
        lease_seconds: float,
        draft: bool,
        name: Path,
    ) -> None:
        self.conn = conn
        self.url = url  # for the connection of its lease's Reaper
        self.send_id = send_id
        self.worker = worker
        self.place = place  # host:port/dbname, for errors
        self.path = name  # what messages call this send
        self.draft = draft
        self.lease_seconds = lease_seconds
        self._lease: leases.PgLease | None = None
        self._outcomes: list[tuple[Any, ...]] = []  # recorded, not yet written (see _set)

    def _sql(self, sql: str, params: Any = None, *, flush: bool = True) -> Any:
        """Run one statement (in the open transaction), after the outcomes waiting to be
        written; the store going away is StoreUnavailable."""
        if flush and self._outcomes:
            self._flush()
        with reporting(self.place, "cannot use the send's ledger"):
            return self.conn.execute(sql, params)

    def _flush(self) -> None:
        """Write the outcomes recorded since the last statement, in one round trip."""
        outcomes, self._outcomes = self._outcomes, []
        action = "cannot record in the send's ledger"
        with reporting(self.place, action), self.conn.cursor() as cur:
            cur.executemany(_SET, outcomes)

    def _one(self, sql: str, params: Any = None) -> Any:
        row = self._sql(sql, params).fetchone()
        return row[0] if row else None

    # -- transactions ------------------------------------------------------------------------

    def save(self) -> None:
        """The send is confirmed: commit the plan's transaction (the first sender's snapshot)
        and join the send's senders with a lease."""
        self.draft = False
        leases.join(self)
        self._sql("UPDATE sends SET snapshot_at = coalesce(snapshot_at, now()) WHERE id = %s",
                  (self.send_id,))  # fmt: skip
        self.commit()
        self._lease = leases.PgLease(self, self.url)

    def commit(self) -> None:
        """Commit (a draft: nothing, its transaction ends at save() or close())."""
        if not self.draft:
            if self._outcomes:
                self._flush()
            with reporting(self.place, "cannot record in the send's ledger"):
                self.conn.commit()

    def sync(self) -> None:
        """The store's commit is durable (synchronous_commit is the server's to set)."""
        self.commit()

    def close(self) -> None:
        """Give back what this sender claimed and did not start; end its lease."""
        try:
            if self.draft:
                self.conn.rollback()  # a plan not sent writes nothing
            elif self._lease is not None and not self.conn.closed:  # a sender, not a reader
                leases.leave(self)
        finally:
            if self._lease is not None:
                self._lease.reaper.stop()
            self.conn.close()

    # -- the plan ----------------------------------------------------------------------------

    def get(self, name: str, default: str = "") -> str:
        sql = "SELECT value FROM send_meta WHERE send_id = %s AND name = %s"
        found = self._one(sql, (self.send_id, name))
        return str(found) if found is not None else default

    def put(self, name: str, value: str) -> None:
        self._sql(
            "INSERT INTO send_meta (send_id, name, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (send_id, name) DO UPDATE SET value = EXCLUDED.value",
            (self.send_id, name, value),
        )

    def get_json(self, name: str, default: Any) -> Any:
        raw = self.get(name)
        return json.loads(raw) if raw else default

    def put_json(self, name: str, value: Any) -> None:
        self.put(name, json.dumps(value, sort_keys=True))

    @property
    def digest(self) -> str:
        return str(self._one("SELECT digest FROM sends WHERE id = %s", (self.send_id,)) or "")

    def add(self, entries: Iterable[Entry]) -> int:
        """Add recipients in plan order (COPY, then one INSERT); someone already in the ledger
        is not added again."""
        self._sql(
            "CREATE TEMP TABLE IF NOT EXISTS incoming (ord integer, khash bigint, email text, "
            "name text, list_path text, fields jsonb) ON COMMIT DELETE ROWS"
        )
        self._sql("TRUNCATE incoming")
        with reporting(self.place, "cannot record the recipients"):
            copy_sql = "COPY incoming (ord, khash, email, name, list_path, fields) FROM STDIN"
            with self.conn.cursor().copy(copy_sql) as copy:
                for ord_, entry in enumerate(entries):
                    copy.write_row(_values(ord_, entry))
        base = self._one("SELECT coalesce(max(id), 0) FROM send_recipients WHERE send_id = %s",
                         (self.send_id,))  # fmt: skip
        added = self._sql(
            """
            INSERT INTO send_recipients (send_id, id, khash, email, name, list_path, fields)
            SELECT %(send)s, %(base)s + row_number() OVER (ORDER BY ord), khash, email, name,
                   list_path, fields
            FROM (SELECT DISTINCT ON (khash) * FROM incoming ORDER BY khash, ord) i
            WHERE NOT EXISTS (SELECT 1 FROM send_recipients r
                              WHERE r.send_id = %(send)s AND r.khash = i.khash)
            ORDER BY ord
            """,
            {"send": self.send_id, "base": int(base)},
        )
        return int(added.rowcount)

    def attempted(self) -> int:
        sql = "SELECT count(*) FROM send_recipients WHERE send_id = %s AND state <> 0"
        return int(self._one(sql, (self.send_id,)))

    def fixed(self) -> bool:
        """Once the first sender saved it: the others join it, never take it again."""
        sql = "SELECT snapshot_at IS NOT NULL FROM sends WHERE id = %s"
        return bool(self._one(sql, (self.send_id,))) or self.attempted() > 0

    def reset(self) -> None:
        self._sql("DELETE FROM send_recipients WHERE send_id = %s", (self.send_id,))

    def contains(self, key: str) -> bool:
        sql = "SELECT 1 FROM send_recipients WHERE send_id = %s AND khash = %s"
        return self._one(sql, (self.send_id, _signed(key_hash(key)))) is not None

    def carry_over(self, source: Path, reply: str) -> int:
        """Those `source` (another send in the store, by its name) sent or may have sent."""
        from newsletter.pg.names import send_id_of

        other = send_id_of(source)
        changed = self._sql(
            """
            UPDATE send_recipients r SET state = CASE WHEN o.state = 2 THEN 2 ELSE 5 END,
                reply = %s, at = extract(epoch FROM now()), next_at = NULL, worker = NULL
            FROM send_recipients o
            WHERE r.send_id = %s AND o.send_id = %s AND o.khash = r.khash
              AND o.state IN (1, 2, 5) AND r.state IN (0, 3, 4)
            """,
            (reply, self.send_id, other),
        )
        self.commit()
        return int(changed.rowcount)

    # -- claims ------------------------------------------------------------------------------

    def pending(self, after_id: int, limit: int) -> list[Row]:
        """Claim the first unclaimed pending rows, wherever they are (rows before `after_id`
        come back to pending when another sender's lease expires), renewing the lease in the
        same breath; none once the lease was lost."""
        if self._lease is not None and not self._lease.renew():
            return []  # its lease expired and the others took over: no claim any more
        params = {"me": self.worker, "send": self.send_id, "limit": limit}
        rows = self._sql(_CLAIM, params).fetchall()
        self.commit()  # the claim is this sender's from now: others skip it
        return sorted((_row(r) for r in rows), key=lambda row: row.id)

    def deferred(self) -> list[tuple[Row, float]]:
        params = {"me": self.worker, "send": self.send_id, "now": False}
        rows = self._sql(_CLAIM_DEFERRED, params).fetchall()
        self.commit()
        found = [(_row(r[:6]), float(r[6] or 0.0)) for r in rows]
        return sorted(found, key=lambda pair: pair[0].id)

    def attempt_times(self, since: float) -> list[float]:
        sql = (
            "SELECT at FROM send_recipients WHERE send_id = %s AND state <> 0 AND at >= %s "
            "ORDER BY at"
        )
        return [float(r[0]) for r in self._sql(sql, (self.send_id, since)).fetchall()]

    def lease(self) -> Lease | None:
        return self._lease

    # -- outcomes ----------------------------------------------------------------------------

    def start(self, row_id: int, now: float | None = None) -> bool:
        at = time.time() if now is None else now
        # another row than any outcome waiting: those go with the next commit
        done = self._sql(_START, (at, self.send_id, row_id, self.worker), flush=False)
        return bool(done.rowcount)

    def sent(self, row_id: int, code: int, reply: str, now: float | None = None) -> None:
        self._set(row_id, State.SENT, code, reply, now)

    def failed(self, row_id: int, code: int | None, reply: str, now: float | None = None) -> None:
        self._set(row_id, State.FAILED, code, reply, now)

    def unknown(self, row_id: int, reason: str, now: float | None = None) -> None:
        self._set(row_id, State.UNKNOWN, None, reason, now)

    def defer(
        self, row_id: int, code: int | None, reason: str, next_at: float, now: float | None = None
    ) -> None:
        self._set(row_id, State.DEFERRED, code, reason, now, next_at)

    def release(self, row_id: int) -> None:
        """An attempt that never reached the transport: back to pending (still claimed)."""
        self._sql(
            "UPDATE send_recipients SET state = 0, attempts = attempts - 1 "
            "WHERE send_id = %s AND id = %s AND state = 1",
            (self.send_id, row_id),
        )

    def _set(
        self,
        row_id: int,
        state: State,
        code: int | None,
        reply: str,
        now: float | None,
        next_at: float | None = None,
    ) -> None:
        at = time.time() if now is None else now
        # written with the next statement or commit, several in one round trip: an outcome
        # is durable with the next attempt's `sending`, as in the embedded ledger
        self._outcomes.append(
            (int(state), code, reply, at, next_at, self.worker, self.send_id, row_id)
        )

    def skip(self, blocked: Iterable[tuple[int, str]], reason: str) -> list[int]:
        """Leave out those not yet sent who unsubscribed (claimed by anyone: a claim of
        another sender then fails at `start`)."""
        pairs = list(blocked)
        if not pairs:
            return []
        keys = [_signed(compact) for compact, _ in pairs]
        rows = self._sql(
            "SELECT id, khash, list_path FROM send_recipients "
            "WHERE send_id = %s AND khash = ANY(%s) AND state IN (0, 3)",
            (self.send_id, keys),
        ).fetchall()
        wanted: dict[int, set[str]] = {}
        for compact, path in pairs:
            wanted.setdefault(_signed(compact), set()).add(path)
        ids = [int(i) for i, kh, path in rows if "" in wanted[kh] or path in wanted[kh]]
        self._sql(
            "UPDATE send_recipients SET state = 6, reply = %s, at = %s "
            "WHERE send_id = %s AND id = ANY(%s) AND state IN (0, 3)",
            (reason, time.time(), self.send_id, ids),
        )
        return ids

    # -- run boundaries ----------------------------------------------------------------------

    def recover(self) -> int:
        """What senders whose lease expired left in flight becomes unknown (their claims go
        back to pending); a live sender's attempts are its own."""
        return leases.recover_expired(self)

    def retry_now(self) -> int:
        params = {"me": self.worker, "send": self.send_id, "now": True}
        count = len(self._sql(_CLAIM_DEFERRED, params).fetchall())
        self.commit()
        return count

    def resend_unknown(self) -> int:
        sql = (
            "UPDATE send_recipients SET state = 0, code = NULL, reply = NULL, worker = NULL "
            "WHERE send_id = %s AND state = 5"
        )
        count = int(self._sql(sql, (self.send_id,)).rowcount)
        self.commit()
        return count

    # -- reporting ---------------------------------------------------------------------------

    def counts(self, *, live: bool = False) -> dict[str, int]:
        """Rows per state name; `sending` rows count as pending while a send runs (`live`),
        else as unknown."""
        counts = dict.fromkeys((state.label for state in State), 0)
        sql = "SELECT state, count(*) FROM send_recipients WHERE send_id = %s GROUP BY state"
        for state, n in self._sql(sql, (self.send_id,)).fetchall():
            counts[State(state).label] = int(n)
        in_flight = counts.pop("sending")
        counts["pending" if live else "unknown"] += in_flight
        return counts

    def workers(self) -> list[WorkerShare]:
        """Each sender's outcomes (rows carried over from another send: "carried over")."""
        rows = self._sql(
            """
            SELECT coalesce(r.worker, 'carried over'), r.state, count(*),
                   bool_or(w.finished_at IS NULL AND w.lease_until > now())
            FROM send_recipients r LEFT JOIN send_workers w
              ON w.send_id = r.send_id AND w.worker = r.worker
            WHERE r.send_id = %s AND r.state NOT IN (0, 6)
            GROUP BY 1, 2 ORDER BY 1
            """,
            (self.send_id,),
        ).fetchall()
        shares: dict[str, dict[str, int]] = {}
        live: dict[str, bool] = {}
        for worker, state, n, alive in rows:
            share = shares.setdefault(worker, dict.fromkeys(_SHARE_STATES, 0))
            share[State(state).label] += int(n)
            live[worker] = bool(alive)
        return [WorkerShare(w, counts, live[w]) for w, counts in shares.items()]

    def emails(self, *states: State) -> Iterator[str]:
        sql = "SELECT email FROM send_recipients WHERE send_id = %s AND state = ANY(%s) ORDER BY id"
        rows = self._sql(sql, (self.send_id, [int(s) for s in states])).fetchall()
        return (str(r[0]) for r in rows)

    def failures(self) -> Iterator[Failure]:
        sql = (
            "SELECT email, code, reply, at FROM send_recipients WHERE send_id = %s AND state = 4 "
            "ORDER BY id"
        )
        rows = self._sql(sql, (self.send_id,)).fetchall()
        return (Failure(r[0], r[1], r[2] or "", float(r[3] or 0.0)) for r in rows)

    # -- what came back later (the bounce mailbox) -------------------------------------------

    def row(self, row_id: int) -> Row | None:
        """The recipient in row `row_id` (a return path names it), or None."""
        sql = f"{_ROW} AND id = %s"
        found = self._sql(sql, (self.send_id, row_id)).fetchone()
        return _row(found) if found else None

    def row_of(self, key: str) -> Row | None:
        """The recipient with the address key `key` (addresses.address_key), or None."""
        sql = f"{_ROW} AND khash = %s"
        found = self._sql(sql, (self.send_id, _signed(key_hash(key)))).fetchone()
        return _row(found) if found else None

    def record_return(self, row_id: int, kind: str, status: str, at: float) -> bool:
        """Record a bounce ("hard", "soft") or a complaint of row `row_id`; False when that
        row already had one of this kind (the same report read twice changes nothing)."""
        added = self._sql(
            "INSERT INTO send_returns (send_id, id, kind, status, at) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (self.send_id, row_id, kind, status, at),
        )
        self.commit()
        return bool(added.rowcount)

    def returned(self) -> dict[str, int]:
        """How many recipients bounced later (hard or soft) and how many complained."""
        bounced, complained = self._sql(
            "SELECT count(DISTINCT id) FILTER (WHERE kind <> 'complaint'),"
            " count(*) FILTER (WHERE kind = 'complaint') FROM send_returns WHERE send_id = %s",
            (self.send_id,),
        ).fetchone()
        return {"bounced": int(bounced or 0), "complained": int(complained or 0)}


_SHARE_STATES = ("sent", "failed", "deferred", "unknown", "sending")


def _values(ord_: int, entry: Entry) -> tuple[Any, ...]:
    fields = json.dumps(dict(entry.fields), ensure_ascii=False) if entry.fields else "{}"
    khash = _signed(key_hash(entry.key))
    return (ord_, khash, entry.email, entry.name, entry.list_path, fields)


def _row(r: tuple[Any, ...]) -> Row:
    fields = r[4] if isinstance(r[4], dict) else {}
    return Row(int(r[0]), r[1], r[2] or "", r[3] or "", fields, int(r[5]))


def _signed(compact: int) -> int:
    """addresses.key_hash's unsigned 64 bits as PostgreSQL's bigint."""
    return compact - (1 << 64) if compact >= 1 << 63 else compact

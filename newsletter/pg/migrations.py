"""The store's schema: numbered migrations, applied in order by `newsletter store migrate`.

`MIGRATIONS` is the list of (version, SQL); a new version is one more entry at its end (never
edit one that was released: stores out there ran it). `migrate` applies the missing ones in
one transaction under an advisory lock, so running it twice, or on two machines at once, is
safe. Every command that uses the store first checks the version (`require_current`) and
refuses a mismatch: an older schema would lose data silently, a newer one is not understood.
"""

from __future__ import annotations

from newsletter.errors import StoreSchemaMismatch
from newsletter.pg.connection import Conn, reporting

# pg_advisory_xact_lock key of `migrate`: "newsletter" in a signed 64-bit number
LOCK_KEY = 0x6E6577736C657474

# 1: the send ledgers (several senders, claims with leases, a shared rate)
SENDS = """
CREATE TABLE sends (
    id bigserial PRIMARY KEY,
    slug text NOT NULL,               -- the issue's slug
    destination text NOT NULL,        -- "outbox" or "smtp://host:port"
    digest text NOT NULL,             -- the rendered content it is bound to (Rendered.digest)
    content text NOT NULL DEFAULT '', -- the issue's content digest (Rendered.content)
    replaced_at timestamptz,          -- `--on-change restart` set it aside: a new send follows
    snapshot_at timestamptz,          -- when the first sender recorded the recipients
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sends_current ON sends (slug, destination) WHERE replaced_at IS NULL;

CREATE TABLE send_meta (
    send_id bigint NOT NULL REFERENCES sends ON DELETE CASCADE,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (send_id, name)
);

CREATE TABLE send_workers (
    send_id bigint NOT NULL REFERENCES sends ON DELETE CASCADE,
    worker text NOT NULL,             -- host:pid:start time, unique per process
    lease_until timestamptz NOT NULL, -- renewed while it works; past it, others recover
    finished_at timestamptz,          -- it stopped cleanly (nothing of it is in flight)
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (send_id, worker)
);

CREATE TABLE send_recipients (
    send_id bigint NOT NULL REFERENCES sends ON DELETE CASCADE,
    id integer NOT NULL,              -- plan order
    khash bigint NOT NULL,            -- 64-bit hash of the address key (dedupe, unsubscribes)
    email text NOT NULL,
    name text NOT NULL DEFAULT '',
    list_path text NOT NULL DEFAULT '',
    fields jsonb NOT NULL DEFAULT '{}',
    state smallint NOT NULL DEFAULT 0, -- store.State: pending 0, sending 1, sent 2, ...
    attempts integer NOT NULL DEFAULT 0,
    worker text,                      -- who claimed it (a claim) or attempted it (sending, ...)
    at double precision,              -- unix time of the last change
    next_at double precision,         -- deferred: unix time of the next attempt
    code integer,
    reply text,
    PRIMARY KEY (send_id, id),
    UNIQUE (send_id, khash)
);
CREATE INDEX send_recipients_free ON send_recipients (send_id, id)
    WHERE state = 0 AND worker IS NULL;
CREATE INDEX send_recipients_worker ON send_recipients (send_id, worker);

CREATE TABLE send_grants (           -- send times granted under [smtp] rate/hourly/daily
    send_id bigint NOT NULL REFERENCES sends ON DELETE CASCADE,
    worker text NOT NULL,
    at double precision NOT NULL      -- unix time (the store's clock)
);
CREATE INDEX send_grants_at ON send_grants (send_id, at);

CREATE TABLE send_rate (             -- one row per send: the lock its senders take turns on
    send_id bigint PRIMARY KEY REFERENCES sends ON DELETE CASCADE
);
"""

# 2: the named lists, their rows, every status change, the suppression entries
LISTS = """
CREATE SEQUENCE subscriber_changes;  -- one number per change that can block mail (watch)

CREATE TABLE lists (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,        -- `--into NAME`, `--list NAME`
    columns text[] NOT NULL DEFAULT '{}', -- the extra columns of its rows, in import order
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscribers (
    list_id integer NOT NULL REFERENCES lists ON DELETE CASCADE,
    position bigserial,               -- row order, as the rows of a CSV list
    khash bigint NOT NULL,            -- 64-bit hash of the address key (one row per list)
    email text NOT NULL,
    name text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'subscribed',
    scope text NOT NULL DEFAULT '',   -- `list`: a non-subscribed status blocks this list only
    tags text NOT NULL DEFAULT '',    -- `;`-joined, as in the CSV format
    subscribed_at text NOT NULL DEFAULT '',
    unsubscribed_at text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT '',
    extra jsonb NOT NULL DEFAULT '{}', -- the other columns of the row
    changed bigint NOT NULL DEFAULT nextval('subscriber_changes'),
    PRIMARY KEY (list_id, khash)
);
CREATE INDEX subscribers_order ON subscribers (list_id, position);
CREATE INDEX subscribers_khash ON subscribers (khash);
CREATE INDEX subscribers_changed ON subscribers (changed);

CREATE TABLE suppressed (            -- never mail, never import again (hashed, as the file)
    digest text PRIMARY KEY,          -- sha256 of the address key
    khash bigint NOT NULL,
    reason text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    changed bigint NOT NULL DEFAULT nextval('subscriber_changes')
);
CREATE INDEX suppressed_changed ON suppressed (changed);

CREATE TABLE status_history (        -- every status change and add: when, where, who did it
    id bigserial PRIMARY KEY,
    khash bigint NOT NULL,
    email text NOT NULL,
    list text NOT NULL,               -- the list's name; "" for the suppression entry
    status text NOT NULL,
    at text NOT NULL,                 -- ISO 8601, UTC
    source text NOT NULL              -- "cli", "import", "unsubscribe link", ...
);
CREATE INDEX status_history_khash ON status_history (khash);

CREATE TABLE consent (               -- what a person agreed to, as people.sqlite keeps it
    id bigserial PRIMARY KEY,
    khash bigint NOT NULL,
    email text NOT NULL,
    list text NOT NULL,
    at text NOT NULL,
    source text NOT NULL,
    text text NOT NULL,
    confirmed_at text NOT NULL
);
CREATE INDEX consent_khash ON consent (khash);

CREATE TABLE soft_bounces (
    id bigserial PRIMARY KEY,
    khash bigint NOT NULL,
    email text NOT NULL,
    at text NOT NULL,
    issue text NOT NULL,
    status text NOT NULL              -- the enhanced status code, "4.2.2"
);
CREATE INDEX soft_bounces_khash ON soft_bounces (khash);
"""

# 3: sign-ups from the web form waiting for (or past) their confirmation, as people.sqlite's
SIGNUPS = """
CREATE TABLE signups (
    id bigserial PRIMARY KEY,
    khash bigint NOT NULL,
    email text NOT NULL,
    list text NOT NULL,               -- the list's name
    name text NOT NULL,
    asked_at text NOT NULL,           -- ISO 8601, UTC: when the form was sent (the token has it)
    consent text NOT NULL,            -- the sentence the form showed
    confirmed_at text NOT NULL DEFAULT ''
);
CREATE INDEX signups_khash ON signups (khash);
CREATE INDEX signups_asked ON signups (asked_at);
"""

# 4: what came back after a message was accepted (the bounce mailbox), as a ledger's `returns`
RETURNS = """
CREATE TABLE send_returns (
    send_id bigint NOT NULL REFERENCES sends ON DELETE CASCADE,
    id integer NOT NULL,              -- send_recipients.id
    kind text NOT NULL,               -- "hard", "soft" (bounces) or "complaint"
    status text NOT NULL,             -- the DSN's status, e.g. 5.1.1; "" for a complaint
    at double precision NOT NULL,     -- unix time of the report
    PRIMARY KEY (send_id, id, kind)
);
CREATE INDEX send_recipients_khash ON send_recipients (khash);  -- a person's rows (show, purge)
"""

# 5: each sender's session, so that the others can end it once its lease expired (a sender
# frozen mid-pipeline holds its row locks in a session the server never times out)
SESSIONS = """
ALTER TABLE send_workers ADD COLUMN backend_pid integer, ADD COLUMN backend_start timestamptz;
"""

MIGRATIONS: list[tuple[int, str]] = [
    (1, SENDS),
    (2, LISTS),
    (3, SIGNUPS),
    (4, RETURNS),
    (5, SESSIONS),
]

LATEST = MIGRATIONS[-1][0]

_CREATE_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def version(conn: Conn) -> int:
    """The schema version of the store (0: never migrated)."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Conn, where: str) -> tuple[int, int]:
    """Apply the missing migrations in one transaction; (version before, version after)."""
    with reporting(where, "cannot migrate"), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))  # one migrate at a time
        conn.execute(_CREATE_VERSION)
        before = version(conn)
        if before > LATEST:
            raise StoreSchemaMismatch(where, before, LATEST)
        for number, sql in MIGRATIONS:
            if number > before:
                conn.execute(sql.encode())  # several statements: sent as one simple query
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
    return before, LATEST


def require_current(conn: Conn, where: str) -> None:
    """StoreSchemaMismatch unless the store is at this newsletter's version."""
    with reporting(where, "cannot read the schema version"):
        found = version(conn)
    if found != LATEST:
        raise StoreSchemaMismatch(where, found, LATEST)

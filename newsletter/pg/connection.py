"""Connections to the store: libpq finds the password (the URL, PGPASSWORD, ~/.pgpass), and
every failure of the server or the network becomes StoreUnavailable naming host and database,
never the password."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from newsletter.errors import StoreUnavailable
from newsletter.urls import user_password

Conn = psycopg.Connection[tuple[Any, ...]]

CONNECT_TIMEOUT = 10  # seconds; a URL's own connect_timeout wins


def where(url: str) -> str:
    """`host:port/dbname` of a URL as libpq would resolve it, for messages (no password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unreadable [store] url"
    host = str(params.get("host") or os.environ.get("PGHOST") or "the local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(params.get("user") or os.environ.get("PGUSER") or "")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or user or "postgres")
    return scrub(f"{host}:{port}/{dbname}", url)  # a password libpq took for a host or a path


def connect(url: str, *, autocommit: bool = False) -> Conn:
    """A connection to the store; StoreUnavailable (host, database, why) when there is none."""
    place = where(url)
    try:
        with reporting(place, "cannot connect"):
            params = conninfo_to_dict(url)
            params.setdefault("connect_timeout", CONNECT_TIMEOUT)
            params.setdefault("application_name", "newsletter")
            conn = psycopg.connect(make_conninfo("", **params), autocommit=autocommit)
            _durable_commits(conn)
            return conn
    except StoreUnavailable as exc:  # libpq may quote a part of a URL it cannot parse
        raise StoreUnavailable(place, exc.action, scrub(exc.reason, url)) from None


def _durable_commits(conn: Conn) -> None:
    """A commit must be on the server's disk when it returns: a send records `sending` before
    the data goes out. A server set to synchronous_commit = off is asked for `local` in our
    sessions (a stronger setting, for replicas, is left alone)."""
    found = conn.execute("SHOW synchronous_commit").fetchone()
    if found and found[0] == "off":
        conn.execute("SET synchronous_commit = local")
    if not conn.autocommit:
        conn.commit()  # the SET lasts for the session only once committed


def scrub(text: str, url: str) -> str:
    """`text` without the URL's password, wherever a message quoted it."""
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    return text


def _passwords(url: str) -> list[str]:
    """The password of a URL as written and decoded (user part and `?password=`)."""
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
    # by hand too: urlsplit refuses a URL libpq quotes whole in its error (`[::1` unclosed),
    # and splits a password holding a `/`, `?` or `#` elsewhere than a reader would
    found.append(user_password(url))
    query = url.partition("://")[2].partition("?")[2].partition("#")[0]
    keys = ("password", "sslpassword")
    found += [value for name, value in parse_qsl(query) if name.lower() in keys]
    found += [part.partition("=")[2] for part in query.split("&")
              if part.partition("=")[0].lower() in keys]  # raw, as written  # fmt: skip
    found += [unquote(p) for p in found]
    return sorted({p for p in found if p}, key=len, reverse=True)


@contextlib.contextmanager
def reporting(place: str, action: str) -> Iterator[None]:
    """psycopg's errors of the server or the link as StoreUnavailable (one line, no secret)."""
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise  # a lock_timeout we set: the caller tries again later
    except psycopg.errors.IdleInTransactionSessionTimeout:
        why = (
            "this sender's lease expired (it was stopped or cut off for longer than [store] "
            "lease) and the server ended its session; the other senders took over"
        )
        raise StoreUnavailable(place, action, why) from None
    except psycopg.errors.AdminShutdown:
        why = (
            "the server ended this session: it is shutting down, or this sender's lease "
            "expired (it was stopped or cut off for longer than [store] lease) and another "
            "sender took over"
        )
        raise StoreUnavailable(place, action, why) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailable(place, action, reason(exc)) from None
    except psycopg.ProgrammingError as exc:  # a URL libpq cannot parse
        raise StoreUnavailable(place, action, reason(exc)) from None


def reason(exc: Exception) -> str:
    """The first line of a driver's message, stripped of libpq's `connection to server ...`
    preamble, which repeats what `where` says."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    _, sep, tail = text.rpartition(" failed: ")
    return tail if sep else text

"""The shared store in PostgreSQL ([store] url): lists and send ledgers for several machines.

Layering inside the package, bottom up: `connection` (connect, and psycopg's errors as
StoreUnavailable, the URL shown without its password), `migrations` (the numbered schema and
its version check), then the implementations of the protocols of store.py, and `check` (what
`newsletter store check` shows).

Nothing here is imported unless [store] url is set: the embedded default (CSV lists, SQLite
ledgers) never loads psycopg. `require_driver` turns a missing psycopg into one clear error.
"""

from __future__ import annotations

from newsletter.errors import StoreDriverMissing
from newsletter.urls import masked


def require_driver(url: str) -> None:
    """StoreDriverMissing unless psycopg (the extra `newsletter[postgres]`) can be imported."""
    try:
        import psycopg  # noqa: F401  # needed by every module of the package
    except ImportError:
        raise StoreDriverMissing(masked(url)) from None

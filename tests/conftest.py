"""Shared fixtures (a test CA, real SMTP servers from tests/smtpd.py) and hypothesis settings."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, settings

from tests.pgcluster import pg_cluster, pg_url  # noqa: F401  # fixtures of the store's tests
from tests.send_helpers import TEST_SECRET
from tests.smtpd import HOST, PASSWORD, USER, SmtpServer

# On a loaded machine every example runs slower: hypothesis's per-example deadline (200 ms) and
# its too_slow health check then fail correct code. This profile drops both timing limits and
# keeps everything else; it is the default (`pytest --hypothesis-profile=...` still overrides).
settings.register_profile(
    "newsletter", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("newsletter")


@pytest.fixture(autouse=True)
def newsletter_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test starts with NEWSLETTER_SECRET set (SMTP sends, `test` and `serve` need it),
    to a value of the minimum length; a test about its absence deletes it."""
    monkeypatch.setenv("NEWSLETTER_SECRET", TEST_SECRET)
    return TEST_SECRET


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority; clients trust it through `client_tls`."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The test server's TLS context: a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA (and verifies certificates)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def make_smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Start test SMTP servers with any SmtpServer options; all stop at the end of the test."""
    servers: list[SmtpServer] = []

    def make(**options: Any) -> SmtpServer:
        server = SmtpServer(**options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(
    make_smtp_server: Callable[..., SmtpServer], server_tls: ssl.SSLContext
) -> SmtpServer:
    """A server requiring STARTTLS and AUTH as USER / PASSWORD (trusted via `client_tls`)."""
    return make_smtp_server(starttls=server_tls, users={USER: PASSWORD})


@pytest.fixture
def plain_smtp_server(make_smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    """A server without TLS or AUTH, on loopback (security = none is allowed there)."""
    return make_smtp_server()

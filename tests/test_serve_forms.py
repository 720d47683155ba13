"""`serve` parses POST forms within bounds (size, fields, nesting), answers HEAD like GET, and
gives 404/405 the same private headers as every other page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from newsletter.config import load_config
from newsletter.serve import MAX_BODY, unsubscribe_app
from newsletter.subscribers import CsvStore, suppressed_path
from newsletter.tokens import make_token
from newsletter.web import MAX_FIELDS
from tests.serve_helpers import SECRET, make_folder, running, write_list

ADA = "ada@example.org"
FIELD = b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click'
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PRIVATE = {"cache-control": "no-store", "x-robots-tag": "noindex"}


@dataclass
class Site:
    url: str
    root: Path
    token: str

    @property
    def link(self) -> str:
        return f"{self.url}/unsubscribe/{self.token}"

    def files(self) -> dict[str, bytes]:
        """Every file of the folder but newsletter.toml: what a refused request must not change."""
        found = sorted(p for p in self.root.rglob("*") if p.is_file())
        return {str(p): p.read_bytes() for p in found if p.name != "newsletter.toml"}


def folder(root: Path) -> tuple[Path, str]:
    make_folder(root)
    write_list(root / "subscribers" / "main.csv", [ADA, "bob@example.org"])
    return root, make_token(SECRET, load_config(explicit=root).list_id, ADA)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root, token = folder(tmp_path)
    with running(unsubscribe_app(load_config(explicit=root), SECRET)) as url:
        yield Site(url, root, token)


def multipart(parts: list[bytes], boundary: bytes = b"b0") -> tuple[dict[str, str], bytes]:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    kind = f"multipart/form-data; boundary={boundary.decode()}"
    return {"Content-Type": kind}, body + b"--" + boundary + b"--\r\n"


def nested(depth: int) -> bytes:
    """A part holding a multipart holding a multipart ... `depth` levels deep."""
    inner = FIELD
    for level in range(depth, 0, -1):
        boundary = f"n{level}".encode()
        inner = (
            b"Content-Type: multipart/form-data; boundary="
            + boundary
            + b"\r\n\r\n"
            + multipart([inner], boundary)[1]
        )
    return inner


def refused(site: Site, headers: dict[str, str], body: bytes, caplog) -> httpx.Response:
    """POST, and check what every refused form gets: 400, nothing written, one log line."""
    before = site.files()
    with caplog.at_level(logging.DEBUG):
        answer = httpx.post(site.link, headers=headers, content=body, timeout=30)
    assert answer.status_code == 400
    assert "Nothing was changed" in answer.text
    assert site.files() == before
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert len(server) <= 1, [r.getMessage()[:200] for r in server]
    assert not [r for r in server if site.token in r.getMessage()]
    return answer


def open_nest(depth: int) -> bytes:
    """Multiparts opened inside each other and never closed: the stdlib parser recursed on it."""
    levels = (
        b"--%d\r\nContent-Type: multipart/mixed; boundary=%d\r\n\r\n" % (n, n + 1)
        for n in range(depth)
    )
    return b"".join(levels)


def test_a_58_kb_deeply_nested_multipart_is_a_400(site: Site, caplog) -> None:
    """The reported attack: a thousand nested multiparts under a valid token (was a 500)."""
    body = open_nest(1050)
    assert 50_000 < len(body) < 64 * 1024
    refused(site, {"Content-Type": "multipart/form-data; boundary=0"}, body, caplog)


def test_a_small_nested_multipart_is_a_400(site: Site, caplog) -> None:
    """Nesting is refused whatever the size: a form is one level of fields (RFC 7578)."""
    headers, body = multipart([FIELD, nested(3)])
    assert len(body) < MAX_BODY
    refused(site, headers, body, caplog)


def test_too_many_parts_is_a_400(site: Site, caplog) -> None:
    """More parts than a form needs, however small the body."""
    filler = b'Content-Disposition: form-data; name="x"\r\n\r\n1'
    headers, body = multipart([FIELD] + [filler] * MAX_FIELDS)
    assert len(body) < MAX_BODY
    refused(site, headers, body, caplog)


def test_too_many_urlencoded_fields_is_a_400(site: Site, caplog) -> None:
    """The same bound for form-urlencoded bodies."""
    body = b"List-Unsubscribe=One-Click" + b"&x=1" * MAX_FIELDS
    assert len(body) < MAX_BODY
    refused(site, {"Content-Type": "application/x-www-form-urlencoded"}, body, caplog)


def test_a_body_over_the_limit_is_a_400(site: Site, caplog) -> None:
    """A one-click body padded past MAX_BODY (a real one is 26 bytes)."""
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * MAX_BODY
    refused(site, {"Content-Type": "application/x-www-form-urlencoded"}, body, caplog)


def test_a_flat_multipart_form_still_unsubscribes(site: Site) -> None:
    """A form with a few fields and a preamble, as browsers and mail providers send, works."""
    other = b'Content-Disposition: form-data; name="x"\r\nContent-Type: text/plain\r\n\r\n1'
    headers, body = multipart([other, FIELD])
    answer = httpx.post(site.link, headers=headers, content=b"preamble\r\n" + body, timeout=10)
    assert answer.status_code == 200
    assert "unsubscribed" in (site.root / "subscribers" / "main.csv").read_text()


async def post_in_process(app: Starlette, path: str, body: bytes, kind: str) -> httpx.Response:
    """The app in this process, no socket: fast enough for many examples."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post(path, content=body, headers={"Content-Type": kind})


PIECES = st.sampled_from(
    [
        b"--b0",
        b"--b0--",
        b"\r\n",
        b"\r\n\r\n",
        b" ",
        FIELD,
        b'Content-Disposition: form-data; name="List-Unsubscribe"',
        b"Content-Type: multipart/form-data; boundary=b0",
        b"Content-Type: multipart/mixed",
        b"Content-Transfer-Encoding: base64",
        b"One-Click",
        b"\xff\x00",
    ]
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pieces=st.lists(PIECES | st.binary(max_size=20), max_size=30),
    kind=st.sampled_from(
        [
            "multipart/form-data; boundary=b0",
            "multipart/form-data",
            "multipart/mixed; boundary=b0",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
)
@example(pieces=[open_nest(1050)], kind="multipart/form-data; boundary=0")
@example(pieces=[b"--b0\r\n", nested(300), b"\r\n--b0--"], kind="multipart/form-data; boundary=b0")
def test_any_body_gets_a_page_never_a_500(tmp_path: Path, pieces: list[bytes], kind: str) -> None:
    """Whatever the POST body: 200 or 400 with a page; a 400 writes nothing."""
    root = tmp_path / "site"
    if not root.exists():
        folder(root)
    token = make_token(SECRET, load_config(explicit=root).list_id, "nobody@example.org")
    app = unsubscribe_app(load_config(explicit=root), SECRET)
    answer = asyncio.run(post_in_process(app, f"/unsubscribe/{token}", b"".join(pieces), kind))
    assert answer.status_code in (200, 400)
    assert "<title>" in answer.text
    if answer.status_code == 400:
        assert not suppressed_path(root).exists()
    else:
        suppressed_path(root).unlink()


def test_head_answers_like_get_and_changes_nothing(site: Site) -> None:
    """HEAD on a valid link: GET's status and headers, no body, no file changed."""
    before = site.files()
    get = httpx.get(site.link, timeout=10)
    head = httpx.head(site.link, timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert dict(head.headers.items()) | {"date": ""} == dict(get.headers.items()) | {"date": ""}
    assert site.files() == before


def test_head_on_a_bad_link_answers_like_get(site: Site) -> None:
    """HEAD on a broken token: the same 400 as GET."""
    url = f"{site.url}/unsubscribe/garbage"
    assert httpx.head(url, timeout=10).status_code == httpx.get(url, timeout=10).status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/unsubscribe", 404),
        ("HEAD", "/robots.txt", 404),
        ("PUT", "/unsubscribe/TOKEN", 405),
        ("DELETE", "/unsubscribe/TOKEN", 405),
    ],
)
def test_404_and_405_carry_the_private_headers(
    site: Site, method: str, path: str, status: int
) -> None:
    """Cache-Control and X-Robots-Tag on every answer, errors included; 405 says what is allowed."""
    url = site.url + path.replace("TOKEN", site.token)
    answer = httpx.request(method, url, timeout=10)
    assert answer.status_code == status
    assert {k: answer.headers.get(k) for k in PRIVATE} == PRIVATE
    assert answer.headers["referrer-policy"] == "no-referrer"
    if status == 405:
        assert set(answer.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_an_unexpected_error_is_a_private_500_page(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (stood in for by a RuntimeError: no real input reaches one) still gets the headers."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(CsvStore, "set_status", broken)  # the store serve writes through
    answer = httpx.post(site.link, headers=FORM, content=b"List-Unsubscribe=One-Click", timeout=10)
    assert answer.status_code == 500
    assert {k: answer.headers.get(k) for k in PRIVATE} == PRIVATE
    assert "unsubscribed" not in answer.text.lower()


def test_a_client_gone_before_its_body_ended_is_one_log_line(site: Site, caplog) -> None:
    """A POST whose sender closes the connection before the Content-Length it announced is one
    warning line, nothing written: not "Exception in ASGI application" and a traceback."""
    import socket
    from urllib.parse import urlsplit

    from tests.waits import HANG, wait_until

    before = site.files()
    url = urlsplit(site.link)
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    with caplog.at_level(logging.DEBUG):
        with socket.create_connection((url.hostname, url.port)) as client:
            client.sendall(head.encode() + b"List-Unsubscribe=One-Click")
            client.shutdown(socket.SHUT_WR)
            client.recv(1)  # the server's answer, or the end of the connection: it has read
        server = lambda: [  # noqa: E731  # re-read while waiting
            r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
        ]
        wait_until(lambda: bool(server()), "the server logging the request", stall=HANG)
    records = server()
    assert len(records) == 1, [r.getMessage()[:200] for r in records]
    assert records[0].exc_info is None
    assert "\n" not in records[0].getMessage()
    assert site.files() == before

"""Web apps on one small ASGI stack (Starlette + uvicorn): the live preview of an issue, and the
one-click unsubscribe endpoint (RFC 8058) that messages link to.

The preview re-renders when the issue, newsletter.toml or a template changes (checked by
modification times when the page polls), shows errors in the page instead of dying, and
reloads the page itself.

The unsubscribe endpoint answers `{base_url path}/unsubscribe/{token}`: GET (and HEAD) shows a
page with a button and changes nothing (link scanners fetch every URL); POST with
`List-Unsubscribe=One-Click` sets the reader's status to unsubscribed in every list holding the
address, and answers 200 only once that is on disk: in the lists' journals (folded into the CSV
files within seconds and when the server stops: store.SubscriberStore.batched), or, for a list
that cannot be read or written, in the suppression file (which every send honours). When even
that cannot be written it answers 503 with Retry-After. A token that does not verify gets the
same 400 whatever it holds.

The same app serves the sign-up form and its confirmation links (serve_signup.py) unless
[signup] enabled = false.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import html
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from newsletter.addresses import address_key, key_digest
from newsletter.config import MAKE_SECRET, SECRET_ENV, Config, load_config, secret
from newsletter.errors import (
    BadForm,
    CannotListen,
    InvalidToken,
    NewsletterError,
    SecretMissing,
)
from newsletter.models import Subscriber
from newsletter.render import fill, preview_value, render_issue
from newsletter.store import StatusChange, SubscriberStore
from newsletter.tokens import verify_token
from newsletter.web import form_fields as _form_fields
from newsletter.web import multipart_fields as _multipart_fields
from newsletter.web import page as _page
from newsletter.web import scrub as _scrub

_RELOAD = """<script>
(function () {
  var seen = %s;
  setInterval(function () {
    fetch("/__version").then(function (r) { return r.text(); }).then(function (v) {
      if (v !== seen) { location.reload(); }
    }).catch(function () {});
  }, 700);
})();
</script>"""


class Preview:
    """Renders on demand; keeps the last result until a watched file changes."""

    def __init__(
        self, issue: Path, config_path: Path, subscriber: Subscriber | None = None
    ) -> None:
        self.issue = issue
        self.config_path = config_path
        self.subscriber = subscriber  # whose merge fields fill the page (`preview --as`)
        self.version = ""
        self.html = ""
        self.text = ""

    def watched(self, config: Config | None) -> list[Path]:
        files = [self.issue, self.config_path]
        for folder in config.template_dirs() if config else []:
            files.extend(sorted(folder.rglob("*.j2")))
        return files

    def current_version(self, config: Config | None = None) -> str:
        stamps = []
        for path in self.watched(config):
            try:
                stat = os.stat(path)
                stamps.append(f"{stat.st_mtime_ns}:{stat.st_size}")
            except OSError:
                stamps.append("missing")
        return str(hash(tuple(stamps)))

    def refresh(self) -> str:
        try:
            config = load_config(explicit=self.config_path)
        except NewsletterError as exc:
            config = None
            error: NewsletterError | None = exc
        version = self.current_version(config)
        if version == self.version:
            return version
        self.version = version
        if config is not None:
            error = self._render(config)
        if error is not None:
            self.html = _error_page(str(error))
            self.text = f"error:\n{error}\n"
        return version

    def _render(self, config: Config) -> NewsletterError | None:
        try:
            rendered = render_issue(self.issue, config)
        except NewsletterError as exc:
            return exc
        value = preview_value(config.newsletter.base_url, self.subscriber)
        self.html = fill(rendered.html, value, html=True)
        self.text = fill(rendered.text, value, html=False)
        return None


def _error_page(message: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Preview error</title></head>"
        "<body style='font-family: sans-serif; margin: 2em'><h1>The issue does not render</h1>"
        f"<pre style='white-space: pre-wrap; color: #8b0000'>{html.escape(message)}</pre>"
        "<p>Fix the file and save: this page reloads by itself.</p></body></html>"
    )


def preview_app(issue: Path, config: Config, subscriber: Subscriber | None = None) -> Starlette:
    preview = Preview(issue, config.path, subscriber)

    def page(request: Request) -> Response:
        version = preview.refresh()
        script = _RELOAD % repr(version).replace("'", '"')
        body = preview.html
        body = body.replace("</body>", script + "</body>") if "</body>" in body else body + script
        return HTMLResponse(body)

    def text(request: Request) -> Response:
        preview.refresh()
        return PlainTextResponse(preview.text)

    def version(request: Request) -> Response:
        return PlainTextResponse(preview.refresh())

    routes: list[Route] = [
        Route("/", page),
        Route("/text", text),
        Route("/__version", version),
    ]
    return Starlette(routes=routes)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or one error naming the address and what to do.
    (Left to uvicorn, a port over 65535 is an OverflowError traceback, and a port in use is a
    log line and exit 3, which means "recipients remain" elsewhere.)"""
    if not 0 <= port <= 65535:
        raise CannotListen(host, port, "a port is a number from 1 to 65535", "pass --port N")
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise CannotListen(host, port, *_why_not(exc, port)) from None
    return sock


def _why_not(exc: OSError, port: int) -> tuple[str, str]:
    """Why a bind failed and what to pass instead, in our words: the OS's text ("[Errno 98]
    Address already in use") names neither the port nor the option."""
    if isinstance(exc, socket.gaierror):
        return "no such host name or address", "pass --host ADDRESS (e.g. 127.0.0.1)"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use by another program", "pass another with --port N"
    if exc.errno == errno.EACCES:
        return f"port {port} needs administrator rights", "pass a port from 1024 up: --port N"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine", "pass --host ADDRESS (e.g. 127.0.0.1)"
    name = errno.errorcode.get(exc.errno or 0, "an error")
    return f"the system refused it ({name})", "try another --port N or --host ADDRESS"


def _serve(app: ASGIApp, sock: socket.socket, *, access_log: bool = True) -> None:
    import uvicorn

    # proxy_headers off: the sign-up endpoint reads X-Forwarded-For itself, only from the
    # proxies [signup] trusted_proxies names (uvicorn would trust its own setting instead)
    settings = uvicorn.Config(app, log_level="warning", access_log=access_log, proxy_headers=False)
    server = uvicorn.Server(settings)
    server.run(sockets=[sock])


def run_preview(
    issue: Path, config: Config, *, sock: socket.socket, subscriber: Subscriber | None = None
) -> None:
    _serve(preview_app(issue, config, subscriber), sock)


# ---------------------------------------------------------------------------------------------
# The unsubscribe endpoint

ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's POST body, as a form field
MAX_BODY = 8 * 1024  # a one-click body is 26 bytes (multipart: ~150); far larger is not one
log = logging.getLogger("newsletter.serve")


def endpoint_secret(config: Config, environ: Mapping[str, str] | None = None) -> bytes:
    """NEWSLETTER_SECRET, required: the endpoint never falls back to a stored secret."""
    env = os.environ if environ is None else environ
    if not env.get(SECRET_ENV):
        raise SecretMissing(
            f"{SECRET_ENV} is not set: `serve` checks unsubscribe tokens with it. Set it to the "
            f"same value the sending machine uses (made once with `{MAKE_SECRET}`)"
        )
    return secret(config, create=False, environ=env)


def route_prefix(base_url: str) -> str:
    """The path part of base_url ('' or '/newsletter'): routes sit under it behind a proxy."""
    return urlsplit(base_url).path.rstrip("/")


def address_hash(email: str) -> str:
    """What the log shows instead of an address: sha256 of its comparison key (as suppressions)."""
    return key_digest(address_key(email))


class Unsubscriber:
    """Applies unsubscribes, each in a thread of its own: inside the store's batch (the app's
    lifespan), concurrent ones share one durable append (store.SubscriberStore.batched)."""

    def __init__(self, config: Config, secret: bytes, store: SubscriberStore) -> None:
        self.config = config
        self.secret = secret
        self.store = store

    def address(self, token: str) -> str | None:
        try:
            return verify_token(self.secret, self.config.list_id, token)
        except InvalidToken:
            return None

    async def unsubscribe(self, email: str) -> StatusChange:
        return await run_in_threadpool(self._write, email)

    def _write(self, email: str) -> StatusChange:
        when = dt.datetime.now(dt.UTC)
        change = self.store.set_status(email, "unsubscribed", when=when, source="unsubscribe link")
        digest = address_hash(email)
        for problem in change.broken:  # the suppression file holds the address: sends skip it
            log.warning(
                "list not updated, unsubscribe kept in the suppression file: list_file=%s "
                "address_sha256=%s reason=%s",
                problem.location() or "?",
                digest,
                _scrub(problem.message),
            )
        log.info(
            "unsubscribed time=%s list=%s address_sha256=%s lists_changed=%d",
            when.replace(microsecond=0).isoformat(),
            self.config.list_id,
            digest,
            len(change.changed),
        )
        return change


def unsubscribe_app(
    config: Config, secret: bytes, store: SubscriberStore | None = None
) -> Starlette:
    """The endpoint for `{base_url}/unsubscribe/{token}` (GET: confirm page; POST: unsubscribe).

    Changes go to `store` (default: the CSV lists of the folder)."""
    if store is None:
        from newsletter.api import Newsletter

        store = Newsletter(config).store  # the one the API would use: the CSV lists by default
    worker = Unsubscriber(config, secret, store)
    name = config.newsletter.name
    lang = config.newsletter.language

    async def endpoint(request: Request) -> Response:
        email = worker.address(request.path_params["token"])
        if email is None:
            return _page(lang, "This link does not work", _BAD_LINK, 400)
        if request.method in ("GET", "HEAD"):  # HEAD: the same answer, the server drops the body
            return _page(lang, f"Unsubscribe from {name}?", _confirm_form(name), 200)
        try:
            fields = await _form(request)
        except BadForm as exc:
            log.warning("refused a POST body: %s", exc.reason)
            return _page(lang, "Nothing was changed", _NOT_ONE_CLICK, 400)
        if ONE_CLICK not in fields:
            return _page(lang, "Nothing was changed", _NOT_ONE_CLICK, 400)
        return await _unsubscribe(worker, email, name, lang)

    async def error(request: Request, exc: Exception) -> Response:
        """404, 405 and 500 as pages with the same headers as every other answer (no caching)."""
        http = exc if isinstance(exc, HTTPException) else HTTPException(500)
        page = _page(lang, http.detail, "", http.status_code)
        page.headers.update(http.headers or {})  # 405 keeps its Allow header
        return page

    path = route_prefix(config.newsletter.base_url) + "/unsubscribe/{token:path}"
    routes = [Route(path, endpoint, methods=["GET", "POST"])]
    if config.signup.enabled and config.newsletter.base_url:  # its links need the public URL
        from newsletter.api import Newsletter
        from newsletter.serve_signup import signup_routes

        lists = Newsletter(config, store=store).list_path  # a list name as the API reads it
        routes += signup_routes(config, secret, store, lists)
    handlers = {404: error, 405: error, 500: error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=_batched(store))
    app.router.redirect_slashes = False  # a redirect would be one more answer without our headers
    return app


def _batched(store: SubscriberStore) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: changes are batched while it serves, and all in place when it stops
    (uvicorn runs this end on SIGTERM and SIGINT too, after the last answer)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(store.batched())
            try:
                yield
            finally:
                await run_in_threadpool(stack.pop_all().close)  # folds: off the event loop

    return lifespan


async def _unsubscribe(worker: Unsubscriber, email: str, name: str, lang: str) -> Response:
    """200 once the change is durable (in the lists, or else the suppression file); else 503."""
    try:
        await worker.unsubscribe(email)
    except (NewsletterError, OSError) as exc:  # even the suppression file could not be written
        log.error(
            "unsubscribe NOT recorded (the client may retry): list=%s address_sha256=%s reason=%s",
            worker.config.list_id,
            address_hash(email),
            _scrub(_reason(exc)),
        )
        return _page(lang, "Please try again", _NOT_SAVED, 503, retry_after=True)
    body = f"<p>You will get no more email from {html.escape(name)}.</p>"
    return _page(lang, "You are unsubscribed", body, 200)


def _reason(exc: NewsletterError | OSError) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or type(exc).__name__}".lstrip(": ")
    return str(exc).replace("\n", "; ")


_BAD_LINK = (
    "<p>This unsubscribe link is not valid: it may have been cut short or changed. "
    "Use the link at the bottom of the latest email, or reply to it and ask to be removed.</p>"
)
_NOT_ONE_CLICK = "<p>Use the button on the unsubscribe page.</p>"
_NOT_SAVED = (
    "<p>Your request could not be saved just now. Please press the button again in a minute.</p>"
)


def _confirm_form(name: str) -> str:
    # No action attribute: the form posts to this very URL, whatever proxy path led here.
    return (
        f"<p>Press the button to stop getting email from {html.escape(name)}.</p>"
        '<form method="post">'
        f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
        '<button type="submit" style="font-size: 1.1em; padding: 0.6em 1.4em">'
        "Unsubscribe</button></form>"
    )


async def _form(request: Request) -> list[tuple[str, str]]:
    """The fields of a POST body (form-urlencoded or multipart/form-data); BadForm past a bound."""
    body = await _read_body(request)
    kind = request.headers.get("content-type", "")
    if kind.lower().lstrip().startswith("multipart/"):
        return _multipart_fields(kind, body)
    return _form_fields(body)


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise BadForm(f"body over {MAX_BODY} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer; a warning line, not an ASGI traceback
        raise BadForm("the client closed the connection before its body ended") from None
    return b"".join(chunks)


def run_unsubscribe(
    config: Config, secret: bytes, *, sock: socket.socket, store: SubscriberStore | None = None
) -> None:
    """Serve the endpoint until interrupted. No access log: request paths carry tokens."""
    _serve(unsubscribe_app(config, secret, store), sock, access_log=False)

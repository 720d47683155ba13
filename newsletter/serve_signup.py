"""The sign-up form of `newsletter serve`: double opt-in at `{base_url}/subscribe`.

GET shows a small form (email, optional name, a list choice when [signup] lists names several,
the consent sentence). POST answers the same page whatever the address, so nobody can learn
who is subscribed: the store and the mail are reached only after the answer has gone out, so
the time it takes tells nothing either. Then the store holds the sign-up (`pending` for someone
new) and, unless the address asked within the hour, one confirmation message goes out with a
signed link to `{base_url}/confirm/{token}` that expires ([signup] expires_days). GET on that
link shows a Confirm button and changes nothing (link scanners fetch every URL); POST confirms.

Abuse: a per-client limit per hour (the client is the X-Forwarded-For address when the peer
is a trusted proxy), a honeypot field that people never see (filled: the same answer, nothing
done), and a body size limit (413). No CORS header is ever sent: another site's script cannot
read an answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.addresses import address_key, key_digest, normalise_address
from newsletter.config import Config
from newsletter.errors import BadAddress, BadForm, InvalidToken, MissingSetting, NewsletterError
from newsletter.models import HEADER_CONTROL
from newsletter.signup import send_confirmation
from newsletter.store import Confirmed, Signup, SubscriberStore
from newsletter.tokens import make_confirm_token, verify_confirm_token
from newsletter.web import form_fields, multipart_fields, page, scrub

log = logging.getLogger("newsletter.serve")

HONEYPOT = "website"  # a field bots fill in; people never see it
ADDRESS_PERIOD = dt.timedelta(hours=1)  # one confirmation mail per address per period
MAX_NAME = 100
# A cell starting so is a formula to a spreadsheet, and the lists are opened in one: a name
# from the open web must not run there (OWASP's CSV injection)
FORMULA_START = ("=", "+", "-", "@")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------------------------------------
# Who is asking: the client address, and how often it asked


def client_address(peer: str, forwarded: str, trusted: Sequence[Network]) -> str:
    """The client: the peer, or, when the peer is a trusted proxy, the address that proxy
    names last in X-Forwarded-For (and so on through a chain of trusted proxies). What lies
    further left was written by the client, who can write anything there."""
    client = peer
    for hop in reversed([_host(h) for h in forwarded.split(",") if h.strip()]):
        if not _trusted(client, trusted):
            break
        client = hop
    return client


def _host(hop: str) -> str:
    """The address of one X-Forwarded-For entry, without the port some proxies add
    (`198.51.100.7:4711`, `[2001:db8::7]:4711`): else each new connection is a new client."""
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    address, colon, port = hop.partition(":")
    return address if colon and port.isdigit() and ":" not in port else hop


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # a dual-stack socket's view
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def _limit_key(client: str) -> str:
    """IPv6 clients count by /64: one host usually holds a whole /64."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


class ClientLimit:
    """At most `per_hour` sign-ups per client in any hour, kept in memory (a restart forgets
    them; the per-address limit, which protects the people mailed, is in the store)."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self.seen: dict[str, deque[float]] = {}

    def wait(self, client: str) -> int:
        """0 and the attempt counted, or the seconds until the client may try again."""
        now = self.clock()
        if len(self.seen) > 10_000:  # forget the clients quiet for an hour
            self.seen = {k: v for k, v in self.seen.items() if v and v[-1] > now - 3600}
        times = self.seen.setdefault(_limit_key(client), deque())
        while times and times[0] <= now - 3600:
            times.popleft()
        if len(times) >= self.per_hour:
            return max(1, int(times[0] + 3600 - now) + 1)
        times.append(now)
        return 0


# ---------------------------------------------------------------------------------------------
# The form


@dataclass(frozen=True)
class Choice:
    name: str  # as configured: what the token carries ("" for the default list)
    label: str  # as shown
    path: Path | None  # None: the store's default list


def choices(config: Config, list_path: Callable[[str], Path]) -> list[Choice]:
    """The lists offered ([signup] lists), or the default list alone."""
    named = config.signup.lists
    return [Choice(n, n.removesuffix(".csv"), list_path(n)) for n in named] or [
        Choice("", "", None)
    ]


def form_html(config: Config, offered: Sequence[Choice], action: str = "") -> str:
    """The form: labelled fields, the consent sentence, no JavaScript; works without CSS (the
    honeypot is `hidden`, so even an unstyled page hides it, and aria-hidden for readers)."""
    target = f' action="{html.escape(action)}"' if action else ""
    lists = _list_choice(offered) if len(offered) > 1 else ""
    return (
        f'<form method="post"{target} accept-charset="utf-8">\n'
        '<p><label for="nl-email">Email address</label><br>\n'
        '<input id="nl-email" name="email" type="email" autocomplete="email" required '
        'maxlength="254" size="30"></p>\n'
        '<p><label for="nl-name">Name (optional)</label><br>\n'
        f'<input id="nl-name" name="name" type="text" autocomplete="name" maxlength="{MAX_NAME}" '
        'size="30"></p>\n'
        f"{lists}"
        '<div hidden aria-hidden="true" style="display: none">'
        f'<label for="nl-{HONEYPOT}">Leave this empty</label>'
        f'<input id="nl-{HONEYPOT}" name="{HONEYPOT}" type="text" tabindex="-1" '
        'autocomplete="off"></div>\n'
        f'<p id="nl-consent">{html.escape(config.signup.consent)}</p>\n'
        '<p><button type="submit" aria-describedby="nl-consent">Subscribe</button></p>\n'
        "</form>\n"
    )


def _list_choice(offered: Sequence[Choice]) -> str:
    items = "".join(
        f'<input type="radio" id="nl-list-{n}" name="list" value="{html.escape(c.name)}" required>'
        f' <label for="nl-list-{n}">{html.escape(c.label)}</label><br>\n'
        for n, c in enumerate(offered)
    )
    return f"<fieldset><legend>Which list?</legend>\n{items}</fieldset>\n"


def form_snippet(config: Config) -> str:
    """`serve --print-form`: the form for a static site, posting to {base_url}/subscribe."""
    base = config.newsletter.base_url
    if not base:
        raise MissingSetting("newsletter.base_url", "base_url", "set [newsletter] base_url")
    if not config.signup.enabled:  # the form would post to a page serve does not offer
        why = "[signup] enabled is false, so serve has no page for it to post to"
        raise MissingSetting("signup.enabled", "sign-up form", why)
    offered = [Choice(n, n.removesuffix(".csv"), None) for n in config.signup.lists]
    return form_html(config, offered, f"{base}/subscribe")


# ---------------------------------------------------------------------------------------------
# The endpoint


class SignupDesk:
    """Takes sign-ups and confirmations; store changes one at a time per process."""

    def __init__(
        self,
        config: Config,
        secret: bytes,
        store: SubscriberStore,
        list_path: Callable[[str], Path],
    ) -> None:
        self.config = config
        self.secret = secret
        self.store = store
        self.offered = choices(config, list_path)
        self.limit = ClientLimit(config.signup.client_hourly_limit)
        self.trusted = [
            ipaddress.ip_network(t, strict=False) for t in config.signup.trusted_proxies
        ]
        self.lock = asyncio.Lock()

    def page(self, title: str, body: str, status: int = 200, retry: int = 0) -> Response:
        response = page(self.config.newsletter.language, title, body, status)
        if retry:
            response.headers["Retry-After"] = str(retry)
        return response

    def form_page(self, problem: str = "", status: int = 200) -> Response:
        said = f'<p role="alert"><strong>{html.escape(problem)}</strong></p>\n' if problem else ""
        title = f"Subscribe to {self.config.newsletter.name}"
        return self.page(title, said + form_html(self.config, self.offered), status)

    def link(self, email: str, choice: Choice, asked_at: int) -> str:
        token = make_confirm_token(self.secret, self.config.list_id, email, choice.name, asked_at)
        return f"{self.config.newsletter.base_url}/confirm/{token}"

    async def request(self, signup: Signup, choice: Choice) -> None:
        """After the answer went out: hold the sign-up and mail the link (errors are logged:
        there is nobody left to tell)."""
        digest = key_digest(address_key(signup.email))
        try:
            async with self.lock:
                since = signup.asked_at - ADDRESS_PERIOD
                fresh = await run_in_threadpool(self.store.request_signup, signup, since=since)
            if not fresh:
                log.info("sign-up not mailed: asked within the hour address_sha256=%s", digest)
                return
            link = self.link(signup.email, choice, int(signup.asked_at.timestamp()))
            await self._mail(signup, link, choice, digest)
        except (NewsletterError, OSError) as exc:  # which file and why: the owner must fix it
            reason = scrub(str(exc).replace("\n", "; "))
            log.error(
                "sign-up not recorded, nothing sent address_sha256=%s reason=%s", digest, reason
            )

    async def _mail(self, signup: Signup, link: str, choice: Choice, digest: str) -> None:
        try:
            await send_confirmation(self.config, signup.email, link, choice.label)
        except (NewsletterError, OSError) as exc:
            await run_in_threadpool(self.store.withdraw_signup, signup)  # may ask again at once
            log.error("confirmation not sent address_sha256=%s reason=%s", digest, scrub(str(exc)))
            return
        log.info("confirmation sent address_sha256=%s list=%s", digest, choice.label or "-")

    def claim(self, token: str) -> tuple[str, Choice, dt.datetime] | str:
        """(address, list, time asked) of a confirmation token, or why it does not work."""
        try:
            claim = verify_confirm_token(self.secret, self.config.list_id, token)
        except InvalidToken:
            return _BAD_LINK
        choice = next((c for c in self.offered if c.name == claim.list_name), None)
        asked = dt.datetime.fromtimestamp(claim.asked_at, dt.UTC)
        expires = asked + dt.timedelta(days=self.config.signup.expires_days)
        if choice is None or dt.datetime.now(dt.UTC) >= expires:
            return _EXPIRED
        return claim.email, choice, asked

    async def confirm(self, email: str, choice: Choice, asked: dt.datetime) -> Confirmed:
        when = dt.datetime.now(dt.UTC)
        async with self.lock:
            return await run_in_threadpool(
                self.store.confirm_signup, email, choice.path, asked, when=when
            )


def signup_routes(
    config: Config, secret: bytes, store: SubscriberStore, list_path: Callable[[str], Path]
) -> list[Route]:
    """The routes of the form and of the confirmation link, under base_url's path."""
    from newsletter.serve import route_prefix

    desk = SignupDesk(config, secret, store, list_path)
    prefix = route_prefix(config.newsletter.base_url)

    async def subscribe(request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return desk.form_page()
        return await _subscribe(desk, request)

    async def confirm(request: Request) -> Response:
        claim = desk.claim(request.path_params["token"])
        if isinstance(claim, str):
            return desk.page("This link does not work", claim, 400)
        if request.method in ("GET", "HEAD"):
            return desk.page(f"Subscribe to {config.newsletter.name}?", _confirm_form(config), 200)
        return await _confirm(desk, *claim)

    return [
        Route(f"{prefix}/subscribe", subscribe, methods=["GET", "POST"]),
        Route(f"{prefix}/confirm/{{token:path}}", confirm, methods=["GET", "POST"]),
    ]


async def _subscribe(desk: SignupDesk, request: Request) -> Response:
    peer = request.client.host if request.client else ""
    # Every X-Forwarded-For line, in order: a proxy may add its own line after the client's
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    client = client_address(peer, forwarded, desk.trusted)
    retry = desk.limit.wait(client)
    if retry:
        return desk.page("Too many sign-ups", _TOO_MANY, 429, retry=retry)
    try:
        fields = await _fields(request, desk.config.signup.max_body)
    except BadForm as exc:
        if exc.limit is not None:
            return desk.page("Too much data", "<p>That form was too large.</p>", 413)
        return desk.form_page("Please fill in the form again.", 400)
    parsed = _signup(desk, fields)
    if isinstance(parsed, str):
        return desk.form_page(parsed, 400)
    answer = desk.page("Check your inbox", _CHECK_INBOX, 200)
    if parsed is not None:  # None: the honeypot was filled; the same answer, nothing done
        answer.background = BackgroundTask(desk.request, *parsed)
    return answer


def _signup(desk: SignupDesk, fields: dict[str, str]) -> tuple[Signup, Choice] | str | None:
    """The sign-up a form asks for, a problem to show, or None for a bot (the honeypot)."""
    if fields.get(HONEYPOT, "").strip():
        return None
    config = desk.config
    try:
        email = normalise_address(
            fields.get("email", ""), allow_reserved=config.newsletter.allow_reserved_domains
        )[0]
    except BadAddress:
        return "Please enter an email address, such as name@example.org."
    name = " ".join(fields.get("name", "").split())
    if len(name) > MAX_NAME:
        return f"Please shorten the name to {MAX_NAME} characters."
    if HEADER_CONTROL.search(name):
        return "Please write the name without control characters."
    if name.startswith(FORMULA_START):
        return "Please write the name without =, +, - or @ at its start."
    wanted = fields.get("list", "") if len(desk.offered) > 1 else desk.offered[0].name
    choice = next((c for c in desk.offered if c.name == wanted), None)
    if choice is None:
        return "Please choose a list."
    asked = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signup = Signup(email, choice.path, asked, name=name, consent=config.signup.consent)
    return signup, choice


async def _confirm(desk: SignupDesk, email: str, choice: Choice, asked: dt.datetime) -> Response:
    try:
        outcome = await desk.confirm(email, choice, asked)
    except (NewsletterError, OSError) as exc:
        digest = key_digest(address_key(email))
        log.error("confirmation NOT recorded address_sha256=%s reason=%s", digest, scrub(str(exc)))
        return desk.page("Please try again", _NOT_SAVED, 503, retry=60)
    if outcome is Confirmed.UNKNOWN:
        return desk.page("This link does not work", _EXPIRED, 400)
    if outcome is Confirmed.ALREADY:  # a replay: whatever they did since stands
        return desk.page("Already confirmed", "<p>This sign-up was confirmed before.</p>")
    name = html.escape(desk.config.newsletter.name)
    return desk.page("You are subscribed", f"<p>Thank you: you will get {name} by email.</p>")


async def _fields(request: Request, limit: int) -> dict[str, str]:
    """The first value of each field of a form body; BadForm with `limit` past `limit` bytes."""
    too_large = BadForm(f"body over {limit} bytes", limit)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadForm("the client closed the connection before its body ended") from None
    body, kind = b"".join(chunks), request.headers.get("content-type", "")
    multipart = kind.lower().lstrip().startswith("multipart/")
    pairs = multipart_fields(kind, body) if multipart else form_fields(body)
    found: dict[str, str] = {}
    for name, value in pairs:
        found.setdefault(name, value)
    return found


def _confirm_form(config: Config) -> str:
    # No action attribute: the form posts to this very URL, whatever proxy path led here.
    name = html.escape(config.newsletter.name)
    return (
        f"<p>Press the button to confirm that you want {name} by email.</p>\n"
        f"<p>{html.escape(config.signup.consent)}</p>\n"
        '<form method="post"><button type="submit" style="font-size: 1.1em; '
        'padding: 0.6em 1.4em">Confirm</button></form>'
    )


_CHECK_INBOX = (
    "<p>If the address can be signed up, a message is on its way to it with a link to confirm. "
    "Nothing happens until you follow that link.</p>\n"
    "<p>No message within an hour? Look in your spam folder, or sign up again later.</p>"
)
_BAD_LINK = (
    "<p>This confirmation link is not valid: it may have been cut short or changed. Copy the "
    "whole link from the message, or sign up again.</p>"
)
_EXPIRED = "<p>This confirmation link has expired or is no longer valid. Please sign up again.</p>"
_TOO_MANY = "<p>Too many sign-ups came from your network. Please try again later.</p>"
_NOT_SAVED = "<p>Your confirmation could not be saved just now. Please press the button again.</p>"

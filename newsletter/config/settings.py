"""The configuration keys, each declared once, and Config: the loaded settings of one folder.

Every key is a dataclass field with its documentation in `metadata`; the loader, the
environment mapping and docs/configuration.md all come from those declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newsletter.config import checks
from newsletter.config.checks import Check


def key(default: Any, doc: str, *, toml: str = "", check: Check | None = None) -> Any:
    """Declare a configuration key: its default, its one-line doc and an optional check."""
    meta = {"doc": doc, "toml": toml, "check": check}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class SocialLink:
    """[[newsletter.social]]: the newsletter's page on one network (any network), in order."""

    label: str = key("", "The network's name as shown, e.g. `Flickr`.", check=checks.label)
    url: str = key("", "https URL of the page.", check=checks.https)


# The older form: one key per network, shown before the `social` list, in this order.
SOCIAL_KEYS = (
    ("website", "Website"),
    ("twitter", "Twitter"),
    ("linkedin", "LinkedIn"),
    ("mastodon", "Mastodon"),
    ("bluesky", "Bluesky"),
    ("facebook", "Facebook"),
    ("youtube", "YouTube"),
)


@dataclass(frozen=True)
class Settings:
    """[newsletter]"""

    name: str = key(
        "", "Newsletter name, shown in the header and the From display name.", check=checks.name
    )
    from_: str = key(
        "",
        'Sender: an address or `Name <address>`; quote a name with commas: `"Acme, Inc." <...>`.',
        toml="from",
        check=checks.mailbox("from", name_allowed=True),
    )
    reply_to: str = key(
        "",
        "Reply-To, written like `from`; empty: replies go to `from`.",
        check=checks.mailbox("reply_to", name_allowed=True),
    )
    postal_address: str = key(
        "", "Sender's postal address, shown in every footer (required by anti-spam law)."
    )
    list_id: str = key(
        "",
        "List-Id (RFC 2919), e.g. `news.example.org`. Unsubscribe links are signed with it: set "
        "it once (`init` does) and never change it. Empty: derived from `from`'s domain, and "
        "`check` warns.",
        check=checks.list_id,
    )
    base_url: str = key(
        "",
        "Public https URL of the unsubscribe endpoint and web archive, no trailing slash.",
        check=checks.base_url,
    )
    logo: str = key("", "https URL of a logo image shown in the header.", check=checks.https)
    logo_alt: str = key("", "Alt text of the logo; empty: the newsletter name.")
    logo_width: int = key(160, "Logo width in CSS pixels.", check=checks.positive)
    accent_colour: str = key("#1a5276", "Headings, buttons and links.", check=checks.colour)
    text_colour: str = key("#222222", "Body text.", check=checks.colour)
    background_colour: str = key(
        "#f4f4f4", "Page background around the content.", check=checks.colour
    )
    language: str = key("en", "Language of the issue (HTML `lang`).", check=checks.language)
    social: tuple[SocialLink, ...] = key(
        (),
        "Links to the newsletter's pages on any networks, in order: `[[newsletter.social]]` "
        'tables with `label` and `url` (https), e.g. `label = "Flickr"` (see below).',
    )
    social_position: str = key(
        "footer",
        "Where the social links are shown: `header`, `footer` or `both`.",
        check=checks.one_of("header", "footer", "both"),
    )
    website: str = key("", "Project web site (older form of `social`).", check=checks.https)
    twitter: str = key("", "Twitter/X profile URL (older form of `social`).", check=checks.https)
    linkedin: str = key("", "LinkedIn page URL (older form of `social`).", check=checks.https)
    mastodon: str = key("", "Mastodon profile URL (older form of `social`).", check=checks.https)
    bluesky: str = key("", "Bluesky profile URL (older form of `social`).", check=checks.https)
    facebook: str = key("", "Facebook page URL (older form of `social`).", check=checks.https)
    youtube: str = key("", "YouTube channel URL (older form of `social`).", check=checks.https)
    footer: str = key("", "Footer text (Markdown), e.g. why the reader gets this email.")
    unsubscribe_text: str = key(
        "Unsubscribe", "Wording of the footer's unsubscribe link.", check=checks.link_text
    )
    test_to: str = key(
        "",
        "Default recipient of `newsletter test` (an address alone).",
        check=checks.mailbox("test_to", name_allowed=False, sender=False),
    )
    allow_reserved_domains: bool = key(
        False,
        "Accept addresses at reserved names (`.test`, `.example`, `.invalid`, `.localhost`, "
        "`localhost`) everywhere: `test --to`, `subscribers add`, imports, the lists a send "
        "reads and the address keys here. For local testing only (docs/subscribers.md).",
    )
    unsubscribe_mailto: str = key(
        "",
        "Address for mailto: unsubscribes in List-Unsubscribe (an address alone).",
        check=checks.mailbox("unsubscribe_mailto", name_allowed=False),
    )
    envelope_from: str = key(
        "",
        "SMTP envelope sender (bounces go there); empty: the `from` address.",
        check=checks.mailbox("envelope_from", name_allowed=False),
    )
    bounce_address: str = key(
        "",
        "Return path for bounces, e.g. `bounces@example.org`: each message's envelope sender "
        "becomes `bounces+<id>@example.org` (VERP), so `newsletter bounces` maps every bounce "
        "to its reader. Wins over `envelope_from`; the part before @ at most 35 characters.",
        check=checks.bounce_address,
    )
    soft_bounce_limit: int = key(
        3,
        "Soft bounces (4.x.x) within `soft_bounce_days` that mark a reader `bounced`.",
        check=checks.positive,
    )
    soft_bounce_days: int = key(
        30, "The window in days over which soft bounces are counted.", check=checks.positive
    )
    dkim_domain: str = key(
        "",
        "DKIM signing domain (d=); empty: no signing.",
        check=checks.dns_name("example.org", domain=True),
    )
    dkim_selector: str = key(
        "", "DKIM selector (s=).", check=checks.dns_name("news2024", domain=False)
    )
    dkim_key_file: str = key("", "Path of the DKIM private key (PEM), relative to the folder.")


@dataclass(frozen=True)
class SmtpSettings:
    """[smtp]"""

    host: str = key(
        "", "SMTP server; empty: messages go to the outbox/ Maildir.", check=checks.host
    )
    port: int | None = key(
        None, "Port; empty: 587 for starttls, 465 for tls, 25 for none.", check=checks.port
    )
    security: str = key(
        "starttls",
        "`starttls`, `tls` (implicit, port 465) or `none`.",
        check=checks.one_of("starttls", "tls", "none"),
    )
    username: str = key("", "AUTH user name; the password comes from NEWSLETTER_SMTP_PASSWORD.")
    timeout: float = key(
        30.0,
        "Seconds one message may take with the server, MAIL to the final reply (connecting and "
        "logging in get as long each); then it is retried, or unknown if its data went out.",
        check=checks.positive,
    )
    allow_plaintext: bool = key(
        False, "Allow `security = none` to a host that is not loopback (unencrypted!)."
    )
    connections: int = key(4, "Concurrent SMTP connections, each reused.", check=checks.connections)
    rate: float | None = key(
        None, "Messages per second at most; empty: no limit.", check=checks.positive
    )
    hourly_limit: int | None = key(None, "Messages per hour at most.", check=checks.positive)
    daily_limit: int | None = key(None, "Messages per day at most.", check=checks.positive)
    retry_delays: tuple[float, ...] = key(
        (2.0, 10.0, 30.0),
        "Seconds before each retry of a temporary failure (jittered).",
        check=checks.delays,
    )
    pause_after: int = key(
        5, "Pause the send after this many connection failures in a row.", check=checks.positive
    )


DEFAULT_CONSENT = (
    "Yes, send me this newsletter by email. I can unsubscribe at any time with the link at the "
    "bottom of every issue."
)


@dataclass(frozen=True)
class SignupSettings:
    """[signup]"""

    enabled: bool = key(
        True,
        "`serve` answers `{base_url}/subscribe` (a form; double opt-in: nobody is subscribed "
        "until they confirm from the mail it sends).",
    )
    lists: tuple[str, ...] = key(
        (),
        "The lists people may choose from (names in subscribers/); empty: the list "
        "`subscribers add` uses (subscribers.csv).",
        check=checks.list_names,
    )
    consent: str = key(
        DEFAULT_CONSENT,
        "The consent sentence the form shows next to its button; the consent record keeps it.",
        check=checks.sentence,
    )
    expires_days: int = key(7, "Days a confirmation link works.", check=checks.days)
    client_hourly_limit: int = key(
        20,
        "Sign-ups one client (IP address; an IPv6 /64) may send per hour; more get 429.",
        check=checks.at_least(1),
    )
    trusted_proxies: tuple[str, ...] = key(
        ("127.0.0.1", "::1"),
        "Peers whose X-Forwarded-For names the client (your reverse proxy): IP addresses or "
        "networks.",
        check=checks.networks,
    )
    max_body: int = key(
        8192, "Bytes a sign-up POST may carry; larger gets 413.", check=checks.at_least(1024)
    )


@dataclass(frozen=True)
class StoreSettings:
    """[store]"""

    url: str = key(
        "",
        "PostgreSQL URL (`postgresql://user@host:5432/dbname`) of a shared store for lists and "
        "send ledgers; empty: CSV lists and SQLite ledgers in the folder (docs/deployment.md). "
        "The password comes from this variable's URL, PGPASSWORD or ~/.pgpass, never the file.",
        check=checks.store_url,
    )
    lease: float = key(
        30.0,
        "Seconds a sender's claim on recipients lasts unless renewed (it renews it while it "
        "works); a sender killed holds it this long before others take over its recipients.",
        check=checks.positive,
    )


@dataclass(frozen=True)
class Config:
    root: Path  # the newsletter folder
    path: Path  # its newsletter.toml
    newsletter: Settings
    smtp: SmtpSettings
    signup: SignupSettings = SignupSettings()
    store: StoreSettings = StoreSettings()
    # The environment variables that set a key (they win over the file): a problem with such
    # a value is reported by its variable, not by a line of the file that does not apply.
    from_env: frozenset[str] = frozenset()

    @property
    def from_address(self) -> str:
        return _split_address(self.newsletter.from_)[1]

    @property
    def envelope_sender(self) -> str:
        """MAIL FROM: bounce_address (a send gives each message its own form of it, see
        verp.py), else envelope_from, else the `from` address (ASCII: an IDN domain in IDNA)."""
        if self.newsletter.bounce_address:
            return self.bounce_address
        return (
            _wire(self.newsletter.envelope_from)
            if self.newsletter.envelope_from
            else self.from_address
        )

    @property
    def bounce_address(self) -> str:
        """[newsletter] bounce_address in its ASCII form ("" when unset)."""
        return _wire(self.newsletter.bounce_address) if self.newsletter.bounce_address else ""

    @property
    def unsubscribe_mailto(self) -> str:
        return (
            _wire(self.newsletter.unsubscribe_mailto) if self.newsletter.unsubscribe_mailto else ""
        )

    @property
    def from_name(self) -> str:
        return _split_address(self.newsletter.from_)[0] or self.newsletter.name

    @property
    def reply_to(self) -> tuple[str, str] | None:
        """(display name, address) of Reply-To, or None when replies go to `from`."""
        return _split_address(self.newsletter.reply_to) if self.newsletter.reply_to else None

    @property
    def list_id(self) -> str:
        """The configured list id, else `from`'s domain in its ASCII (IDNA) form."""
        if self.newsletter.list_id:
            return self.newsletter.list_id
        domain = self.from_address.rpartition("@")[2]
        try:
            return domain.encode("idna").decode("ascii")
        except UnicodeError:
            return domain

    @property
    def social_links(self) -> list[SocialLink]:
        """Every social link in order: the older per-network keys first, then `social`."""
        older = [
            SocialLink(label, getattr(self.newsletter, name))
            for name, label in SOCIAL_KEYS
            if getattr(self.newsletter, name)
        ]
        return [*older, *self.newsletter.social]

    @property
    def state_dir(self) -> Path:
        return self.root / ".newsletter"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def subscribers_dir(self) -> Path:
        return self.root / "subscribers"

    def template_dirs(self) -> list[Path]:
        """The folder's own templates first (they override file by file), then the defaults."""
        own = self.root / "templates"
        dirs = [own] if own.is_dir() else []
        default = default_templates_dir()
        return [*dirs, default] if default.resolve() not in {d.resolve() for d in dirs} else dirs


def _split_address(value: str) -> tuple[str, str]:
    """(name, address) as load_config checked them; the address in its ASCII form, since the
    header (From, Reply-To) and MAIL FROM of a message without SMTPUTF8 must be ASCII."""
    from newsletter.addresses import parse_mailbox

    name, address = parse_mailbox(value, allow_reserved=True)  # checked at load, as written
    return name, _wire(address)


def _wire(address: str) -> str:
    from newsletter.addresses import ascii_address

    return ascii_address(address.strip())


def default_templates_dir() -> Path:
    """The packaged templates (in a wheel) or the repository's templates/ (in a checkout)."""
    here = Path(__file__).resolve().parent.parent  # newsletter/, this file is in newsletter/config/
    packaged = here / "_templates"
    return packaged if packaged.is_dir() else here.parent / "templates"

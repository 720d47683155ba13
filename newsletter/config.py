"""newsletter.toml and the environment -> Config.

Every key is declared once, as a dataclass field with its documentation in `metadata`; the
loader, the environment mapping and docs/configuration.md all come from those declarations.
`[newsletter] key` is overridden by NEWSLETTER_<KEY>, `[smtp] key` by NEWSLETTER_SMTP_<KEY>.
Secrets are never keys: they come only from the environment (see `smtp_password`, `secret`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from newsletter.errors import ConfigError, Problem, SecretMissing
from newsletter.tomlsource import KeyLines, load

CONFIG_NAME = "newsletter.toml"
PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"  # noqa: S105  # a variable name, not a password
SECRET_ENV = "NEWSLETTER_SECRET"  # noqa: S105  # a variable name, not a secret
MIN_SECRET_CHARS = 32
MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105  # a command, not a secret

_T = TypeVar("_T")
Check = Callable[[Any], str | None]  # returns a problem, or None when the value is fine


def key(default: Any, doc: str, *, toml: str = "", check: Check | None = None) -> Any:
    """Declare a configuration key: its default, its one-line doc and an optional check."""
    meta = {"doc": doc, "toml": toml, "check": check}
    return dataclasses.field(default=default, metadata=meta)


def _https(value: str) -> str | None:
    from newsletter.urls import url_problem

    if not value:
        return None
    problem = url_problem(value)
    if problem is None and urlsplit(value).scheme != "https":
        problem = "is not https://"
    return f"must be an https:// URL: {value!r} {problem}" if problem else None


def _base_url(value: str) -> str | None:
    problem = _https(value)
    if problem is None and (value.endswith("/") or urlsplit(value).query):
        return f"must not end with '/' or carry a query string: {value!r}"
    return problem


def _mailbox(toml_key: str, *, name_allowed: bool, sender: bool = True) -> Check:
    """One email address with a domain (and a display name when allowed), strictly parsed.
    A `sender` address goes into every message or MAIL FROM: its local part must be ASCII
    (else every reader's server would need SMTPUTF8); its domain is sent in IDNA form."""

    def check(value: str) -> str | None:
        from newsletter.addresses import BadAddress, ascii_address, parse_mailbox

        if not value:
            return None
        try:
            address = ascii_address(parse_mailbox(value, name_allowed=name_allowed)[1])
            if sender and not address.isascii():
                return (
                    f"{value!r}: the part before @ must be ASCII (else every server needs SMTPUTF8)"
                )
        except BadAddress as exc:
            fix = f", as in {toml_key} = '{exc.fix}'" if exc.fix else ""
            return f"{value!r} {exc.reason}{fix}"
        return None

    return check


def _header_text(value: str) -> str | None:
    """Text that goes into a mail header: no line breaks or other control characters."""
    from newsletter.models import HEADER_CONTROL

    bad = HEADER_CONTROL.search(value)
    return f"contains a control character (U+{ord(bad.group()):04X})" if bad else None


# RFC 2919 list id: dot-atom text with at least one dot, e.g. news.example.org
LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


def _list_id(value: str) -> str | None:
    ok = not value or LIST_ID.fullmatch(value)
    return None if ok else f"{value!r} is not a list id such as news.example.org"


# A DNS name as DKIM's d= and s= carry it (in a header, and in the key's DNS query): labels of
# letters, digits, '-' and '_', joined by dots. Anything else (';', a space, a line break) would
# change the DKIM-Signature header itself.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def ascii_domain(value: str) -> str:
    """`value` in its ASCII (IDNA) form; unchanged when it has none."""
    try:
        return value.encode("idna").decode("ascii")
    except UnicodeError:
        return value


def _dns_name(example: str, *, domain: bool) -> Check:
    def check(value: str) -> str | None:
        name = ascii_domain(value) if domain else value
        ok = not value or (_DNS_NAME.fullmatch(name) and (not domain or "." in name))
        return None if ok else f"{value!r} is not a DNS name such as {example}"

    return check


def _host(value: str) -> str | None:
    """A host name (IDN allowed, one trailing dot) or an IP address, as a connection takes it."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    name = ascii_domain(value.removesuffix("."))
    if not value or _DNS_NAME.fullmatch(name):
        return None
    return f"{value!r} is not a host name or IP address (the port goes in [smtp] port)"


def _one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _positive(value: float | None) -> str | None:
    ok = value is None or (math.isfinite(value) and value > 0)
    return None if ok else "must be a number greater than 0"


def _port(value: int | None) -> str | None:
    return None if value is None or 1 <= value <= 65535 else "must be a port from 1 to 65535"


def _connections(value: int) -> str | None:
    # each connection is a task and a socket: a typo such as 1000000000 must not start them all
    return None if 1 <= value <= 1000 else "must be from 1 to 1000"


def _delays(value: tuple[float, ...]) -> str | None:
    ok = all(math.isfinite(v) and v >= 0 for v in value)
    return None if ok else "must be a list of seconds, each 0 or more"


def _colour(value: str) -> str | None:
    ok = re.fullmatch(r"#[0-9A-Fa-f]{6}", value)
    return None if ok else f"must be a colour such as '#1a5276', not {value!r}"


def _name(value: str) -> str | None:
    if value and not value.strip():  # "" is reported as missing
        return "is blank: write the newsletter's name (From, List-Id and every page show it)"
    return _header_text(value)


def _link_text(value: str) -> str | None:
    ok = value.strip()
    return None if ok else "is blank: every copy's unsubscribe link would have no visible text"


def _language(value: str) -> str | None:
    ok = re.fullmatch(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*", value)
    return None if ok else f"must be a language tag such as 'en' or 'pt-BR', not {value!r}"


@dataclass(frozen=True)
class Settings:
    """[newsletter]"""

    name: str = key(
        "", "Newsletter name, shown in the header and the From display name.", check=_name
    )
    from_: str = key(
        "",
        'Sender: an address or `Name <address>`; quote a name with commas: `"Acme, Inc." <...>`.',
        toml="from",
        check=_mailbox("from", name_allowed=True),
    )
    reply_to: str = key(
        "",
        "Reply-To, written like `from`; empty: replies go to `from`.",
        check=_mailbox("reply_to", name_allowed=True),
    )
    postal_address: str = key(
        "", "Sender's postal address, shown in every footer (required by anti-spam law)."
    )
    list_id: str = key(
        "",
        "List-Id (RFC 2919), e.g. `news.example.org`. Unsubscribe links are signed with it: set "
        "it once (`init` does) and never change it. Empty: derived from `from`'s domain, and "
        "`check` warns.",
        check=_list_id,
    )
    base_url: str = key(
        "",
        "Public https URL of the unsubscribe endpoint and web archive, no trailing slash.",
        check=_base_url,
    )
    logo: str = key("", "https URL of a logo image shown in the header.", check=_https)
    logo_alt: str = key("", "Alt text of the logo; empty: the newsletter name.")
    logo_width: int = key(160, "Logo width in CSS pixels.", check=_positive)
    accent_colour: str = key("#1a5276", "Headings, buttons and links.", check=_colour)
    text_colour: str = key("#222222", "Body text.", check=_colour)
    background_colour: str = key("#f4f4f4", "Page background around the content.", check=_colour)
    language: str = key("en", "Language of the issue (HTML `lang`).", check=_language)
    website: str = key("", "Project web site, linked in the footer.", check=_https)
    twitter: str = key("", "Twitter/X profile URL.", check=_https)
    linkedin: str = key("", "LinkedIn page URL.", check=_https)
    mastodon: str = key("", "Mastodon profile URL.", check=_https)
    bluesky: str = key("", "Bluesky profile URL.", check=_https)
    facebook: str = key("", "Facebook page URL.", check=_https)
    youtube: str = key("", "YouTube channel URL.", check=_https)
    footer: str = key("", "Footer text (Markdown), e.g. why the reader gets this email.")
    unsubscribe_text: str = key(
        "Unsubscribe", "Wording of the footer's unsubscribe link.", check=_link_text
    )
    test_to: str = key(
        "",
        "Default recipient of `newsletter test` (an address alone).",
        check=_mailbox("test_to", name_allowed=False, sender=False),
    )
    unsubscribe_mailto: str = key(
        "",
        "Address for mailto: unsubscribes in List-Unsubscribe (an address alone).",
        check=_mailbox("unsubscribe_mailto", name_allowed=False),
    )
    envelope_from: str = key(
        "",
        "SMTP envelope sender (bounces go there); empty: the `from` address.",
        check=_mailbox("envelope_from", name_allowed=False),
    )
    dkim_domain: str = key(
        "",
        "DKIM signing domain (d=); empty: no signing.",
        check=_dns_name("example.org", domain=True),
    )
    dkim_selector: str = key("", "DKIM selector (s=).", check=_dns_name("news2024", domain=False))
    dkim_key_file: str = key("", "Path of the DKIM private key (PEM), relative to the folder.")


@dataclass(frozen=True)
class SmtpSettings:
    """[smtp]"""

    host: str = key("", "SMTP server; empty: messages go to the outbox/ Maildir.", check=_host)
    port: int | None = key(
        None, "Port; empty: 587 for starttls, 465 for tls, 25 for none.", check=_port
    )
    security: str = key(
        "starttls",
        "`starttls`, `tls` (implicit, port 465) or `none`.",
        check=_one_of("starttls", "tls", "none"),
    )
    username: str = key("", "AUTH user name; the password comes from NEWSLETTER_SMTP_PASSWORD.")
    timeout: float = key(30.0, "Seconds to wait for the server before giving up.", check=_positive)
    allow_plaintext: bool = key(
        False, "Allow `security = none` to a host that is not loopback (unencrypted!)."
    )
    connections: int = key(4, "Concurrent SMTP connections, each reused.", check=_connections)
    rate: float | None = key(None, "Messages per second at most; empty: no limit.", check=_positive)
    hourly_limit: int | None = key(None, "Messages per hour at most.", check=_positive)
    daily_limit: int | None = key(None, "Messages per day at most.", check=_positive)
    retry_delays: tuple[float, ...] = key(
        (2.0, 10.0, 30.0),
        "Seconds before each retry of a temporary failure (jittered).",
        check=_delays,
    )
    pause_after: int = key(
        5, "Pause the send after this many connection failures in a row.", check=_positive
    )


@dataclass(frozen=True)
class Config:
    root: Path  # the newsletter folder
    path: Path  # its newsletter.toml
    newsletter: Settings
    smtp: SmtpSettings

    @property
    def from_address(self) -> str:
        return _split_address(self.newsletter.from_)[1]

    @property
    def envelope_sender(self) -> str:
        """MAIL FROM: envelope_from, else the `from` address (ASCII: an IDN domain in IDNA)."""
        return (
            _wire(self.newsletter.envelope_from)
            if self.newsletter.envelope_from
            else self.from_address
        )

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

    name, address = parse_mailbox(value)
    return name, _wire(address)


def _wire(address: str) -> str:
    from newsletter.addresses import ascii_address

    return ascii_address(address.strip())


def default_templates_dir() -> Path:
    """The packaged templates (in a wheel) or the repository's templates/ (in a checkout)."""
    here = Path(__file__).resolve().parent
    packaged = here / "_templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


def find_config(start: Path, explicit: Path | None = None) -> Path:
    if explicit is not None:
        path = explicit / CONFIG_NAME if explicit.is_dir() else explicit
        if not path.is_file():
            raise ConfigError.one(path, "no such file")
        return path
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    raise ConfigError.one(
        None,
        f"no {CONFIG_NAME} in {start} or its parents: run `newsletter init DIR`, "
        "or pass --config PATH",
    )


def load_config(
    start: Path | None = None,
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    path = find_config(start or Path.cwd(), explicit)
    data, lines = load(path)
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    for name in data:
        if name not in ("newsletter", "smtp"):
            problems.append(_problem(path, lines, name, "unknown table or key"))
    if "password" in data.get("smtp", {}):
        problems.append(
            _problem(
                path,
                lines,
                "smtp.password",
                f"a password does not belong in a file: set {PASSWORD_ENV} instead",
            )
        )
    settings = _section(Settings, "newsletter", data, env, path, lines, problems)
    smtp = _section(SmtpSettings, "smtp", data, env, path, lines, problems)
    reported = {p.field for p in problems}  # a key given but refused is not also "missing"
    if not settings.name and not reported & {"newsletter.name", env_var("newsletter", "name")}:
        problems.append(_problem(path, lines, "newsletter.name", "missing (the newsletter's name)"))
    if not settings.from_ and not reported & {"newsletter.from", env_var("newsletter", "from")}:
        problems.append(_problem(path, lines, "newsletter.from", "missing (the sender address)"))
    if problems:
        raise ConfigError(problems)
    return Config(root=path.parent, path=path, newsletter=settings, smtp=smtp)


def _section(
    cls: type[_T],
    section: str,
    data: dict[str, Any],
    env: Mapping[str, str],
    path: Path,
    lines: KeyLines,
    problems: list[Problem],
) -> _T:
    table = data.get(section, {})
    if not isinstance(table, dict):
        problems.append(_problem(path, lines, section, "must be a table"))
        table = {}
    known = {_toml_name(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    for name in table:
        if name not in known and not (section == "smtp" and name == "password"):
            problems.append(_problem(path, lines, f"{section}.{name}", "unknown key"))
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, fld in known.items():
        where = f"{section}.{name}"
        var = env_var(section, name)
        if var in env:
            value, problem = _from_env(env[var], hints[fld.name])
            where = var
        elif name in table:
            value, problem = _coerce(table[name], hints[fld.name])
        else:
            continue
        check = fld.metadata["check"]
        problem = problem or (check(value) if check is not None else None)
        if problem:
            location = (
                Problem(None, problem, field=var)
                if where == var
                else _problem(path, lines, where, problem)
            )
            problems.append(location)
        else:
            values[fld.name] = value
    return cls(**values)


def _problem(path: Path, lines: KeyLines, field: str, message: str) -> Problem:
    return Problem(path, message, field=field, line=lines.line(field))


def _toml_name(fld: dataclasses.Field[Any]) -> str:
    return str(fld.metadata["toml"] or fld.name)


def env_var(section: str, name: str) -> str:
    if section == "newsletter":
        return f"NEWSLETTER_{name.upper()}"
    return f"NEWSLETTER_{section.upper()}_{name.upper()}"


def _base_type(hint: Any) -> Any:
    """`int | None` -> int; `tuple[float, ...]` -> tuple; others unchanged."""
    if isinstance(hint, types.UnionType):
        return next(a for a in get_args(hint) if a is not type(None))
    return get_origin(hint) or hint


def _coerce(value: Any, hint: Any) -> tuple[Any, str | None]:
    base = _base_type(hint)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value), None
    if base is tuple:
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        return (tuple(float(v) for v in value), None) if ok else (None, "must be a list of numbers")
    if base is int and isinstance(value, bool):
        return None, "must be a whole number"
    if not isinstance(value, base):
        return None, f"must be {_type_word(base)}, not {type(value).__name__}"
    return value, None


def _from_env(raw: str, hint: Any) -> tuple[Any, str | None]:
    base = _base_type(hint)
    text = raw.strip()
    try:
        if base is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                return None, "must be true or false"
            return text.lower() in ("1", "true", "yes"), None
        if base is int:
            return int(text), None
        if base is float:
            return float(text), None
        if base is tuple:
            return tuple(float(v) for v in text.split(",") if v.strip()), None
    except ValueError:
        return None, f"must be {_type_word(base)}, not {raw!r}"
    return raw, None


def _type_word(base: Any) -> str:
    words = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    return words.get(base, "a list of numbers")


KEYRING_SERVICE = "newsletter"


def smtp_password(
    smtp: SmtpSettings | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The SMTP password: NEWSLETTER_SMTP_PASSWORD, else the system keyring when one is installed
    (service "newsletter", user "<username>@<host>"); never a file."""
    env = os.environ if environ is None else environ
    if PASSWORD_ENV in env:
        return env[PASSWORD_ENV]
    if smtp is None or not smtp.username:
        return None
    return _keyring_password(f"{smtp.username}@{smtp.host}")


def _keyring_password(user: str) -> str | None:
    try:
        import keyring  # type: ignore[import-not-found, unused-ignore]  # optional: not a dependency
        from keyring.errors import KeyringError  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        found = keyring.get_password(KEYRING_SERVICE, user)
    except KeyringError:
        return None  # no usable backend (a server without a desktop session)
    return found if isinstance(found, str) else None


def secret(config: Config, *, create: bool, environ: Mapping[str, str] | None = None) -> bytes:
    """The unsubscribe-token secret: NEWSLETTER_SECRET, at least MIN_SECRET_CHARS characters.

    Only an outbox send (`create`) may fall back to .newsletter/secret (made once): links
    signed with a key that exists only on this machine cannot be checked by `serve`."""
    env = os.environ if environ is None else environ
    value = env.get(SECRET_ENV, "")
    if value:
        _long_enough(value, SECRET_ENV)
        return value.encode()
    if not create:
        raise SecretMissing(
            f"{SECRET_ENV} is not set: SMTP sends, `newsletter test` over SMTP and `serve` sign "
            f"and check unsubscribe links with it. Make one with `{MAKE_SECRET}` and set the "
            "same value wherever you send and serve"
        )
    return _stored_secret(config.state_dir / "secret")


def _long_enough(value: str, where: str) -> None:
    """A short secret can be recovered from a single token (3 characters: in 0.12 s).

    White space around it adds no secrecy (a value of 40 spaces is one guess): not counted."""
    count = len(value.strip())
    besides = "" if count == len(value) else " besides white space"
    if count < MIN_SECRET_CHARS:
        raise SecretMissing(
            f"{where} is too short ({count} characters{besides}; at least {MIN_SECRET_CHARS}): "
            f"a short secret can be guessed from one unsubscribe link. Make one with "
            f"`{MAKE_SECRET}`"
        )


def _stored_secret(stored: Path) -> bytes:
    if stored.is_file():
        value = stored.read_bytes().strip()
        _long_enough(value.decode(errors="replace"), str(stored))
        return value
    import secrets as _secrets

    from newsletter.fileio import make_folder, open_private

    make_folder(stored.parent)
    value = _secrets.token_urlsafe(32).encode()
    fd = open_private(stored, os.O_WRONLY, exclusive=True)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value + b"\n")
    return value


def documented_keys() -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, environment variable, doc) for every key: docs/configuration.md."""
    rows = []
    for section, cls in (("newsletter", Settings), ("smtp", SmtpSettings)):
        hints = get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            name = _toml_name(fld)
            default = fld.default
            rows.append(
                (
                    f"[{section}] {name}",
                    _type_word(_base_type(hints[fld.name])).removeprefix("a "),
                    "" if default in ("", None) else repr(default),
                    env_var(section, name),
                    str(fld.metadata["doc"]),
                )
            )
    return rows

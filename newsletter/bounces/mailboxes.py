"""The bounce mailbox: a Maildir folder, or an IMAP folder over TLS.

Both give the messages not yet processed and mark each one once it is: the Maildir moves it
from new/ to cur/ with the info `:2,` + flags (S, seen, and the keyword letter of
`NewsletterProcessed`, which Dovecot reads from the folder's dovecot-keywords file); IMAP sets
the keyword `NewsletterProcessed` (and \\Seen). A message that needs a person (it maps to
nobody, or cannot be read) gets the keyword but not S/\\Seen, so it shows unread in a mail
client and a rerun passes it by. An IMAP server that keeps no keywords (PERMANENTFLAGS without
\\*) gets \\Seen alone (and \\Flagged for a message that needs a person); then unseen means
not processed.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import itertools
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from newsletter.errors import BadOption, MailboxError, SecretMissing

KEYWORD = "NewsletterProcessed"
IMAP_PASSWORD_ENV = "NEWSLETTER_IMAP_PASSWORD"  # noqa: S105  # a variable name, not a password
_KEYWORDS_FILE = "dovecot-keywords"
# Messages (by sequence number) per UID SEARCH: its answer is one line, which imaplib refuses
# past 1 MB (about 140,000 UIDs); 10,000 keep it far below that in a mailbox of any size
SEARCH_BATCH = 10_000


class Mailbox(Protocol):
    where: str  # for messages: the folder, or imaps://user@host/FOLDER

    def messages(self) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) of each message not processed yet."""
        ...

    def done(self, name: str, *, seen: bool) -> None: ...

    def close(self) -> None: ...


# -- Maildir ------------------------------------------------------------------------------------


class Maildir:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)
        missing = [sub for sub in ("new", "cur") if not (folder / sub).is_dir()]
        if missing:
            raise BadOption("maildir", str(folder), "is not a Maildir (no new/ and cur/ in it)")
        self.letter = _keyword_letter(folder)

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for sub in ("new", "cur"):
            for path in sorted((self.folder / sub).iterdir()):
                if path.name.startswith(".") or self.letter in _flags(path.name):
                    continue
                if not path.is_file():  # a folder or a dangling link: no message
                    continue
                try:
                    yield f"{sub}/{path.name}", path.read_bytes()
                except FileNotFoundError:  # another reader moved it meanwhile
                    continue
                except OSError as exc:
                    raise MailboxError(str(path), f"cannot read it ({exc.strerror})") from None

    def done(self, name: str, *, seen: bool) -> None:
        path = self.folder / name
        base = path.name.partition(":")[0]
        flags = set(_flags(path.name)) | {self.letter} | ({"S"} if seen else set())
        target = self.folder / "cur" / f"{base}:2,{''.join(sorted(flags))}"
        try:
            os.rename(path, target)
        except OSError as exc:
            raise MailboxError(str(path), f"cannot move it to cur/ ({exc.strerror})") from None

    def close(self) -> None:
        return None


def _flags(name: str) -> str:
    _, info, flags = name.partition(":2,")
    return flags if info else ""


def _keyword_letter(folder: Path) -> str:
    """The Maildir letter of KEYWORD: its place in dovecot-keywords (`0 Name` a line: letter a
    is 0), added there when missing, so Dovecot shows the same keyword over IMAP."""
    path = folder / _KEYWORDS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        taken = dict(line.split(" ", 1)[::-1] for line in lines if " " in line)
        if KEYWORD in taken and taken[KEYWORD].isdigit():
            return chr(ord("a") + int(taken[KEYWORD]))
        free = next(i for i in range(26) if str(i) not in taken.values())
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{free} {KEYWORD}\n")
    except StopIteration:
        raise MailboxError(str(path), "all 26 keyword letters are taken") from None
    except OSError as exc:
        raise MailboxError(str(path), f"cannot read or write it ({exc.strerror})") from None
    return chr(ord("a") + free)


# -- IMAP -----------------------------------------------------------------------------------------


class Imap:
    """imaps://user@host[:port]/FOLDER, the password from NEWSLETTER_IMAP_PASSWORD only."""

    def __init__(self, url: str, *, ca_file: Path | None = None, timeout: float = 60.0) -> None:
        self.user, self.host, self.port, self.folder = parse_imap_url(url)
        self.where = f"imaps://{self.user}@{self.host}:{self.port}/{self.folder}"
        password = os.environ.get(IMAP_PASSWORD_ENV, "")
        if not password:
            raise SecretMissing(f"{IMAP_PASSWORD_ENV} is not set: the IMAP password comes from it")
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._imap = self._connect(context, timeout)
        try:
            self._login(password)
            named = _quoted(_modified_utf7(self.folder))
            selected = self._call("SELECT", self._imap.select, named)
            self.exists = int(selected[0] or 0)  # messages in the folder when it was selected
            self.keywords = self._keeps_keywords()
        except MailboxError:
            self.close()
            raise

    def _connect(self, context: ssl.SSLContext, timeout: float) -> imaplib.IMAP4_SSL:
        try:
            return imaplib.IMAP4_SSL(self.host, self.port, ssl_context=context, timeout=timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(self.where, f"cannot connect ({exc})") from None

    def _login(self, password: str) -> None:
        """LOGIN carries ASCII only: a user or password beyond it goes as AUTHENTICATE PLAIN,
        which is UTF-8 (RFC 4616)."""
        if self.user.isascii() and password.isascii():
            self._call("LOGIN", self._imap.login, self.user, password)
            return
        plain = f"\0{self.user}\0{password}"
        self._call("AUTHENTICATE", self._imap.authenticate, "PLAIN", lambda _: plain)

    def _call(self, what: str, call: Callable[..., tuple[str, Any]], *args: Any) -> list[Any]:
        """One command; an error says which, and what the server said (never the arguments:
        LOGIN's hold the password)."""
        try:
            kind, data = call(*args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(self.where, f"{what} failed ({_said(exc)})") from None
        if kind != "OK":
            raise MailboxError(self.where, f"{what} failed ({_said(data)})")
        return list(data)

    def _keeps_keywords(self) -> bool:
        """Whether the folder keeps KEYWORD (PERMANENTFLAGS lists \\* or it; RFC 3501: when
        the server names none, every flag is kept). Microsoft's IMAP keeps no keywords."""
        _, data = self._imap.response("PERMANENTFLAGS")
        kept = b" ".join(d for d in data or () if isinstance(d, bytes)).lower()
        return not data or data == [None] or b"\\*" in kept or KEYWORD.lower().encode() in kept

    def messages(self) -> Iterator[tuple[str, bytes]]:
        unprocessed = ("UNKEYWORD", KEYWORD) if self.keywords else ("UNSEEN",)
        for start in range(1, self.exists + 1, SEARCH_BATCH):
            batch = f"{start}:{min(start + SEARCH_BATCH - 1, self.exists)}"
            found = self._call("SEARCH", self._imap.uid, "SEARCH", batch, *unprocessed)
            for uid in (found[0] or b"").split():
                data = self._call("FETCH", self._imap.uid, "FETCH", uid, "(BODY.PEEK[])")
                body = next((p[1] for p in data if isinstance(p, tuple)), None)
                if isinstance(body, bytes):
                    yield uid.decode(), body

    def done(self, name: str, *, seen: bool) -> None:
        if self.keywords:
            flags = f"(\\Seen {KEYWORD})" if seen else f"({KEYWORD})"
        else:  # \Seen marks it processed; \Flagged shows one that needs a person
            flags = "(\\Seen)" if seen else "(\\Seen \\Flagged)"
        self._call("STORE", self._imap.uid, "STORE", name, "+FLAGS.SILENT", flags)

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self._imap.logout()


def parse_imap_url(url: str) -> tuple[str, str, int, str]:
    """(user, host, port, folder) of imaps://user@host[:port]/FOLDER; a password in it is
    refused without repeating it (it belongs in NEWSLETTER_IMAP_PASSWORD)."""
    scheme, _, rest = url.partition("://")
    shown = f"{scheme}://{rest.rpartition('@')[2]}" if "@" in rest else url
    if scheme.lower() != "imaps":
        raise BadOption("imap", shown, "must be imaps://user@host[:port]/FOLDER (TLS)")
    netloc = rest.partition("/")[0]
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or not userinfo:
        raise BadOption("imap", shown, "names no user: imaps://user@host[:port]/FOLDER")
    if ":" in userinfo:
        why = f"must not hold a password: set {IMAP_PASSWORD_ENV} instead"
        raise BadOption("imap", shown, why)
    try:
        parts = urlsplit(f"//{hostport}")
        host, port = parts.hostname, parts.port or 993
    except ValueError:
        raise BadOption("imap", shown, "has a port that is not a number") from None
    if not host:
        raise BadOption("imap", shown, "names no host")
    folder = unquote(rest.partition("/")[2]) or "INBOX"
    return unquote(userinfo), host, port, folder


def _modified_utf7(folder: str) -> str:
    """A folder's name as IMAP names it (RFC 3501 5.1.3): printable ASCII as it is ("&" as
    "&-"), anything else as "&" + modified base64 of UTF-16 + "-"."""
    out: list[str] = []
    for printable, run in itertools.groupby(folder, lambda c: " " <= c <= "~"):
        text = "".join(run)
        if printable:
            out.append(text.replace("&", "&-"))
        else:
            coded = base64.b64encode(text.encode("utf-16-be")).decode("ascii").rstrip("=")
            out.append("&" + coded.replace("/", ",") + "-")
    return "".join(out)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _said(data: object) -> str:
    if isinstance(data, list | tuple):
        data = b" ".join(d for d in data if isinstance(d, bytes))
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)

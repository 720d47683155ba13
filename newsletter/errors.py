"""The one error family the CLI catches; each carries where the problem is, not just a string."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class Peek(Protocol):
    """What an error says of another send (store.SendSummary is one): errors.py is the bottom
    layer and imports nothing of ours."""

    @property
    def path(self) -> Path: ...
    @property
    def destination(self) -> str: ...
    @property
    def sent(self) -> int: ...
    @property
    def unknown(self) -> int: ...


class NewsletterError(Exception):
    """Root of every error meant for the user: the CLI prints it and exits non-zero."""

    exit_code = 1

    def __str__(self) -> str:
        return self.message()

    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class Severity(enum.StrEnum):
    """How bad a Problem is. A StrEnum, so it compares, prints and serialises as its value."""

    ERROR = "error"  # blocks a send to a list; `check` exits 1
    WARNING = "warning"  # printed; nothing is blocked


@dataclass(frozen=True)
class Problem:
    """One finding in a file: where it is and what is wrong."""

    path: Path | None
    message: str
    field: str = ""  # a TOML path such as blocks[2].items[0].url
    line: int | None = None
    column: int | None = None
    severity: Severity = Severity.ERROR

    def location(self) -> str:
        where = str(self.path) if self.path is not None else ""
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.field:
            where = f"{where}: {self.field}" if where else self.field
        return where

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.message}" if where else self.message

    @property
    def file(self) -> Path | None:
        """The API's name for `path` (a Finding's file)."""
        return self.path

    @property
    def key(self) -> str:
        """The API's name for `field`: the TOML path or column, e.g. blocks[2].items[0].url."""
        return self.field


class InvalidInput(NewsletterError):
    """A file the user wrote (issue, config, list, template) has one or more problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def message(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    @classmethod
    def one(
        cls, path: Path | None, message: str, field: str = "", line: int | None = None
    ) -> InvalidInput:
        return cls([Problem(path, message, field=field, line=line)])


class TooDeep(NewsletterError):
    """Markup nested deeper than the renderer can take; `source` is the value that made it."""

    def __init__(self, source: str, depth: int, limit: int) -> None:
        super().__init__(
            f"its Markdown nests {depth} elements inside one another (the limit is {limit}): "
            "use fewer nested emphasis markers, quotes or lists"
        )
        self.source = source
        self.depth = depth
        self.limit = limit


class ConfigError(InvalidInput):
    """newsletter.toml or the environment is wrong or incomplete."""


class SecretMissing(NewsletterError):
    """A secret that only the environment may hold is not set."""


class TransportError(NewsletterError):
    """A connection-level failure: cannot connect, TLS or AUTH refused, timeout, drop.

    The connection is unusable afterwards. `data_sent` is True when it broke after the message
    data went out: the server may have accepted the message, so resending could duplicate it.
    `lasting` is True when trying again cannot help until a setting changes (the certificate,
    the security mode, the password): a send then pauses at once instead of retrying.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        smtp_code: int | None = None,
        data_sent: bool = False,
        lasting: bool = False,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.smtp_code = smtp_code
        self.data_sent = data_sent
        self.lasting = lasting


class DeliveryError(NewsletterError):
    """The server answered about one message with a 4xx (temporary) or 5xx (permanent) reply.

    A definite answer: the message was not accepted, and the connection is still usable.
    """

    def __init__(self, recipient: str, smtp_code: int, reply: str) -> None:
        super().__init__(f"{recipient}: {smtp_code} {reply}")
        self.recipient = recipient
        self.smtp_code = smtp_code
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return 500 <= self.smtp_code < 600


class LedgerMissing(NewsletterError):
    """No ledger of this issue for that destination: nothing was sent there (`status`)."""

    def __init__(self, path: Path, destination: str, *, elsewhere: str = "") -> None:
        self.path = path
        self.destination = destination
        self.elsewhere = elsewhere  # the sends of this issue through other servers, if any
        if elsewhere:
            super().__init__(
                f"nothing has been sent through {destination}, but {elsewhere}. Run `status` "
                "again: pass --destination with the one in brackets (or set the [smtp] host "
                "and port of that send)"
            )
        else:
            super().__init__(f"{path}: no ledger: nothing has been sent to this destination yet")


class SeveralSends(NewsletterError):
    """`status` of an issue sent to several destinations, none of them the configured one:
    which one is meant must be said."""

    def __init__(self, slug: str, configured: str, sends: Sequence[Peek]) -> None:
        self.slug = slug
        self.configured = configured
        self.destinations = [one.destination for one in sends]
        listed = "; ".join(f"{one.destination}: {one.sent} sent" for one in sends)
        super().__init__(
            f"{slug} was sent to several destinations, none of them {configured} (the "
            f"configured one): {listed}. Pass --destination with one of them"
        )


class LockBusy(NewsletterError):
    """Another process holds the lock this command needs."""


class SendersAtWork(LockBusy):
    """The issue changed while other senders still send the earlier version of its send in the
    store: a new version beside them would mail their readers twice (restart) or never be
    what they send (continue)."""

    def __init__(self, send: Path, working: int) -> None:
        self.send = send  # the send's name in the store
        self.working = working  # other senders whose lease is live
        super().__init__(
            f"{send}: {working} other sender(s) are sending the earlier version of this issue "
            "now (one killed holds its lease until it expires: [store] lease); wait for them "
            "to finish (or stop them with Ctrl-C), then run this again"
        )


class InvalidToken(NewsletterError):
    """An unsubscribe token that is malformed, altered, truncated or not made under our secret."""


class MessageError(NewsletterError):
    """A message cannot be built: which recipient, which field (e.g. a header injection attempt)."""

    def __init__(self, message: str, *, recipient: str = "", field: str = "") -> None:
        super().__init__(message)
        self.recipient = recipient
        self.field = field

    def message(self) -> str:
        where = ": ".join(part for part in (self.recipient, self.field) if part)
        text = str(self.args[0])
        return f"{where}: {text}" if where else text


class StorageError(NewsletterError, OSError):
    """A file or folder the command needs cannot be created, read or written: which one, why,
    and what to do. Also an OSError (with the original errno), so code handling those still
    does. Exit code 4 (docs/sending.md)."""

    exit_code = 4

    def __init__(
        self, path: Path, action: str, reason: str, hint: str = "", errno: int | None = None
    ) -> None:
        super().__init__(f"{path}: {action}: {reason}" + (f"; {hint}" if hint else ""))
        self.path = path
        self.action = action
        self.reason = reason
        self.hint = hint
        self.errno = errno


class DiskFull(StorageError):
    """No space left (or a quota or file-size limit reached) where the file is written."""


class NotWritable(StorageError):
    """The file or folder is read-only: permissions, an immutable attribute, a read-only mount."""


# ---------------------------------------------------------------------------------------------
# Input: addresses, options, settings, list files


class BadAddress(NewsletterError):
    """An address that does not pass the syntax check; `.address` is what was given."""

    def __init__(self, address: str, reason: str, fix: str = "") -> None:
        super().__init__(f"{address!r}: {reason}" if address else reason)
        self.address = address
        self.reason = reason
        self.fix = fix  # the same mailbox written so that it parses, when that can be guessed


class DraftIssue(NewsletterError):
    """A send to a list of an issue that says `draft = true`; `path` is the issue file."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: is a draft (draft = true), so it is not sent to a list. When it is ready, "
            "delete the line `draft = true` (or set it to false) and send again; "
            "`newsletter test` sends a copy to you meanwhile"
        )
        self.path = path


class ReservedAddress(BadAddress):
    """An address at a reserved name (RFC 2606/6761: `.test`, `.example`, `.invalid`,
    `.localhost`, `localhost`): no mail is ever delivered there. `.name` is that name."""

    def __init__(self, address: str, name: str) -> None:
        reason = (
            f"{name} is a reserved name for tests and examples: no mail is delivered there "
            "(for local testing set [newsletter] allow_reserved_domains = true, or "
            "NEWSLETTER_ALLOW_RESERVED_DOMAINS=1)"
        )
        super().__init__(address, reason)
        self.name = name


class BadOption(NewsletterError):
    """A command-line option or API argument with a value it cannot take: which, what, why."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option  # as the caller spelled it: `--to` (command line), `to` (API)
        self.value = value
        self.reason = reason


class BadContinueFrom(BadOption):
    """A `--continue-from` that cannot be honoured: `path` is the ledger named, None when the
    send goes to the outbox (which has no other sends to continue from)."""

    def __init__(self, path: Path | None, reason: str) -> None:
        super().__init__("--continue-from", path, reason)
        self.path = path

    def message(self) -> str:
        where = f" {self.path}:" if self.path is not None else ""
        return f"{self.option}{where} {self.reason}"


class NotConfirmed(NewsletterError):
    """A command that changes something for good (a send, a purge) got no yes: no --yes and no
    terminal to ask on. Nothing was done; `exit_code` tells a script so."""

    exit_code = 5

    def __init__(self, action: str, nothing: str, reason: str, again: str) -> None:
        super().__init__(f"not {action}: {nothing} ({reason}); {again}")
        self.action = action  # "sent", "purged"
        self.nothing = nothing  # what was not done, in words: "nothing was sent"
        self.reason = reason  # why there was no yes
        self.again = again  # how to do it after all


class BadTitle(NewsletterError):
    """An issue title that cannot become a subject line: `character` is the control character
    in it, "" when the title is empty (or only spaces)."""

    def __init__(self, title: str, character: str) -> None:
        if character:
            super().__init__(
                f"the title contains control character U+{ord(character):04X} (a line break "
                "or tab?): it becomes the subject, which is one line; give it as one line of text"
            )
        else:
            super().__init__("the title is empty: it becomes the subject; give it some words")
        self.title = title
        self.character = character


class MissingSetting(NewsletterError):
    """A value the command needs was neither given nor set: `key` is where it can be set."""

    def __init__(self, key: str, what: str, hint: str) -> None:
        super().__init__(f"no {what}: {hint}")
        self.key = key  # e.g. newsletter.test_to
        self.what = what
        self.hint = hint


class UnreadableList(InvalidInput):
    """A list that cannot be read to its end (missing, empty, not UTF-8, a quote left open, a
    stray line break, a field over 128 KiB): `path` and `line` say where. Nothing may rewrite
    such a list; the serve endpoint and unsubscribe still record the address as suppressed."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        super().__init__([Problem(path, message, line=line)])
        self.path = path
        self.line = line


# ---------------------------------------------------------------------------------------------
# Refusals: what would break a rule (consent, never overwrite, never mail twice)


class NotInList(NewsletterError):
    """An address that no list holds; `folder` is the subscribers folder searched, when named."""

    def __init__(self, email: str, folder: Path | None = None) -> None:
        where = f" of {folder}" if folder is not None else ""
        super().__init__(f"{email} is in no list{where}")
        self.email = email
        self.folder = folder


class Refused(NewsletterError):
    """A change that would break a consent rule (re-adding someone who unsubscribed): `status`
    of the row at `path`:`line` that blocks it, or "suppressed" (`path` None) when the
    suppression file does."""

    HINT = "use --resubscribe only if they asked to be subscribed again"

    def __init__(
        self,
        email: str,
        status: str,
        path: Path | None = None,
        line: int | None = None,
        since: str = "",
    ) -> None:
        super().__init__(email)
        self.email = email
        self.status = status
        self.path = path
        self.line = line
        self.since = since  # unsubscribed_at of the blocking row, when known

    def message(self) -> str:
        if self.path is None:
            return f"{self.email} is in the suppression file (erased or unsubscribed): {self.HINT}"
        since = f" since {self.since}" if self.since else ""
        where = f"{self.path}:{self.line}"
        return f"{self.email} is {self.status}{since} ({where}): {self.HINT}"


class AlreadyExists(NewsletterError):
    """A file the command would write is already there: we never overwrite."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists: choose another title or edit that file")
        self.path = path


class NotForArchive(NewsletterError):
    """An issue whose public page would carry `found`, a personal link (unsubscribe, ...)."""

    def __init__(self, path: Path, found: str) -> None:
        super().__init__(
            f"{path}: the page would contain {found!r}: a personal link does not "
            "belong in the public archive (remove it from the issue, or make it a draft)"
        )
        self.path = path
        self.found = found


# ---------------------------------------------------------------------------------------------
# Sends: the ledger, what changed since, what was sent elsewhere


class LedgerError(NewsletterError):
    """The ledger file cannot be read or written."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class ContentChanged(NewsletterError):
    """The issue changed after part of the list was sent: the user must choose."""

    def __init__(self, path: Path, sent: int, total: int) -> None:
        super().__init__(
            f"the issue changed after {sent} of {total} recipients "
            "were sent the earlier version. Choose: `--on-change continue` sends the new version "
            "to the rest only; `--on-change restart` starts over and mails everyone again"
        )
        self.path = path  # the ledger of the send
        self.sent = sent
        self.total = total


class OtherSend(NewsletterError):
    """The issue was sent in part through another server: a fresh ledger would mail them again."""

    def __init__(self, destination: str, others: Sequence[Peek], needed: Sequence[Peek]) -> None:
        self.destination = destination
        self.others = others  # the ledgers not yet continued from
        self.needed = needed  # all those one command must name (given ones included)
        found = self.describe(others)
        flags = " ".join(f"--continue-from {o.path}" for o in needed)
        super().__init__(
            f"this issue was already sent in part through another server: {found}. Sending "
            f"through {destination} would start a new ledger and mail those readers again. "
            "Send through the same [smtp] host and port as then, or continue through this "
            f"server without mailing anyone twice: add `{flags}`"
        )

    @staticmethod
    def describe(ledgers: Sequence[Peek]) -> str:
        """The other sends, one clause each: path, server, sent and unknown counts."""
        return "; ".join(
            f"{o.path} ({o.destination or 'an SMTP server'}): {o.sent} sent, {o.unknown} unknown"
            for o in ledgers
        )


class NobodySelected(NewsletterError):
    """A new send whose lists and tags select nobody: a mistake to say, not a send of zero."""

    def __init__(self, reason: str, lists: list[Path], tags: frozenset[str]) -> None:
        super().__init__(f"nobody to send to: {reason}")
        self.lists = lists
        self.tags = tags


class SelectionChanged(NewsletterError):
    """A resume whose lists or tags differ from those of the send it would continue."""

    def __init__(self, message: str, stored: dict[str, Any], asked: dict[str, Any]) -> None:
        super().__init__(message)
        self.stored = stored
        self.asked = asked


class PlanUsed(NewsletterError):
    """A plan given to `send` a second time (or after it was closed): a plan sends once."""

    def __init__(self) -> None:
        super().__init__("this plan was already sent or closed: make a new one")


# ---------------------------------------------------------------------------------------------
# The shared store ([store] url: PostgreSQL). Its URL is shown masked: never its password.


class StoreDriverMissing(NewsletterError):
    """[store] url is set but psycopg (the extra `newsletter[postgres]`) is not installed."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"[store] url is set ({url}) but the PostgreSQL driver is not installed: "
            "pip install 'newsletter[postgres]'"
        )
        self.url = url


class StoreUnavailable(NewsletterError):
    """The store cannot be reached, refused the login, or went away during a command. Exit
    code 6 (docs/sending.md): run the command again once it is back (a send resumes)."""

    exit_code = 6

    def __init__(self, where: str, action: str, reason: str) -> None:
        super().__init__(
            f"the store at {where}: {action}: {reason}; run the command again once it is "
            "reachable (a send resumes: nobody is mailed twice)"
        )
        self.where = where  # host:port/dbname, never the password
        self.action = action
        self.reason = reason


class StoreSchemaMismatch(NewsletterError):
    """The store's schema is not the version this newsletter uses: migrate it (or upgrade)."""

    def __init__(self, where: str, found: int, expected: int) -> None:
        if found < expected:
            advice = "run `newsletter store migrate` (safe to run twice, and while others wait)"
        else:
            advice = "a newer newsletter migrated it: upgrade this one"
        super().__init__(
            f"the store at {where} has schema version {found}, this newsletter uses version "
            f"{expected}: {advice}"
        )
        self.where = where
        self.found = found
        self.expected = expected


# ---------------------------------------------------------------------------------------------
# Serving


class CannotListen(NewsletterError):
    """`serve` or `preview` cannot listen on host:port: why, and what to try."""

    def __init__(self, host: str, port: int, reason: str, hint: str = "") -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
        super().__init__(f"{where}: cannot listen: {reason}" + (f"; {hint}" if hint else ""))
        self.host = host
        self.port = port
        self.reason = reason
        self.hint = hint


class BadForm(NewsletterError):
    """A POST body that is not a small, flat form: too large, too many fields, nested, broken.
    `limit`: the size in bytes it went past, when it was too large."""

    def __init__(self, reason: str, limit: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be read or changed: which one (a folder or an imaps:// URL,
    never a password) and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason

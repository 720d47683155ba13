"""The one error family the CLI catches; each carries where the problem is, not just a string."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


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
    """

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        smtp_code: int | None = None,
        data_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.smtp_code = smtp_code
        self.data_sent = data_sent


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
                "with the [smtp] host and port of that send"
            )
        else:
            super().__init__(f"{path}: no ledger: nothing has been sent to this destination yet")


class LockBusy(NewsletterError):
    """Another process holds the lock this command needs."""


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

"""DKIM signatures (dkimpy), for senders whose relay does not sign, kept off the event loop.

RSA signing costs milliseconds a message, a hundred times building one: `SigningPool` signs in
worker processes, each of which loads the key once. Sign the unstuffed message (what the
receiver sees); the pool dot-stuffs the signed bytes afterwards when the wire needs it.
`wire_message` is the one place that builds, signs and dot-stuffs in that order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from newsletter.config import Config, ascii_domain
from newsletter.errors import ConfigError, MessageError, Problem

# What the signature covers. Each is oversigned: h= names it once more than the message
# carries it, so a copy inserted anywhere in transit (a second Subject or Reply-To above the
# original, which is the one mail clients show) breaks the signature instead of riding on it.
SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
    # Not in the message, signed as absent: added in transit, clients would show them ("on
    # behalf of", more recipients, the thread it joins) or decode the body by them.
    "Sender",
    "Cc",
    "In-Reply-To",
    "References",
    "Content-Transfer-Encoding",
)


def oversigned(message: bytes) -> list[bytes]:
    """h= for `message`: each of SIGNED_HEADERS as many times as it occurs, plus one."""
    import dkim

    headers, _body = dkim.rfc822_parse(message)
    present = Counter(name.lower() for name, _value in headers)
    return [
        name.encode() for name in SIGNED_HEADERS for _ in range(present[name.lower().encode()] + 1)
    ]


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    key: bytes  # PEM private key

    @classmethod
    def from_config(cls, config: Config) -> DkimSigner | None:
        """The configured signer, None when DKIM is off, ConfigError when half configured."""
        settings = config.newsletter
        keys = {
            "newsletter.dkim_domain": settings.dkim_domain,
            "newsletter.dkim_selector": settings.dkim_selector,
            "newsletter.dkim_key_file": settings.dkim_key_file,
        }
        if not any(keys.values()):
            return None
        missing = [name for name, value in keys.items() if not value]
        if missing:
            problems = [Problem(config.path, "needed for DKIM signing", field=m) for m in missing]
            raise ConfigError(problems)
        key = _read_key(config, config.root / settings.dkim_key_file)
        return cls(ascii_domain(settings.dkim_domain), settings.dkim_selector, key)

    def sign(self, message: bytes) -> bytes:
        """`message` (CRLF, not dot-stuffed) with a DKIM-Signature header in front."""
        import dkim

        try:
            header = dkim.sign(
                message,
                self.selector.encode(),
                self.domain.encode(),
                self.key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=oversigned(message),
            )
        except dkim.DKIMException as exc:
            raise MessageError(f"DKIM signing failed: {exc}", field="newsletter.dkim") from None
        return bytes(header) + message


def _read_key(config: Config, path: Path) -> bytes:
    where = "newsletter.dkim_key_file"
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError.one(config.path, f"cannot read {path}: {exc.strerror}", where) from None
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError.one(config.path, f"{path} is not a PEM private key", where)
    return key


def dot_stuff(message: bytes) -> bytes:
    """The SMTP wire form of a CRLF message: every line starting with '.' gets another '.'."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def _signed_wire(signer: DkimSigner, message: bytes, dot_stuffed: bool) -> bytes:
    signed = signer.sign(message)
    return dot_stuff(signed) if dot_stuffed else signed


# ---------------------------------------------------------------------------------------------
# From a message to the bytes a connection takes

Build = Callable[[bool, bool], bytes]  # (eight_bit, dot_stuffed) -> a message (MessageFactory)


class Signer(Protocol):
    """Signs a message (CRLF, not dot-stuffed) and returns it dot-stuffed when asked, without
    blocking the event loop for long: SigningPool, or InlineSigner for a single message."""

    async def sign(self, message: bytes, *, dot_stuffed: bool = False) -> bytes: ...


async def wire_message(
    build: Build, *, eight_bit: bool, dot_stuffed: bool, signer: Signer | None = None
) -> bytes:
    """The bytes a connection takes: `build(eight_bit, dot_stuffed)` makes them at once when
    nothing signs; with a `signer`, the unstuffed message is signed (DKIM covers what the
    receiver sees) and dot-stuffed after, when the wire needs it."""
    if signer is None:
        return build(eight_bit, dot_stuffed)
    return await signer.sign(build(eight_bit, False), dot_stuffed=dot_stuffed)


@dataclass(frozen=True)
class InlineSigner:
    """A Signer in this process: for one message (a test send), where starting worker
    processes would cost more than the signature."""

    signer: DkimSigner

    async def sign(self, message: bytes, *, dot_stuffed: bool = False) -> bytes:
        return _signed_wire(self.signer, message, dot_stuffed)


# ---------------------------------------------------------------------------------------------
# The process pool. Each worker holds the signer (and so the key) from its initializer on.

_worker_signer: DkimSigner | None = None


def _start_worker(signer: DkimSigner) -> None:
    global _worker_signer  # one signer per worker process, set once at its start
    _worker_signer = signer


def _sign_in_worker(message: bytes, dot_stuffed: bool) -> bytes:
    assert _worker_signer is not None, "worker started without a signer"
    return _signed_wire(_worker_signer, message, dot_stuffed)


class SigningPool:
    """Signs messages in worker processes; `await pool.sign(data)` never blocks the loop."""

    def __init__(self, signer: DkimSigner, workers: int | None = None) -> None:
        self.signer = signer
        self._pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(signer,))

    async def sign(self, message: bytes, *, dot_stuffed: bool = False) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _sign_in_worker, message, dot_stuffed)

    def sign_many(self, messages: Iterable[bytes], *, dot_stuffed: bool = False) -> list[bytes]:
        """Sign a batch, in order (for scripts and benchmarks; the dispatcher uses `sign`)."""
        batch = list(messages)
        flags = [dot_stuffed] * len(batch)
        return list(self._pool.map(_sign_in_worker, batch, flags, chunksize=8))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SigningPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

"""A real SMTP server (aiosmtpd) in the test process, on 127.0.0.1 and a free port.

It records what it accepted and injects faults, so the transport's and the dispatcher's tests
run against a real server:

    server = SmtpServer(starttls=server_tls_context, users={USER: PASSWORD})
    with server:
        server.add_fault(no_such_user(), recipient="gone@example.org")
        server.add_fault(temporary())              # next RCPT, any recipient: 451, then fine
        server.hook = lambda command, rcpt, count: drop_after_data() if count == 100 else None
        ... send to ("127.0.0.1", server.port) ...
    server.messages      # [Received(sender, recipients, data, mail_options, tls, login), ...]
    server.reads         # the start of each piece of data the server read: pipelined groups
    server.delivered()   # Counter: recipient -> copies accepted
    server.wait_for_messages(10, timeout=1)  # True once 10 messages arrived in all

The server runs its own event loop in a thread, so a test may drive it from asyncio or from a
subprocess (`newsletter send`). `stop()` closes every session and the loop: nothing leaks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd itself sets the deprecated Session.login_data on every AUTH, and logs a warning each
# time: noise, not news.
logging.getLogger("mail.log").addFilter(
    lambda record: "login_data is deprecated" not in record.getMessage()
)

HOST = "127.0.0.1"
USER = "newsletter"
PASSWORD = "correct horse battery staple"  # noqa: S105  # the test server's password
READ_KEPT = 200  # bytes kept of each read: enough to see which commands came together


@dataclass(frozen=True)
class Fault:
    """What the server does instead of its normal answer to one command.

    when: "MAIL", "RCPT" or "DATA" (DATA: after the whole message arrived, before the reply).
    reply: the reply line to send instead (e.g. "451 4.3.0 Try again later"); "" = the normal one,
        or none at all when `close` is set.
    close: close the connection after the reply (or without replying when `reply` is "").
    delay: seconds to wait before answering.
    hang: never answer (the session stays open until the client or the server stops).
    times: how many commands it applies to; 0 = every one.
    """

    when: str
    reply: str = ""
    close: bool = False
    delay: float = 0.0
    hang: bool = False
    times: int = 1

    @property
    def delivers(self) -> bool:
        """A DATA fault still counts the message as delivered (the reply is lost or late)."""
        return not self.reply or self.reply.startswith("2")


def temporary(when: str = "RCPT", times: int = 1) -> Fault:
    """451, then (after `times` attempts) success: a greylisting or busy server."""
    return Fault(when, "451 4.3.0 Try again later", times=times)


def no_such_user() -> Fault:
    return Fault("RCPT", "550 5.1.1 No such user here", times=0)


def too_big() -> Fault:
    return Fault("DATA", "552 5.3.4 Message too big for this mailbox", times=0)


def shutting_down(when: str = "RCPT") -> Fault:
    """421 and disconnect (a server restarting or throttling)."""
    return Fault(when, "421 4.3.2 Service shutting down", close=True)


def drop_after_data() -> Fault:
    """The message arrives whole, then the connection drops without a reply: delivered or not?"""
    return Fault("DATA", close=True)


def slow(seconds: float, when: str = "DATA") -> Fault:
    """The normal answer, `seconds` late (slower than the client's timeout, for the tests)."""
    return Fault(when, delay=seconds)


def stop_answering(when: str = "MAIL") -> Fault:
    return Fault(when, hang=True, times=0)


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # the message as delivered: CRLF, leading dots un-stuffed
    mail_options: tuple[str, ...]  # e.g. ("SIZE=1234", "BODY=8BITMIME")
    tls: bool
    login: str | None


@dataclass
class _Rule:
    fault: Fault
    recipient: str | None
    left: int  # applications left; < 0: unlimited


Hook = Callable[[str, str, int], Fault | None]  # (command, recipient or "", messages so far)


@dataclass
class SmtpServer:
    """An aiosmtpd server in a thread. STARTTLS when `starttls` (a server context) is given,
    implicit TLS when `implicit_tls` is; AUTH PLAIN/LOGIN checked against `users`."""

    starttls: ssl.SSLContext | None = None
    implicit_tls: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)
    eight_bit: bool = True
    smtputf8: bool = True
    size_limit: int = 10_000_000
    pipelining: bool = True  # advertise PIPELINING (aiosmtpd reads ahead, so it copes)
    idle_timeout: float = 30.0  # the server closes idle sessions: nothing hangs for ever
    keep_data: bool = True  # False: record envelopes only (tens of thousands of messages)

    host: str = HOST
    port: int = 0
    messages: list[Received] = field(default_factory=list, repr=False)
    rcpt_attempts: Counter[str] = field(default_factory=Counter, repr=False)
    sessions: int = 0  # connections accepted so far
    reads: list[bytes] = field(default_factory=list, repr=False)  # first READ_KEPT bytes of each
    hook: Hook | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified for each message recorded
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._protocols: set[SMTP] = set()
        self._error: BaseException | None = None

    # -- configuration, from the test's thread ------------------------------------------------

    def add_fault(self, fault: Fault, recipient: str | None = None) -> None:
        """Apply `fault` to the next matching command(s), for `recipient` or for anyone."""
        left = fault.times if fault.times > 0 else -1
        with self._lock:
            self._rules.append(_Rule(fault, recipient, left))

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Block until `count` messages have arrived in all, or `timeout` s passed: whether
        they did. Lets a test act on the server's progress rather than on a clock."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def delivered(self) -> Counter[str]:
        """How many copies each recipient got."""
        with self._lock:
            return Counter(r for m in self.messages for r in m.recipients)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="smtpd", daemon=True)
        self._thread.start()
        while not ready.wait(1.0) and self._thread.is_alive():
            pass  # a busy machine may take long to start a thread; a dead one never will
        if not ready.is_set() or self._error is not None:
            self.stop()
            raise RuntimeError(f"test SMTP server did not start: {self._error!r}")

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                self._loop.create_server(self._protocol, HOST, 0, ssl=self.implicit_tls)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._loop.close()
            ready.set()
            return
        self._loop.call_soon(ready.set)
        self._loop.run_forever()
        self._loop.run_until_complete(self._shutdown())
        self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.abort()
        await self._server.wait_closed()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.shutdown_asyncgens()

    def _protocol(self) -> SMTP:
        self.sessions += 1
        protocol = _Session(
            self,
            _Handler(self),
            hostname="smtpd.test",
            tls_context=self.starttls,
            require_starttls=self.starttls is not None,
            auth_require_tls=self.starttls is not None,
            authenticator=self._authenticate,
            enable_SMTPUTF8=self.smtputf8,
            data_size_limit=self.size_limit,
            timeout=self.idle_timeout,
            loop=self._loop,
        )
        self._protocols.add(protocol)
        return protocol

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if user in self.users and self.users[user] == password:
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    # -- the server's side, in its own thread -------------------------------------------------

    def _fault(self, command: str, recipient: str) -> Fault | None:
        with self._lock:
            count = len(self.messages)
            for rule in self._rules:
                matches = rule.recipient in (None, recipient) and rule.fault.when == command
                if matches and rule.left != 0:
                    rule.left -= 1
                    return rule.fault
        return self.hook(command, recipient, count) if self.hook else None

    def _record(self, received: Received) -> None:
        with self._arrived:
            self.messages.append(received)
            self._arrived.notify_all()


class _Session(SMTP):
    """aiosmtpd's SMTP session, tracked so that stop() can close it."""

    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        if self._owner.keep_data:
            self._owner.reads.append(data[:READ_KEPT])
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._protocols.discard(self)
        super().connection_lost(error)


class _Handler:
    """aiosmtpd hooks: record, apply faults, and keep the optional extensions honest."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if not self.owner.eight_bit:
            responses = [r for r in responses if r != "250-8BITMIME"]
        if not self.owner.users:  # no accounts: do not offer AUTH at all
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        if self.owner.pipelining:
            responses.insert(-1, "250-PIPELINING")  # the last line ("250 HELP") ends the list
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.owner.users and not session.authenticated:
            return "530 5.7.0 Authentication required"
        override = await _apply(server, self.owner._fault("MAIL", ""))
        if override:
            return override
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.owner._lock:
            self.owner.rcpt_attempts[address] += 1
        override = await _apply(server, self.owner._fault("RCPT", address))
        if override:
            return override
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        fault = self.owner._fault("DATA", recipient)
        if fault is None or fault.delivers:
            self.owner._record(_received(self.owner, session, envelope))
        override = await _apply(server, fault)
        return override or f"250 2.0.0 OK queued as {len(self.owner.messages)}"


def _received(owner: SmtpServer, session: Any, envelope: Any) -> Received:
    return Received(
        sender=envelope.mail_from,
        recipients=tuple(envelope.rcpt_tos),
        data=bytes(envelope.original_content) if owner.keep_data else b"",
        mail_options=tuple(envelope.mail_options),
        tls=owner.implicit_tls is not None or session.ssl is not None,
        login=session.auth_data.login.decode() if session.authenticated else None,
    )


async def _apply(server: SMTP, fault: Fault | None) -> str:
    """Carry out `fault`; return the reply to send instead of the normal one ("" = normal)."""
    if fault is None:
        return ""
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.hang:
        await asyncio.Event().wait()  # cancelled when the session closes
    if fault.close:
        if fault.reply:
            await server.push(fault.reply)
        assert server.transport is not None
        server.transport.close()
        await asyncio.Event().wait()  # aiosmtpd cancels this handler when the connection goes
    return fault.reply


def settings_for(server: SmtpServer, **overrides: Any) -> Any:
    """[smtp] settings that reach `server`: security and login follow how it was started."""
    from newsletter.config import SmtpSettings

    security = "tls" if server.implicit_tls else "starttls" if server.starttls else "none"
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": security,
        "username": USER if server.users else "",
        "timeout": 30.0,  # only a hang reaches it; tests of timeouts set their own
    }
    values.update(overrides)
    return SmtpSettings(**values)

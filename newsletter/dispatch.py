"""The send loop: K reused connections, exact rate limits, retries, the ledger, resume.

`Dispatcher.run()` sends every pending (and due deferred) row of a `Ledger` through a `Transport`
and records each outcome. It never prints: it reports through `on_event` (Progress, Notice).
Time comes from an injectable `Clock` (limits.py), so the limits and retries are tested with a
fake one. Which send this is (lock, ledger, snapshot) and its report: sends.py.

Outcomes (transport.py's contract):
  Accepted                          -> sent
  DeliveryError 4xx                 -> deferred, retried after retry_delays (jittered)
  DeliveryError 5xx                 -> failed (5.1.x about the recipient: also `on_bounce`)
  TransportError, data not sent     -> deferred (connection reopened)
  TransportError, data sent         -> unknown: maybe delivered, never resent by itself
Connection-level failures in a row (cannot connect, drops) pause the run after `pause_after`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import heapq
import random
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from newsletter.dkim import Signer, wire_message
from newsletter.errors import DeliveryError, NewsletterError, TransportError
from newsletter.limits import Clock, Limits, LimitTooFar, RateLimiter, SharedLimiter, SystemClock
from newsletter.models import Subscriber
from newsletter.store import Lease, Row, SendLedger, is_bounce
from newsletter.transport import Accepted, Connection, Envelope, Transport

BATCH = 256  # rows read from the ledger at a time; the unsubscribe check runs between batches
SYNC_EVERY = 1000  # attempts between power-loss syncs (docs/sending.md: the bound)
SYNC_SECONDS = 1.0  # ... or this many seconds, whichever comes first
PROGRESS_SECONDS = 0.1  # at most ten Progress events a second (and one when the run ends)
LEASE_LOST = (
    "stopped: this sender's lease expired (it was stopped or cut off from the store for longer "
    "than [store] lease) and the other senders took over its recipients; run it again to help"
)


# ---------------------------------------------------------------------------------------------
# Events (the CLI renders them) and the result of a run


@dataclass(frozen=True)
class Progress:
    done: int  # outcomes recorded this run
    total: int  # what this run set out to send (pending + deferred, capped by --limit)
    sent: int
    failed: int
    deferred: int
    unknown: int
    elapsed: float


@dataclass(frozen=True)
class Notice:
    text: str


Event = Progress | Notice


@dataclass
class RunResult:
    stopped: str = ""  # "" finished; else why it stopped early (paused, interrupted, limit)
    resumable: bool = False  # rerunning the same command continues
    duration: float = 0.0
    attempts: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    left_out: int = 0  # unsubscribed during the send
    bounced: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.attempts / self.duration if self.duration > 0 else 0.0


Compose = Callable[[Row, Connection], Awaitable[tuple[Envelope, bytes]]]


# ---------------------------------------------------------------------------------------------
# The loop


class Dispatcher:
    def __init__(
        self,
        ledger: SendLedger,
        transport: Transport,
        compose: Compose,
        limits: Limits,
        *,
        clock: Clock | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_bounce: Callable[[str], Awaitable[None]] | None = None,
        blocked: Callable[[], Collection[tuple[int, str]]] | None = None,
        stop: asyncio.Event | None = None,
        limit: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.transport = transport
        self.compose = compose
        self.limits = limits
        self.clock = clock or SystemClock()
        self.on_event = on_event or (lambda _event: None)
        self.on_bounce = on_bounce
        self.blocked = blocked
        self.stop = stop or asyncio.Event()
        self.limit = limit
        self.rng = rng or random.Random()
        self.result = RunResult()
        self.lease: Lease | None = None  # with several senders (a shared store), this one's
        self._ready: deque[Row] = deque()
        self._retries: list[tuple[float, int, Row]] = []  # (due, id, row), a heap
        self._tries: dict[int, int] = {}  # retries this run, by row id
        self._skipped: set[int] = set()
        self._seen_blocked: set[tuple[int, str]] = set()
        self._last_id = 0
        self._exhausted = False
        self._looked_again = False  # with other senders: the last claim after they stopped
        self._taken = 0
        self._busy = 0  # workers holding a row: they may yet hand back a retry
        self._failures = 0  # connection-level failures in a row
        self._changed = asyncio.Event()
        self._commit: asyncio.Future[None] | None = None
        self._since_sync = 0
        self._last_sync = 0.0
        self._total = 0
        self._started = 0.0
        self._last_progress = float("-inf")

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Send until nothing is due, or a pause/stop; the ledger is synced when it returns."""
        self._prepare()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.limits.connections)]
        keeper = asyncio.create_task(self._keep_lease()) if self.lease is not None else None
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
        if keeper is not None:
            outcomes.append(await _stopped(keeper))
            if not self.result.stopped and not self.lease_held():
                self._halt(LEASE_LOST)
        self._progress(final=True)
        self.ledger.sync()
        self.result.duration = self.clock.now() - self._started
        self._record_run()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return self.result

    def _prepare(self) -> None:
        recovered = self.ledger.recover()
        if recovered:
            self._notice(f"{recovered} in flight when the last run stopped: marked unknown")
        self.ledger.retry_now()
        counts = self.ledger.counts()
        self._total = counts["pending"] + counts["deferred"]
        if self.limit is not None:
            self._total = min(self._total, self.limit)
        now = self.clock.now()
        for row, _next in self.ledger.deferred():
            heapq.heappush(self._retries, (now, row.id, row))
        self.lease = self.ledger.lease()
        self.limiter = self._limiter(now)
        self._started = self._last_sync = now

    def _limiter(self, now: float) -> RateLimiter | SharedLimiter:
        """The limits of this sender alone, or with other senders, of all of them together."""
        limited = self.limits.rate or self.limits.hourly or self.limits.daily
        if self.lease is not None and limited:
            return SharedLimiter(self.clock, self.limits, self.lease.reserve)
        wall = self.clock.wall()
        history = [now - (wall - t) for t in self.ledger.attempt_times(wall - 86400.0)]
        windows = self.limits.windows(history)
        return RateLimiter(self.clock, windows, self.limits.max_wait)

    async def _keep_lease(self) -> None:
        """Renew this sender's lease while it works: others take over only when it stops."""
        assert self.lease is not None
        while True:
            await self.clock.sleep(self.lease.seconds / 3)
            if not self.lease_held():
                self._halt(LEASE_LOST)
                return

    def lease_held(self) -> bool:
        """Renew the lease; False when it had expired (the others took over its claims)."""
        return self.lease is None or self.lease.renew()

    def _record_run(self) -> None:
        self.ledger.put("duration_s", f"{self.result.duration:.3f}")
        self.ledger.put("messages_per_second", f"{self.result.per_second:.1f}")
        self.ledger.sync()

    def _halt(self, why: str, *, resumable: bool = True) -> None:
        if not self.result.stopped:
            self.result.stopped = why
            self.result.resumable = resumable
        self.stop.set()
        self._changed.set()

    # -- one connection ----------------------------------------------------------------------

    async def _worker(self) -> None:
        conn: Connection | None = None
        try:
            while (row := await self._next()) is not None:
                self._busy += 1
                try:
                    conn = await self._attempt(row, conn)
                finally:
                    self._busy -= 1
                    self._changed.set()
        except BaseException:
            self._halt("stopped by an error")
            raise
        finally:
            if conn is not None:
                await _close(conn)

    async def _attempt(self, row: Row, conn: Connection | None) -> Connection | None:
        try:
            await self.limiter.acquire()
        except LimitTooFar as exc:
            self._hand_back(row)
            self._halt(f"paused: a sending limit allows the next message in {exc.wait:.0f} s")
            return conn
        if conn is None and (conn := await self._connect()) is None:
            self._hand_back(row)
            return None
        if self.stop.is_set():
            self._hand_back(row)
            return conn
        return await self._deliver(row, conn)

    async def _deliver(self, row: Row, conn: Connection) -> Connection | None:
        try:
            envelope, data = await self.compose(row, conn)
        except NewsletterError as exc:  # e.g. a merge field that would inject a header
            self.result.failed += 1
            self.ledger.failed(row.id, None, str(exc), self._wall())
            self._done()
            return conn
        if not self.ledger.start(row.id, self.clock.wall()):
            return conn  # another sender took it over (this one's lease had expired), or skipped
        await self._durable()  # the attempt is on disk before its data goes out
        try:
            accepted = await conn.send(envelope, data)
        except DeliveryError as exc:
            await self._refused(row, exc)
            return conn
        except TransportError as exc:
            self._broken(row, exc)
            await _close(conn)
            return None
        self._accepted(row, accepted)
        return conn

    async def _connect(self) -> Connection | None:
        while not self.stop.is_set():
            try:
                return await self.transport.connect()
            except TransportError as exc:
                if exc.lasting:  # the same settings meet the same refusal: say so at once
                    self._halt(f"paused: cannot connect: {exc} (fix the setting, then resume)")
                    return None
                delay = self._connection_failed(f"cannot connect: {exc}")
                if delay is None:
                    return None
                await self._sleep(delay)
        return None

    def _connection_failed(self, why: str) -> float | None:
        """Count one connection-level failure; None when it is time to pause."""
        self._failures += 1
        if self._failures >= self.limits.pause_after:
            self._halt(f"paused after {self._failures} connection failures in a row: {why}")
            return None
        delays = self.limits.retry_delays or (2.0,)
        delay = self._jittered(delays[min(self._failures, len(delays)) - 1])
        self._notice(f"{why}; trying again in {delay:.0f} s")
        return delay

    # -- outcomes ----------------------------------------------------------------------------

    def _accepted(self, row: Row, accepted: Accepted) -> None:
        self._failures = 0
        self.result.sent += 1
        self.ledger.sent(row.id, accepted.code, accepted.reply, self._wall())
        self._done()

    async def _refused(self, row: Row, exc: DeliveryError) -> None:
        self._failures = 0
        if not exc.permanent:
            self._retry(row, exc.smtp_code, f"{exc.smtp_code} {exc.reply}")
            return
        self.result.failed += 1
        self.ledger.failed(row.id, exc.smtp_code, exc.reply, self._wall())
        self._done()
        if is_bounce(exc.reply):
            self.result.bounced.append(row.email)
            if self.on_bounce is not None:
                await self.on_bounce(row.email)

    def _broken(self, row: Row, exc: TransportError) -> None:
        if exc.data_sent:
            self.result.unknown += 1
            why = f"connection lost after the data was sent ({exc}): may have been delivered"
            self.ledger.unknown(row.id, why, self._wall())
            self._done()
        else:
            self._retry(row, exc.smtp_code, str(exc))
        self._connection_failed(f"connection lost: {exc}")

    def _retry(self, row: Row, code: int | None, reason: str) -> None:
        tries = self._tries[row.id] = self._tries.get(row.id, 0) + 1
        delays = self.limits.retry_delays
        if tries > len(delays):  # out of retries this run: stays deferred, reported
            self.result.deferred += 1
            self.ledger.defer(row.id, code, reason, 0.0, self._wall())
            self._done()
            return
        delay = self._jittered(delays[tries - 1])
        heapq.heappush(self._retries, (self.clock.now() + delay, row.id, row))
        next_at = self._wall() + delay
        self.ledger.defer(row.id, code, reason, next_at, self._wall())
        self._done(final=False)

    def _done(self, *, final: bool = True) -> None:
        """After recording an outcome (committed with the next attempt, or the final sync)."""
        self.result.attempts += 1
        self._since_sync += 1
        self._changed.set()
        if final:
            self._progress()

    def _progress(self, *, final: bool = False) -> None:
        """A Progress event, at most every PROGRESS_SECONDS: rendering one per message cost
        more than a tenth of the send's CPU time."""
        now = self.clock.now()
        if not final and now - self._last_progress < PROGRESS_SECONDS:
            return
        self._last_progress = now
        r = self.result
        done = r.sent + r.failed + r.deferred + r.unknown
        elapsed = now - self._started
        self.on_event(Progress(done, self._total, r.sent, r.failed, r.deferred, r.unknown, elapsed))

    # -- work queue --------------------------------------------------------------------------

    async def _next(self) -> Row | None:
        while not self.stop.is_set():
            row = self._take()
            if row is not None:
                return row
            if not self._exhausted:
                self._refill()
                continue
            due = self._retries[0][0] - self.clock.now() if self._retries else None
            if due is None and self._busy == 0:
                wait = self._others_at_work()
                if wait is None and (self.lease is None or self._looked_again):
                    return None
                # claims come back from a sender that stopped or whose lease expired: claim
                # again after the wait, and once more after the last sender stopped
                self._looked_again = wait is None
                self._exhausted = False
                await self._sleep(wait or 0.0)
                continue
            self._changed.clear()
            await self._wait(due)
        return None

    def _others_at_work(self) -> float | None:
        """Nothing left here: with other senders, the seconds to wait before claiming again
        while one of them still works (a lease that expires gives its claims back); None:
        done (no other sender, or --limit reached)."""
        if self.lease is None or (self.limit is not None and self._taken >= self.limit):
            return None
        return self.lease.others()

    def _take(self) -> Row | None:
        while self._retries and self._retries[0][0] <= self.clock.now():
            row = heapq.heappop(self._retries)[2]
            if row.id not in self._skipped:
                return row
        if self._ready and (self.limit is None or self._taken < self.limit):
            self._taken += 1
            return self._ready.popleft()
        if self.limit is not None and self._taken >= self.limit:
            self._exhausted = True
        return None

    def _hand_back(self, row: Row) -> None:
        """A row taken but never attempted (pause, stop): it stays pending in the ledger."""
        self._ready.appendleft(row)

    def _refill(self) -> None:
        self._check_blocked()
        rows = self.ledger.pending(self._last_id, BATCH)
        if not rows:
            self._exhausted = True
            return
        self._last_id = rows[-1].id
        self._ready.extend(r for r in rows if r.id not in self._skipped)

    def _check_blocked(self) -> None:
        """Between batches: who unsubscribed since the snapshot is left out from now on."""
        if self.blocked is None:
            return
        new = [k for k in self.blocked() if k not in self._seen_blocked]
        if not new:
            return
        self._seen_blocked.update(new)
        ids = self.ledger.skip(new, "unsubscribed during the send")
        self._skipped.update(ids)
        self.result.left_out += len(ids)
        if ids:
            self._notice(f"left out {len(ids)} who unsubscribed during the send")

    # -- time and durability -----------------------------------------------------------------

    async def _wait(self, seconds: float | None) -> None:
        """Until `seconds` pass, an outcome is recorded, or the run stops."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._changed.wait())]
        if seconds is not None:
            waits.append(asyncio.ensure_future(self.clock.sleep(max(seconds, 0.0))))
        await _first(waits)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake when the run stops."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.stop.wait())]
        waits.append(asyncio.ensure_future(self.clock.sleep(seconds)))
        await _first(waits)

    async def _durable(self) -> None:
        """Commit, grouping the attempts of every connection ready in the same loop turn."""
        if self._commit is None:
            self._commit = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit_now)
        await asyncio.shield(self._commit)

    def _commit_now(self) -> None:
        future, self._commit = self._commit, None
        assert future is not None
        try:
            if self._since_sync >= SYNC_EVERY or self.clock.now() - self._last_sync >= SYNC_SECONDS:
                self.ledger.sync()
                self._since_sync, self._last_sync = 0, self.clock.now()
            else:
                self.ledger.commit()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)

    def _jittered(self, delay: float) -> float:
        return delay * (1 + self.rng.uniform(-self.limits.jitter, self.limits.jitter))

    def _wall(self) -> float:
        return self.clock.wall()

    def _notice(self, text: str) -> None:
        self.on_event(Notice(text))


async def _stopped(task: asyncio.Task[None]) -> BaseException | None:
    """Cancel a task that runs until cancelled; the error it died of before, if any."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return None
    except Exception as exc:  # e.g. the store went away while it renewed the lease
        return exc
    return None


async def _first(waits: list[asyncio.Future[Any]]) -> None:
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _close(conn: Connection) -> None:
    with contextlib.suppress(NewsletterError, OSError):
        await conn.close()


class Builder(Protocol):
    """message.MessageFactory: one recipient's message bytes in the form the peer wants."""

    domain: str  # the sender's domain, for Message-IDs

    def build(
        self, subscriber: Subscriber, *, eight_bit: bool, dot_stuffed: bool, message_id: str
    ) -> bytes: ...


def subscriber_of(row: Row) -> Subscriber:
    fields = {"email": row.email, "name": row.name, **row.fields}
    path = _path(row.list_path) if row.list_path else None
    # Any non-ASCII address needs SMTPUTF8: the message to it carries it in UTF-8 in To.
    return Subscriber(
        row.email, row.name, fields=fields, list_path=path, smtputf8=not row.email.isascii()
    )


@functools.lru_cache(maxsize=64)
def _path(text: str) -> Path:
    """A list's Path, made once: a send has a few lists, and Path() costs ~3 us a message."""
    return Path(text)


def composer(
    builder: Builder,
    sender: str,
    digest: str,
    signer: Signer | None = None,
    return_path: Callable[[int, str], str] | None = None,
) -> Compose:
    """Compose for the Dispatcher: the envelope and the bytes in the connection's form.

    The envelope sender is `sender`, or with `return_path` (verp.ReturnPaths.for_send) each
    recipient's own, made from their ledger row (a bounce then names its recipient).

    The Message-ID is the same for every attempt at one recipient of one version of the issue,
    so a copy sent again on purpose (`--resend-unknown`) can be recognised as a duplicate.
    With a DKIM `signer`, the unstuffed message is signed (in worker processes) and then put
    in the connection's form."""

    async def compose(row: Row, conn: Connection) -> tuple[Envelope, bytes]:
        subscriber = subscriber_of(row)
        tag = hashlib.sha256(f"{digest}\0{row.email}".encode()).hexdigest()[:32]
        message_id = f"<{tag}@{builder.domain}>"
        mail_from = sender if return_path is None else return_path(row.id, row.email)
        envelope = Envelope(mail_from, row.email, smtputf8=subscriber.smtputf8)
        if signer is None:  # built in the wire's form at once: nothing to sign (~1 us a message)
            data = builder.build(
                subscriber, eight_bit=conn.eight_bit, dot_stuffed=conn.dot_stuffed,
                message_id=message_id,
            )  # fmt: skip
            return envelope, data

        def build(eight_bit: bool, dot_stuffed: bool) -> bytes:
            return builder.build(
                subscriber, eight_bit=eight_bit, dot_stuffed=dot_stuffed, message_id=message_id
            )

        data = await wire_message(
            build, eight_bit=conn.eight_bit, dot_stuffed=conn.dot_stuffed, signer=signer
        )
        return envelope, data

    return compose


async def send_test(
    transport: Transport,
    build: Callable[[bool, bool], bytes],
    sender: str,
    to: str,
    *,
    signer: Signer | None = None,
) -> Accepted:
    """Send one test message over a fresh connection; `build(eight_bit, dot_stuffed)` makes it,
    `signer` (dkim.InlineSigner: one message is not worth worker processes) signs it."""
    connection = await transport.connect()
    try:
        data = await wire_message(
            build,
            eight_bit=connection.eight_bit,
            dot_stuffed=connection.dot_stuffed,
            signer=signer,
        )
        smtputf8 = not to.isascii()
        return await connection.send(Envelope(sender, to, smtputf8=smtputf8), data)
    finally:
        await connection.close()

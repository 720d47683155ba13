"""Sending limits: exact rate, hourly and daily windows over an injectable clock.

The Dispatcher waits on a `RateLimiter` before each attempt. Time comes from a `Clock`, so the
limits (and the dispatcher's retries) are tested with a fake one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float: ...  # monotonic seconds: limits and retries

    def wall(self) -> float: ...  # unix time: what the ledger records

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class WindowLimit:
    """At most `count` grants in any half-open window of `seconds`: exact, no overshoot."""

    def __init__(self, count: int, seconds: float, history: Iterable[float] = ()) -> None:
        self.count = count
        self.seconds = seconds
        self._times: deque[float] = deque(history, maxlen=count)

    def wait(self, now: float) -> float:
        """Seconds until a grant is allowed (<= 0: now)."""
        if len(self._times) < self.count:
            return 0.0
        return self._times[0] + self.seconds - now

    def grant(self, now: float) -> None:
        self._times.append(now)


# Not a NewsletterError: the send loop catches it to pause; it never reaches the user.
class LimitTooFar(Exception):
    """A signal inside the loop (a limit is too far away), never shown to the user."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


class RateLimiter:
    """All limits at once; grants are serialised, so their times are ordered."""

    def __init__(self, clock: Clock, limits: list[WindowLimit], max_wait: float) -> None:
        self.clock = clock
        self.limits = limits
        self.max_wait = max_wait
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for a grant and return its time; LimitTooFar when the wait is over max_wait."""
        if not self.limits:  # no limit set: nothing to wait for or record
            return self.clock.now()
        async with self._lock:
            while (wait := self._wait(self.clock.now())) > 0:
                if wait > self.max_wait:
                    raise LimitTooFar(wait)
                await self.clock.sleep(wait)
            now = self.clock.now()
            for limit in self.limits:
                limit.grant(now)
            return now

    def _wait(self, now: float) -> float:
        return max((limit.wait(now) for limit in self.limits), default=0.0)


class SharedLimiter:
    """The limits of every sender of one send together (a shared store): send times are
    granted in small batches, under a lock all senders take turns on (`reserve`, store.Lease),
    from the times granted to all of them; each sender then waits for its own times.

    A time granted and not used (the sender stopped) still counts against the hourly and
    daily limits: the limits are never exceeded, at worst a batch is left unused."""

    def __init__(
        self,
        clock: Clock,
        limits: Limits,
        reserve: Callable[
            [float, Callable[[float, list[float]], list[float]]], tuple[float, list[float]]
        ],
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.reserve = reserve
        self.batch = _batch(limits)
        self.span = 86400.0 if limits.daily else 3600.0 if limits.hourly else 1.0
        self._due: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for this sender's next granted time; LimitTooFar when it is over max_wait."""
        async with self._lock:
            while not self._due and not self._refill():
                await self.clock.sleep(0.1)  # another sender holds the lock: look again soon
            wait = self._due[0] - self.clock.now()
            if wait > self.limits.max_wait:
                raise LimitTooFar(wait)
            self._due.popleft()
            if wait > 0:
                await self.clock.sleep(wait)
            return self.clock.now()

    def _refill(self) -> bool:
        """Reserve the next batch; False when the store's lock was busy (nothing reserved),
        LimitTooFar when the limits allow nothing soon enough."""
        far: list[float] = []

        def plan(now: float, granted: list[float]) -> list[float]:
            times, wait = grants(self.limits, now, granted, self.batch)
            far.append(wait)
            return times

        now, times = self.reserve(self.span, plan)
        if not far:
            return False
        local = self.clock.now()  # the store's clock to ours: only differences are used
        self._due.extend(local + (t - now) for t in times)
        if not self._due:
            raise LimitTooFar(far[0])
        return True


def grants(
    limits: Limits, now: float, granted: list[float], count: int
) -> tuple[list[float], float]:
    """Up to `count` send times from `now` on, after `granted` (every sender's, oldest first),
    none more than max_wait away; and how far the first one would have been."""
    windows = dataclasses.replace(limits, rate=None).windows(granted)
    if limits.rate:
        recent = [t for t in granted if t > now - 1.0]
        windows += [WindowLimit(w.count, w.seconds, recent) for w in rate_windows(limits.rate)]
    times: list[float] = []
    at = now
    for _ in range(count):
        while windows and (wait := max(w.wait(at) for w in windows)) > 0:
            at += wait
        if at - now > limits.max_wait:
            return times, at - now
        for window in windows:
            window.grant(at)
        times.append(at)
    return times, 0.0


def _batch(limits: Limits) -> int:
    """Times reserved at once: about a fifth of a second's worth at the rate (the store is
    asked at most ~5 times a second per sender), at least one, at most 50."""
    if limits.rate:
        return max(1, min(50, math.ceil(limits.rate / 5)))
    return max(1, min(50, limits.connections))


def rate_windows(rate: float) -> list[WindowLimit]:
    """`rate` per second: evenly spaced (1 per 1/rate s) and, from 1/s up, at most floor(rate)
    in any one-second window, so float rounding in the spacing can never let one more in."""
    windows = [WindowLimit(1, 1.0 / rate)]
    if rate >= 1:
        windows.append(WindowLimit(int(rate), 1.0))
    return windows


@dataclass(frozen=True)
class Limits:
    connections: int = 4
    rate: float | None = None
    hourly: int | None = None
    daily: int | None = None
    retry_delays: tuple[float, ...] = (2.0, 10.0, 30.0)
    pause_after: int = 5
    jitter: float = 0.2  # each retry delay is multiplied by 1 ± jitter
    max_wait: float = 300.0  # a limit that would make us wait longer pauses the run instead

    @classmethod
    def from_settings(cls, smtp: Any) -> Limits:
        """From config.SmtpSettings."""
        return cls(
            connections=int(smtp.connections),
            rate=smtp.rate,
            hourly=smtp.hourly_limit,
            daily=smtp.daily_limit,
            retry_delays=tuple(smtp.retry_delays),
            pause_after=int(smtp.pause_after),
        )

    def windows(self, history: list[float]) -> list[WindowLimit]:
        """The window limits, the hourly/daily ones seeded with earlier attempts' times."""
        limits = rate_windows(self.rate) if self.rate else []
        for count, seconds in ((self.hourly, 3600.0), (self.daily, 86400.0)):
            if count:
                cut = history[-1] - seconds if history else 0.0
                limits.append(WindowLimit(count, seconds, (t for t in history if t > cut)))
        return limits


def estimate_seconds(count: int, limits: Limits) -> float | None:
    """From the rate limit; None when there is none (then the server sets the pace)."""
    return count / limits.rate if limits.rate else None

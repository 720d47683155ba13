"""The send loop with a fake clock and a scripted fake server: limits, retries, outcomes, stop."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from newsletter.addresses import key_hash
from newsletter.dispatch import Dispatcher, Notice
from newsletter.ledger import Ledger
from newsletter.limits import Limits, RateLimiter, WindowLimit
from newsletter.store import is_bounce
from tests.fakes_dispatch import FakeClock, FakeServer, compose, new_ledger


def run(
    ledger: Ledger, server: FakeServer, limits: Limits | None = None, **kwargs: object
) -> Dispatcher:
    dispatcher = Dispatcher(
        ledger,
        server,
        compose,
        limits or Limits(connections=4),
        clock=server.clock,
        rng=random.Random(1),
        **kwargs,  # type: ignore[arg-type]  # test helper passes keyword options through
    )
    asyncio.run(server.clock.run(dispatcher.run()))
    return dispatcher


def max_in_window(times: list[float], seconds: float) -> int:
    """The most grants in any half-open window [t, t + seconds) starting at a grant."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + seconds) for t in times)


def test_everyone_sent_once_over_reused_connections(tmp_path: Path) -> None:
    """Every pending recipient is sent exactly once, over K connections opened once each."""
    server = FakeServer(FakeClock())
    ledger = new_ledger(tmp_path, 50)
    run(ledger, server, Limits(connections=4))
    assert Counter(server.delivered) == Counter(f"p{i}@example.org" for i in range(50))
    assert server.connects == 4
    assert ledger.counts()["sent"] == 50


def test_attempt_is_on_disk_before_its_data(tmp_path: Path) -> None:
    """Each row reads `sending` from another connection when its data goes out; at most K do."""
    server = FakeServer(FakeClock(), ledger_path=tmp_path / "send.sqlite")
    run(new_ledger(tmp_path, 40), server, Limits(connections=3))
    assert len(server.delivered) == 40
    assert 1 <= server.max_sending_on_disk <= 3


@pytest.mark.parametrize(("rate", "connections"), [(10.0, 4), (2.5, 2), (0.5, 3)])
def test_rate_holds_over_any_window(tmp_path: Path, rate: float, connections: int) -> None:
    """Sends are spaced by 1/rate and no one-second window (1/rate below 1/s) holds more."""
    server = FakeServer(FakeClock(), latency=0.001)
    run(new_ledger(tmp_path, 30), server, Limits(connections=connections, rate=rate))
    window, cap = (1.0, int(rate)) if rate >= 1 else (1.0 / rate, 1)
    assert max_in_window(server.starts, window) <= cap
    gaps = [b - a for a, b in zip(server.starts, server.starts[1:], strict=False)]
    assert min(gaps) >= 1.0 / rate - 1e-9


def test_hourly_limit_holds_and_counts_earlier_runs(tmp_path: Path) -> None:
    """An hourly cap holds over any hour, counting attempts recorded by an earlier run."""
    clock = FakeClock()
    ledger = new_ledger(tmp_path, 25)
    limits = Limits(connections=2, hourly=10, max_wait=7200)
    run(ledger, FakeServer(clock), Limits(connections=2, hourly=10), limit=6)
    server = FakeServer(clock)
    run(ledger, server, limits)
    assert len(server.delivered) == 19
    earlier = [t - 1_700_000_000.0 for t in ledger.attempt_times(0)]
    assert max_in_window(earlier, 3600.0) <= 10


def test_window_limit_never_overshoots() -> None:
    """Random grant attempts: a WindowLimit never lets count+1 into any window."""
    rng = random.Random(7)
    limit = WindowLimit(5, 1.0)
    now, granted = 0.0, []
    for _ in range(500):
        now += rng.choice([0.0, 0.01, 0.1, 0.3])
        if limit.wait(now) <= 0:
            limit.grant(now)
            granted.append(now)
    assert max_in_window(granted, 1.0) <= 5
    assert len(granted) > 50


def test_limit_too_far_pauses_instead_of_waiting(tmp_path: Path) -> None:
    """A daily cap that would make the run wait hours pauses it, resumable."""
    server = FakeServer(FakeClock())
    ledger = new_ledger(tmp_path, 10)
    result = run(ledger, server, Limits(connections=2, daily=4)).result
    assert len(server.delivered) == 4
    assert result.stopped.startswith("paused: a sending limit")
    assert ledger.counts()["pending"] == 6


def test_temporary_failure_retried_after_delay(tmp_path: Path) -> None:
    """451 then ok: sent on the retry, about retry_delays[0] later (with jitter)."""
    server = FakeServer(FakeClock(), script={"p3@example.org": ["451"]})
    ledger = new_ledger(tmp_path, 5)
    run(ledger, server, Limits(connections=1, retry_delays=(2.0, 10.0), jitter=0.2))
    assert server.delivered.count("p3@example.org") == 1
    assert ledger.counts()["sent"] == 5
    gap = server.starts[-1] - server.starts[3]
    assert 1.6 <= gap <= 2.4 + 0.05


def test_still_deferred_after_all_retries(tmp_path: Path) -> None:
    """A recipient answering 451 every time is tried 1 + len(retry_delays) times, then deferred."""
    server = FakeServer(FakeClock(), script={"p1@example.org": ["451"] * 10})
    ledger = new_ledger(tmp_path, 3)
    result = run(ledger, server, Limits(connections=2, retry_delays=(1.0, 2.0, 3.0))).result
    assert len(server.starts) == 2 + 4
    assert list(ledger.emails(3)) == ["p1@example.org"]
    assert result.deferred == 1


def test_rerun_retries_deferred_at_once(tmp_path: Path) -> None:
    """A rerun sends what the previous run left deferred, without waiting."""
    server = FakeServer(FakeClock(), script={"p1@example.org": ["451", "451"]})
    ledger = new_ledger(tmp_path, 3)
    run(ledger, server, Limits(connections=1, retry_delays=(5.0,)))
    before = server.clock.now()
    run(ledger, server, Limits(connections=1, retry_delays=(5.0,)))
    assert server.delivered.count("p1@example.org") == 1
    assert server.clock.now() - before < 1.0


def test_permanent_refusal_is_final(tmp_path: Path) -> None:
    """554 is failed after one attempt, with its code and reply, and not reported as a bounce."""
    server = FakeServer(FakeClock(), script={"p0@example.org": ["554"]})
    ledger = new_ledger(tmp_path, 2)
    result = run(ledger, server).result
    assert [(f.email, f.code, f.reply) for f in ledger.failures()] == [
        ("p0@example.org", 554, "5.7.1 rejected as spam")
    ]
    assert len(server.starts) == 2
    assert result.bounced == []


def test_no_such_user_is_bounced(tmp_path: Path) -> None:
    """A 5.1.1 refusal calls on_bounce with the address."""
    bounced: list[str] = []

    async def on_bounce(email: str) -> None:
        bounced.append(email)

    server = FakeServer(FakeClock(), script={"p1@example.org": ["550"]})
    run(new_ledger(tmp_path, 3), server, on_bounce=on_bounce)
    assert bounced == ["p1@example.org"]


@pytest.mark.parametrize(
    ("reply", "bounce"),
    [("5.1.1 no such user", True), ("5.1.10 null MX", True), ("5.1.2 bad domain", True),
     ("5.1.8 bad sender domain", False), ("5.7.1 spam", False), ("550 unknown", False)],
)  # fmt: skip
def test_bounce_classification(reply: str, bounce: bool) -> None:
    """Only 5.1.x about the recipient counts as a bounce (not 5.1.7/5.1.8, about the sender)."""
    assert is_bounce(reply) is bounce


def test_drop_after_data_is_unknown_never_resent(tmp_path: Path) -> None:
    """A drop after the data: unknown, the server has it once, and it is not sent again."""
    server = FakeServer(FakeClock(), script={"p2@example.org": ["lost"]})
    ledger = new_ledger(tmp_path, 5)
    run(ledger, server, Limits(connections=2))
    run(ledger, server, Limits(connections=2))
    assert server.delivered.count("p2@example.org") == 1
    assert list(ledger.emails(5)) == ["p2@example.org"]
    assert ledger.counts()["sent"] == 4


def test_drop_before_data_is_retried_on_new_connection(tmp_path: Path) -> None:
    """A drop before the data: deferred, then sent over a reopened connection."""
    server = FakeServer(FakeClock(), script={"p2@example.org": ["drop"]})
    ledger = new_ledger(tmp_path, 5)
    run(ledger, server, Limits(connections=1))
    assert server.delivered.count("p2@example.org") == 1
    assert ledger.counts()["sent"] == 5
    assert server.connects == 2


def test_pause_after_consecutive_connection_failures(tmp_path: Path) -> None:
    """A server that refuses every connection pauses the run after pause_after tries."""
    notices: list[str] = []
    server = FakeServer(FakeClock(), always_refuse_connect=True)
    ledger = new_ledger(tmp_path, 5)
    result = run(
        ledger,
        server,
        Limits(connections=2, pause_after=3),
        on_event=lambda e: notices.append(e.text) if isinstance(e, Notice) else None,
    ).result
    assert result.stopped.startswith("paused after 3 connection failures")
    assert server.connects == 3
    assert ledger.counts()["pending"] == 5
    assert any("trying again" in n for n in notices)


def test_connection_failures_below_threshold_recover(tmp_path: Path) -> None:
    """Two refused connects, then the server is back: everyone is sent."""
    server = FakeServer(FakeClock(), connect_failures=2)
    ledger = new_ledger(tmp_path, 6)
    result = run(ledger, server, Limits(connections=1, pause_after=3)).result
    assert result.stopped == ""
    assert sorted(server.delivered) == sorted(f"p{i}@example.org" for i in range(6))


def test_stop_finishes_in_flight_and_leaves_rest_pending(tmp_path: Path) -> None:
    """Setting stop mid-run: nothing left `sending`, what was sent is sent, the rest pending."""
    server = FakeServer(FakeClock(), latency=0.5)
    ledger = new_ledger(tmp_path, 40)
    stop = asyncio.Event()

    def on_event(event: object) -> None:
        if len(server.delivered) >= 10:
            stop.set()

    run(ledger, server, Limits(connections=4), stop=stop, on_event=on_event)
    counts = ledger.counts(live=True)
    assert counts["sent"] == len(server.delivered)
    assert 10 <= counts["sent"] < 40
    assert counts["pending"] == 40 - counts["sent"]
    assert counts["unknown"] == 0


def test_limit_sends_first_n_then_resume_sends_rest(tmp_path: Path) -> None:
    """--limit 7 sends the first 7 in plan order; a rerun sends the other 13, nobody twice."""
    server = FakeServer(FakeClock())
    ledger = new_ledger(tmp_path, 20)
    run(ledger, server, Limits(connections=3), limit=7)
    assert sorted(server.delivered) == sorted(f"p{i}@example.org" for i in range(7))
    run(ledger, server, Limits(connections=3))
    assert Counter(server.delivered) == Counter(f"p{i}@example.org" for i in range(20))


def test_interrupted_in_flight_become_unknown(tmp_path: Path) -> None:
    """A row left `sending` by a killed run is unknown on resume and not sent again."""
    ledger = new_ledger(tmp_path, 4)
    ledger.start(2)
    ledger.commit()
    server = FakeServer(FakeClock())
    run(ledger, server)
    assert "p1@example.org" not in server.delivered
    assert list(ledger.emails(5)) == ["p1@example.org"]


def test_unsubscribed_mid_send_left_out(tmp_path: Path) -> None:
    """Who shows up in the blocked set between batches is not sent to, and counted left out."""
    server = FakeServer(FakeClock())
    ledger = new_ledger(tmp_path, 600)
    calls = []

    def blocked() -> set[tuple[int, str]]:
        calls.append(1)
        gone = {(key_hash("p500@example.org"), ""), (key_hash("p0@example.org"), "")}
        return gone if len(calls) > 1 else set()

    result = run(ledger, server, Limits(connections=2), blocked=blocked).result
    assert "p500@example.org" not in server.delivered
    assert "p0@example.org" in server.delivered  # sent before the change was visible
    assert result.left_out == 1
    assert len(server.delivered) == 599


def test_rate_limiter_serialises_grants() -> None:
    """Concurrent acquirers get ordered grant times spaced by the window."""
    clock = FakeClock()
    limiter = RateLimiter(clock, [WindowLimit(1, 0.5)], max_wait=60)

    async def many() -> list[float]:
        return list(await asyncio.gather(*(limiter.acquire() for _ in range(6))))

    times = asyncio.run(clock.run(many()))
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]

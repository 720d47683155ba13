"""Waiting in tests without racing a clock: for the event itself, or until progress stops.

A loaded machine makes everything slower but never stops progress; a hang does. So a wait ends
when its event happens, when what should cause it has died, or after STALL seconds in which
nothing moved, and a failure says what never happened. No wait is a budget for a whole job.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

STALL = 60.0  # seconds in which nothing moved: a hang, however busy the machine
HANG = 600.0  # for one step with no progress to watch (a process start): only a hang reaches it


def wait_until(
    done: Callable[[], bool],
    what: str,
    *,
    alive: Callable[[], bool] | None = None,
    progress: Callable[[], object] | None = None,
    stall: float = STALL,
    poll: float = 0.01,
) -> None:
    """Return once `done()`. Fail naming `what` when `alive()` turns false first, or when
    `progress()` (without it: anything) has not changed for `stall` seconds."""
    last, since = progress() if progress else None, time.monotonic()
    while not done():
        if alive is not None and not alive():
            if done():
                return
            pytest.fail(f"{what}: never happened, and what should do it has stopped")
        if progress is not None and (now := progress()) != last:
            last, since = now, time.monotonic()
        if time.monotonic() - since > stall:
            pytest.fail(f"{what}: never happened; nothing moved for {stall:g} s")
        time.sleep(poll)

"""The router's only view of time: `now()` and `call_at(t, callback)`.

`LoopClock` is the asyncio event loop's monotonic clock (production). `ManualClock` is a
virtual clock that tests advance by hand, so router tests never sleep and are deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """Monotonic seconds (`time.monotonic`, CLOCK_MONOTONIC) with timers on the running loop.

    Not `loop.time()`: the stdlib loop's is the same clock, but uvloop's is libuv's cached
    millisecond clock, refreshed once per loop iteration, so a stamp taken late in a busy
    iteration would be several ms stale. Both loops' timers run on CLOCK_MONOTONIC, so
    `call_at` with these times fires when it should (uvloop: to the millisecond)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_at(when_s, callback)


class _ManualHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Virtual time: timers fire only inside `advance`/`run_until`, in time order."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s
        self._timers: list[tuple[float, int, _ManualHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        h = _ManualHandle()
        heapq.heappush(self._timers, (when_s, next(self._seq), h, callback))
        return h

    def run_until(self, t_s: float) -> None:
        """Fire every timer due at or before `t_s` (including ones they schedule), then set
        the time to `t_s`."""
        while self._timers and self._timers[0][0] <= t_s:
            when, _, h, cb = heapq.heappop(self._timers)
            if h.cancelled:
                continue
            self._now = max(self._now, when)
            cb()
        self._now = max(self._now, t_s)

    def advance(self, dt_s: float) -> None:
        self.run_until(self._now + dt_s)

    def pending(self) -> int:
        return sum(1 for _, _, h, _ in self._timers if not h.cancelled)

"""How steady this CPU is: the host-noise probe (`superserve profile --speed`, the demo's
header, each cell of benchmarks/calibration_live.py).

A latency figure measured on a shared VM says as much about the neighbours as about the
server. The speed factor (retime.speed_factor) is a median and hides the rest: a hypervisor
that takes the core away for 20-60 ms now and then, or a speed that moves by half within
seconds, costs a deadline-driven scheduler far more than a steady x2 (a batch planned to end
near its deadline is lost to any stall that lands in it). This probe runs one fixed unit of
pure-Python work back to back for a few seconds on the calling thread's CPU and reports

- `unit_ms_p50`, `p99_over_p50`: how long a unit takes, and its tail;
- `stalls_per_s`, `longest_stall_ms`: units that took `stall_ms` (10 ms) or more beyond the
  median, i.e. the CPU was gone (what a quiet, dedicated core shows: none);
- `swing`: the slowest 0.5 s window's median over the fastest one's (1.0: steady).

Pure apart from the clock: `summarize` takes the timings, so it is tested without a host.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

__all__ = ["HostNoise", "measure_host_noise", "on_cpu", "summarize"]

STALL_MS = 10.0  # a unit this much longer than the median lost its CPU for a while
WINDOW_S = 0.5  # the swing's window


@dataclass(frozen=True)
class HostNoise:
    seconds: float
    units: int
    unit_ms_p50: float
    p99_over_p50: float
    stalls_per_s: float  # units >= stall_ms beyond the median, per second
    longest_stall_ms: float  # the longest unit's excess over the median
    swing: float  # slowest window median / fastest window median
    stall_ms: float = STALL_MS

    def to_dict(self) -> dict[str, float | int | bool]:
        """The figures (floats to 3 decimals) and the `steady` verdict, as reported."""
        d: dict[str, float | int | bool] = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        d["steady"] = self.steady()
        return d

    def steady(self) -> bool:
        """What a dedicated core shows: no stall in a few seconds and a speed that holds
        within 20%. Figures measured otherwise are the host's as much as the server's."""
        return self.stalls_per_s == 0 and self.swing <= 1.2


def _quantile(sorted_ms: Sequence[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q * len(sorted_ms)) - 1))]


def summarize(starts_s: Sequence[float], units_ms: Sequence[float],
              stall_ms: float = STALL_MS, window_s: float = WINDOW_S) -> HostNoise:
    """The probe's figures from each unit's start (s, any origin) and duration (ms)."""
    if not units_ms or len(starts_s) != len(units_ms):
        raise ValueError("need one start per unit, and at least one unit")
    s = sorted(units_ms)
    p50 = _quantile(s, 0.5)
    span = max(starts_s[-1] + units_ms[-1] / 1e3 - starts_s[0], 1e-9)
    excess = [u - p50 for u in units_ms]
    stalls = sum(1 for e in excess if e >= stall_ms)
    windows: dict[int, list[float]] = {}
    for t, u in zip(starts_s, units_ms):
        windows.setdefault(int((t - starts_s[0]) / window_s), []).append(u)
    # a window of fewer than 5 units (a stall took most of it) says nothing of the speed
    meds = [_quantile(sorted(w), 0.5) for w in windows.values() if len(w) >= 5]
    swing = max(meds) / min(meds) if meds and min(meds) > 0 else 1.0
    return HostNoise(seconds=span, units=len(units_ms), unit_ms_p50=p50,
                     p99_over_p50=_quantile(s, 0.99) / p50 if p50 > 0 else math.inf,
                     stalls_per_s=stalls / span, longest_stall_ms=max(0.0, max(excess)),
                     swing=swing, stall_ms=stall_ms)


def _unit(n: int = 20_000) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


@contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """The calling thread on `cpu` only (None: where it runs), its CPUs given back after."""
    saved = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if cpu is not None and saved is not None:
            os.sched_setaffinity(0, {cpu})
        yield
    finally:
        if cpu is not None and saved is not None:
            os.sched_setaffinity(0, saved)


def measure_host_noise(seconds: float = 3.0, cpu: int | None = None,
                       unit: Callable[[], object] = _unit,
                       clock: Callable[[], float] = time.perf_counter) -> HostNoise:
    """Run `unit` back to back for `seconds` on this thread (on `cpu` when given, its CPUs
    given back after) and summarize the timings."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    with on_cpu(cpu):
        return _measure(seconds, unit, clock)


def _measure(seconds: float, unit: Callable[[], object], clock: Callable[[], float]
             ) -> HostNoise:
    unit()  # first call: imports, caches
    starts: list[float] = []
    units: list[float] = []
    end = clock() + seconds
    while True:
        t = clock()
        if t >= end:
            break
        unit()
        starts.append(t)
        units.append((clock() - t) * 1e3)
    return summarize(starts, units)

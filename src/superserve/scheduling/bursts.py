"""How much work arrives at once: the peak number of images that arrived within one window
(one SLO) recently, and within shorter windows, for SlackFit's adaptive blocking guard.

A batch that runs d seconds blocks its worker; a burst of n images that lands just after it
starts still needs clear(n) seconds on the fastest choice once the worker is free. If the n
arrived within w seconds, the last of them is due w + SLO after the batch started, so
d + clear(n) <= w + SLO keeps it (SlackFit.guard_s). The mean arrival rate cannot say how
large n gets: at the same 1,000 req/s mean, a Poisson stream puts ~70 images in a 50 ms window
at worst, the Azure code trace (rescaled) over 300. So the router counts, per window.

`BurstTracker.observe(t, n)` after each arrival keeps the count of images in each trailing
window and, per window, a peak that decays with half-life `half_life_s` from the largest
count seen: a burst is remembered for a while, so the guard stays up between bursts, and lets
go once the traffic has been smooth for a few half-lives. `burst_levels` is the same for a
whole sorted arrival array and one window at once (the simulator).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BURST_FRACTIONS", "DEFAULT_BURST_HALF_LIFE_S", "BurstTracker", "burst_levels"]

DEFAULT_BURST_HALF_LIFE_S = 10.0
# the windows SlackFit's guard looks at, as fractions of one SLO: 1/8 of 50 ms is ~6 ms, about
# one batch of the fastest subnet, the finest shape that changes what the guard allows
BURST_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


class BurstTracker:
    """Peak images per window, decayed with `half_life_s`, for each window `f x window_s` with f
    in `fractions` (ascending, the last 1: the whole window). O(windows) amortized per arrival.

    Several windows say how a burst is shaped: 200 images within 50 ms may be one clump (then
    ~200 within 6 ms too) or a steady stream (~25 within 6 ms). SlackFit's guard needs both."""

    __slots__ = ("_before", "_off", "_peaks", "_start", "_t", "_tau", "_total", "_ts", "_widths",
                 "fractions", "window_s")

    def __init__(self, window_s: float, half_life_s: float = DEFAULT_BURST_HALF_LIFE_S,
                 fractions: tuple[float, ...] = (1.0,)) -> None:
        if not window_s > 0 or not half_life_s > 0:
            raise ValueError(f"window_s and half_life_s must be > 0, got {window_s}, "
                             f"{half_life_s}")
        if (not fractions or fractions[-1] != 1.0 or any(not 0 < f for f in fractions)
                or list(fractions) != sorted(set(fractions))):
            raise ValueError(f"fractions must ascend within (0, 1] and end at 1, got {fractions}")
        self.window_s, self.fractions = window_s, tuple(fractions)
        self._widths = [f * window_s for f in fractions]
        self._tau = half_life_s / math.log(2)
        self._ts: list[float] = []  # arrival times since the last compaction
        self._before: list[int] = []  # images that arrived before each of them (cumulative)
        self._off = 0  # arrivals dropped by compaction
        self._start = [0] * len(fractions)  # per window: its first arrival (absolute index)
        self._peaks = [0.0] * len(fractions)
        self._total = 0  # images observed
        self._t = 0.0

    def observe(self, t_s: float, n: int = 1) -> None:
        ts, before, start, off = self._ts, self._before, self._start, self._off
        total = self._total
        ts.append(t_s)
        before.append(total)
        total = self._total = total + n
        dt = t_s - self._t
        decay = math.exp(-dt / self._tau) if dt > 0 else 1.0
        peaks = self._peaks
        for k, width in enumerate(self._widths):
            i, lo = start[k] - off, t_s - width
            while ts[i] <= lo:
                i += 1
            start[k] = i + off
            count = total - before[i]
            p = peaks[k] * decay
            peaks[k] = count if count > p else p  # noqa: FURB136  (per arrival: no call)
        self._t = max(self._t, t_s)
        drop = start[-1] - off  # the whole window starts earliest: nothing before it counts
        if drop > 4096:
            del ts[:drop], before[:drop]
            self._off += drop

    def peaks(self, now_s: float) -> tuple[float, ...]:
        """The decayed peaks (images per window, one per fraction) at `now_s`."""
        dt = now_s - self._t
        if dt <= 0:
            return tuple(self._peaks)
        decay = math.exp(-dt / self._tau)
        return tuple(p * decay for p in self._peaks)

    def peak(self, now_s: float) -> float:
        """The decayed peak of the whole window (images) at `now_s`."""
        dt = now_s - self._t
        return self._peaks[-1] * math.exp(-dt / self._tau) if dt > 0 else self._peaks[-1]


def burst_levels(arrivals_s: np.ndarray, window_s: float,
                 half_life_s: float = DEFAULT_BURST_HALF_LIFE_S,
                 images: np.ndarray | None = None) -> np.ndarray:
    """BurstTracker's peak just after each arrival of a sorted arrival array, vectorised:
    the window counts by searchsorted; the decayed running max as a cumulative max in log
    space (peak_i = max(c_i, peak_{i-1} e^{-dt/tau}) <=> u_i = max(log c_i + t_i/tau, u_{i-1}),
    peak_i = e^{u_i - t_i/tau})."""
    t = np.asarray(arrivals_s, dtype=np.float64)
    if t.size == 0:
        return np.zeros(0)
    w = np.ones(t.size) if images is None else np.asarray(images, dtype=np.float64)
    csum = np.concatenate(([0.0], np.cumsum(w)))
    first = np.searchsorted(t, t - window_s, side="right")  # arrivals with t_k > t_i - window
    counts = csum[1:] - csum[first]
    tau = half_life_s / math.log(2)
    u = np.maximum.accumulate(np.log(counts) + (t - t[0]) / tau)
    return np.exp(u - (t - t[0]) / tau)

"""How much work arrives at once: the peak number of images that arrived within any one
window (one SLO) recently, for SlackFit's adaptive blocking guard.

A batch that runs d seconds blocks its worker; a burst of n images that lands just after it
starts still needs clear(n) seconds on the fastest choice once the worker is free, so only
d + clear(n) <= SLO keeps it. The mean arrival rate cannot say how large n gets: at the same
1,000 req/s mean, a Poisson stream puts ~70 images in a 50 ms window at worst, the Azure code
trace (rescaled) over 300. So the router counts.

`BurstTracker.observe(t, n)` after each arrival keeps the count of images in the trailing
window (a deque of recent arrivals) and a peak that decays with half-life `half_life_s` from
the largest count seen: a burst is remembered for a while, so the guard stays up between
bursts, and lets go once the traffic has been smooth for a few half-lives.
`burst_levels` is the same for a whole sorted arrival array at once (the simulator).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

__all__ = ["DEFAULT_BURST_HALF_LIFE_S", "BurstTracker", "burst_levels"]

DEFAULT_BURST_HALF_LIFE_S = 10.0


class BurstTracker:
    """Peak images per `window_s`, decayed with `half_life_s`. O(1) amortized per arrival."""

    __slots__ = ("_arrivals", "_count", "_peak", "_t", "_tau", "window_s")

    def __init__(self, window_s: float, half_life_s: float = DEFAULT_BURST_HALF_LIFE_S) -> None:
        if not window_s > 0 or not half_life_s > 0:
            raise ValueError(f"window_s and half_life_s must be > 0, got {window_s}, "
                             f"{half_life_s}")
        self.window_s = window_s
        self._tau = half_life_s / math.log(2)
        self._arrivals: deque[tuple[float, int]] = deque()
        self._count = 0
        self._peak = 0.0
        self._t = 0.0

    def observe(self, t_s: float, n: int = 1) -> None:
        q = self._arrivals
        q.append((t_s, n))
        self._count += n
        start = t_s - self.window_s
        while q and q[0][0] <= start:
            self._count -= q.popleft()[1]
        self._peak = max(float(self._count), self.peak(t_s))
        self._t = max(self._t, t_s)

    def peak(self, now_s: float) -> float:
        """The decayed peak (images per window) at `now_s`."""
        dt = now_s - self._t
        return self._peak * math.exp(-dt / self._tau) if dt > 0 else self._peak


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

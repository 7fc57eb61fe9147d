"""Arrival-rate estimate shared by the simulator and the live router (pure: times are given)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RateEstimator", "ewma_levels"]


class RateEstimator:
    """Exponentially weighted arrival rate with time constant `tau_s`.

    Each arrival adds 1/tau to a decaying level; `rate(now)` decays it to `now`. For a steady
    Poisson stream of rate r the level converges to r.
    """

    __slots__ = ("_level", "_t", "tau_s")

    def __init__(self, tau_s: float = 1.0) -> None:
        if not tau_s > 0:
            raise ValueError(f"tau_s must be > 0, got {tau_s}")
        self.tau_s = tau_s
        self._level = 0.0
        self._t = 0.0

    def observe(self, t_s: float, n: int = 1) -> None:
        self._level = self.rate(t_s) + n / self.tau_s
        self._t = max(self._t, t_s)

    def rate(self, now_s: float) -> float:
        dt = now_s - self._t
        return self._level * math.exp(-dt / self.tau_s) if dt > 0 else self._level


def ewma_levels(arrivals_s: np.ndarray, tau_s: float = 1.0) -> np.ndarray:
    """RateEstimator's level just after each arrival of a sorted arrival array, all at once.

    Equal to calling `observe(t)` for every t in order and reading `rate(t)` after each, but
    vectorised for the simulator: within a chunk starting at T, level_i = exp(-(t_i - T)/tau) *
    (carry + cumsum(exp((t_k - T)/tau)) / tau). Chunks span at most 200 tau so exp stays finite.
    """
    import numpy as np

    t = np.asarray(arrivals_s, dtype=float)
    out = np.empty(len(t))
    if not len(t):
        return out
    span = 200.0 * tau_s
    cuts = np.searchsorted(t, t[0] + span * np.arange(1, int((t[-1] - t[0]) / span) + 2))
    level, t_prev, start = 0.0, float(t[0]), 0
    for stop in [int(c) for c in cuts]:
        if stop <= start:
            continue
        origin = float(t[start])
        carry = level * math.exp(-(origin - t_prev) / tau_s)
        x = t[start:stop] - origin
        out[start:stop] = np.exp(-x / tau_s) * (carry + np.cumsum(np.exp(x / tau_s)) / tau_s)
        level, t_prev, start = float(out[stop - 1]), float(t[stop - 1]), stop
    return out

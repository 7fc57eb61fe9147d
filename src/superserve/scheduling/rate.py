"""Arrival-rate estimate shared by the simulator and the live router (pure: times are given)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["WARMUP_FLOOR", "RateEstimator", "ewma_levels", "warmup_gain"]

# the shortest history (a fraction of tau) the start-up correction divides by: one arrival
# alone reads as about 1 / (0.01 tau) (~100 req/s at tau = 1 s), not as an infinite rate
WARMUP_FLOOR = 0.01


def warmup_gain(elapsed_s: float, tau_s: float) -> float:
    """The weight 1 - exp(-elapsed / tau) that an exponentially weighted level started from
    nothing `elapsed_s` ago has gathered: the level / this is the rate of the stream so far.
    Without it the level of a stream that starts at r reads r (1 - exp(-t / tau)): a router
    started cold under 2,000 req/s would read ~190 req/s 0.1 s in and ~790 after 0.5 s, and
    SlackFit's rate guard would let accurate subnets take long batches into the onset. The
    simulator's runs start so (its x1.3 world, table as is, 1,000 req/s: 0.9905 -> 0.9950).
    After a few tau it is 1: a step from a steady rate is the moving average's own lag."""
    x = max(elapsed_s, WARMUP_FLOOR * tau_s) / tau_s
    return -math.expm1(-x)


class RateEstimator:
    """Exponentially weighted arrival rate with time constant `tau_s`.

    Each arrival adds 1/tau to a decaying level; `level(now)` decays it to `now`. For a steady
    Poisson stream of rate r the level converges to r. `rate(now)` is the level corrected for
    the history it has not had yet (`warmup_gain`, from the first arrival on): the stream's
    rate so far during the first few tau, the level from then on.
    """

    __slots__ = ("_level", "_t", "_t0", "tau_s")

    def __init__(self, tau_s: float = 1.0) -> None:
        if not tau_s > 0:
            raise ValueError(f"tau_s must be > 0, got {tau_s}")
        self.tau_s = tau_s
        self._level = 0.0
        self._t = 0.0
        self._t0: float | None = None  # the first arrival

    def observe(self, t_s: float, n: int = 1) -> None:
        if self._t0 is None:
            self._t0 = t_s
        self._level = self.level(t_s) + n / self.tau_s
        self._t = max(self._t, t_s)

    def level(self, now_s: float) -> float:
        """The exponentially weighted level at `now_s` (`ewma_levels`)."""
        dt = now_s - self._t
        return self._level * math.exp(-dt / self.tau_s) if dt > 0 else self._level

    def rate(self, now_s: float) -> float:
        """Arrivals per second at `now_s` (0 before the first)."""
        if self._t0 is None:
            return 0.0
        return self.level(now_s) / warmup_gain(now_s - self._t0, self.tau_s)


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

"""Arrival-rate estimate shared by the simulator and the live router (pure: times are given)."""

from __future__ import annotations

import math

__all__ = ["RateEstimator"]


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

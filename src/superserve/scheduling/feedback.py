"""Miss feedback: the rate guard's headroom, raised while requests miss their SLO.

The rate guard (SlackFit.rate_ok) keeps out subnets whose modelled throughput is below
`rate_headroom` x the arrival rate. A model is only a model: a co-tenant time-slicing the
worker's core adds a few milliseconds of wake-up delay to every batch, at random, and shrinks
the batches SlackFit can fit in the slack it leaves, so subnets that the model credits with
enough throughput keep the worker saturated, and every burst ends in drops (measured live,
a CPU hog on the worker's core at 1,000 req/s: the guard at 1.2 passed subnets 7-9 that ran at
batch ~9, 100% busy; the fastest fixed subnet held the SLO). What the router does observe
without a model is the outcome: how many requests recently missed their deadline on the
client's clock, were dropped, or were refused for overload.

`MissFeedback` turns that into a multiplier on the headroom, moved multiplicatively both
ways: every `period_s`, while the recent miss fraction (exponentially weighted, time constant
`tau_s`) is above `high`, the boost grows by `up` (up to `max_boost`); while it is below
`low`, and no raise came within `hold_s`, it relaxes by `down` toward 1. A quiet machine
seldom misses, so the boost stays at 1 and the guard is as measured (docs/scheduling.md); a
co-tenant that starts makes it rise within a second or two, and it relaxes over 5-15 s once
the co-tenant has left.

A raise is decided on fresh evidence only: requests that arrived at least one SLO after the
last raise. By then every request that arrived before the raise has met its deadline or
passed it, so the queue ahead of a fresh request was planned with the raised boost, and its
fate says whether the raise was enough (TCP's rule: one reduction per window of loss).
Counting the stale ones raised the boost every period to its bound after a transient (a
stall of the machine, a burst the plan could not absorb): their misses keep the recent
fraction above `high` for seconds (with `tau_s` 1 s, one second at 25% misses stays above
1% for ~3 s). Live, JSON 2,000 req/s: one second at 0.75 attainment left the boost at
x2.4-x4 and SlackFit on the fastest subnet for the remaining 9 s of the run. A co-tenant
that stays makes the fresh requests miss too, so the boost still rises every period
(0.5 s, against a 50 ms SLO) while it is there.

Pure: times are passed in. The live router and the simulator use the same class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from superserve.errors import ConfigError

__all__ = ["FRONT_END_SHARE", "FeedbackConfig", "MissFeedback"]

# A request that reached the router with less than this share of its SLO left is no evidence
# for the feedback (`Router._plan_can_answer`; the simulator's `frontend_s`): the front end's
# core, not the worker, held it up, and a raised boost (a faster subnet) does nothing for that
# core. Live, JSON 2,000 req/s, router and load generator sharing one core at ~95-103% of it:
# a second whose requests reached the router 35-45 ms old raised the boost to x2.7-x4 and held
# SlackFit on the fastest subnet for the rest of the run (95.1% / 94.9% accuracy; runs without
# such a second: 96.8%)
FRONT_END_SHARE = 0.5


@dataclass(frozen=True)
class FeedbackConfig:
    tau_s: float = 1.0  # time constant of the miss fraction
    period_s: float = 0.5  # the boost moves at most once per period
    high: float = 0.005  # a fresh miss fraction above this raises the boost ...
    low: float = 0.002  # ... a miss fraction below this relaxes it (in between: it holds)
    # raise on fresh evidence only (`MissFeedback.is_fresh`); False: every miss counts, the
    # rule before 2026-11-29 (then with high = 0.01), kept for comparison
    # (benchmarks/transients_sim.py)
    fresh_only: bool = True
    up: float = 1.25  # factor per period while missing
    down: float = 1.1  # factor per period while not
    max_boost: float = 4.0
    # no relaxing until this long after the last raise (an autoscaler's stabilization
    # window): relaxing as soon as the misses stop re-admits the subnets that caused them.
    # Live, CPU hog at 1,000 req/s, interleaved with 0 s: 0.973 / 0.996 and 0.975 / 0.988
    # (run / last 10 s) against 0.969 / 0.985 and 0.926 / 0.994 (docs/scheduling.md)
    hold_s: float = 5.0
    min_requests: float = 20.0  # fewer (weighted) recent requests: no move (too little evidence)

    def __post_init__(self) -> None:
        if not (self.tau_s > 0 and self.period_s > 0):
            raise ConfigError(f"tau_s and period_s must be > 0, got {self.tau_s!r}, "
                              f"{self.period_s!r}")
        if not 0 <= self.low <= self.high < 1:
            raise ConfigError(f"need 0 <= low <= high < 1, got {self.low!r}, {self.high!r}")
        if not (self.up > 1 and self.down > 1 and self.max_boost >= 1):
            raise ConfigError(f"need up > 1, down > 1, max_boost >= 1, got {self.up!r}, "
                              f"{self.down!r}, {self.max_boost!r}")
        if not self.hold_s >= 0:
            raise ConfigError(f"hold_s must be >= 0, got {self.hold_s!r}")
        if not self.min_requests >= 0:
            raise ConfigError(f"min_requests must be >= 0, got {self.min_requests!r}")


class MissFeedback:
    """Recent miss fraction, and the headroom multiplier it sets."""

    __slots__ = ("_binds_s", "_fresh_misses", "_fresh_total", "_misses", "_next_s",
                 "_raised_s", "_t", "_total", "boost", "can_raise", "config")

    def __init__(self, config: FeedbackConfig | None = None) -> None:
        self.config = config or FeedbackConfig()
        self._misses = 0.0  # decayed counts
        self._total = 0.0
        self._fresh_misses = 0.0  # decayed counts of requests that arrived after the last raise
        self._fresh_total = 0.0
        self._t: float | None = None
        self._next_s = -math.inf  # when the boost may move next
        self._raised_s = -math.inf  # when it was last raised
        self.boost = 1.0
        # whether a raise would change any plan now (`set_can_raise`)
        self.can_raise = True
        self._binds_s = -math.inf  # when it last became so

    def _decay(self, now_s: float) -> None:
        if self._t is not None and now_s > self._t:
            k = math.exp(-(now_s - self._t) / self.config.tau_s)
            self._misses *= k
            self._total *= k
            self._fresh_misses *= k
            self._fresh_total *= k
        if self._t is None or now_s > self._t:
            self._t = now_s

    @property
    def raised_s(self) -> float:
        """When the boost was last raised (-inf: never)."""
        return self._raised_s

    def set_can_raise(self, now_s: float, can: bool) -> None:
        """The caller says whether a raise would change any plan now (SlackFit's rate guard,
        raised, keeps out some subnet: `SlackFit.rate_guard_binds`). While it would not, no
        raise is taken; once it would, only requests that arrive from then on are evidence.
        Live, the misses of a clump of warm-up requests at a low rate (where every subnet
        keeps up even at x4) raised the boost as soon as the load rose, and its 5 s hold
        narrowed the choice for the first seconds at 1,500 req/s."""
        if can and not self.can_raise:
            self._binds_s = now_s
            self._fresh_misses = self._fresh_total = 0.0
        self.can_raise = can

    def fresh_from(self, slo_s: float = 0.0) -> float:
        """The earliest arrival of a request with SLO `slo_s` that is evidence for the next
        raise: one SLO after the last raise, and not before a raise could change a plan
        (-inf without `fresh_only`: every one is)."""
        if not self.config.fresh_only:
            return -math.inf
        return max(self._raised_s + slo_s, self._binds_s)

    def is_fresh(self, arrived_s: float | None, slo_s: float = 0.0) -> bool:
        """Whether a request that arrived at `arrived_s` is evidence for the next raise
        (`fresh_from`; None: unknown, fresh)."""
        return arrived_s is None or arrived_s >= self.fresh_from(slo_s)

    def observe(self, now_s: float, missed: bool, arrived_s: float | None = None,
                slo_s: float = 0.0) -> None:
        """One request ended: `missed` when it did not get its answer within its deadline
        (late, dropped, or refused for overload); it arrived at `arrived_s` with SLO `slo_s`
        (`is_fresh`)."""
        fresh = self.is_fresh(arrived_s, slo_s)
        self.add(now_s, 1, 1 if missed else 0, int(fresh), 1 if missed and fresh else 0)

    def add(self, now_s: float, requests: int, misses: int, fresh_requests: int | None = None,
            fresh_misses: int | None = None) -> None:
        """`requests` ended at `now_s`, `misses` of them missed (the simulator's bulk form);
        `fresh_requests` of them (`fresh_misses` missed) are fresh (`is_fresh`; None: all)."""
        if requests <= 0:
            return
        self._decay(now_s)
        self._total += requests
        self._misses += misses
        self._fresh_total += requests if fresh_requests is None else fresh_requests
        self._fresh_misses += misses if fresh_misses is None else fresh_misses
        self.update(now_s)

    def reclassify(self, now_s: float, arrived_s: float | None = None,
                   slo_s: float = 0.0) -> None:
        """A request observed as on time turned out to miss (its response was written after
        its deadline): one more miss, no more requests."""
        self._decay(now_s)
        self._misses = min(self._misses + 1.0, self._total)
        if self.is_fresh(arrived_s, slo_s):
            self._fresh_misses = min(self._fresh_misses + 1.0, self._fresh_total)
        self.update(now_s)

    def miss_fraction(self, now_s: float) -> float:
        self._decay(now_s)
        return self._misses / self._total if self._total > 0 else 0.0

    def update(self, now_s: float) -> float:
        """Move the boost if a period has passed; returns it."""
        if now_s < self._next_s:
            return self.boost
        c = self.config
        self._next_s = now_s + c.period_s
        if self._total < c.min_requests:  # too little evidence (or silence): relax
            self.boost = max(1.0, self.boost / c.down)
            return self.boost
        fm, ft = ((self._fresh_misses, self._fresh_total) if c.fresh_only
                  else (self._misses, self._total))
        if ft >= c.min_requests and fm > c.high * ft and self.can_raise:
            self.boost = min(c.max_boost, self.boost * c.up)
            self._raised_s = now_s
            self._fresh_misses = self._fresh_total = 0.0  # what arrives from now on
        elif (self._misses < c.low * self._total
              and now_s - self._raised_s >= c.hold_s):
            self.boost = max(1.0, self.boost / c.down)
        return self.boost

"""Online latency calibration: what a batch really costs, learned from every batch that ends.

The ProfileTable is a prior, not the truth. The machine that serves is rarely the quiet one that
profiled: a busier or slower CPU stretches every forward (a proportional error), while the pipe
to the worker, the event loop that notices the result and a busy router add time that does not
grow with the batch (an additive error), and both have tails. SlackFit fills the slack to its
edge, so it misses whenever the table is optimistic and wastes accuracy when it is pessimistic.

Every finished batch reports two times: the worker's own compute time c and the whole dispatch
to result time y as the router saw it. `LatencyModel` keeps

    compute   c  ~  scale * p + fixed           (exponentially weighted, relative least squares)
    residual  r  =  y - (scale * p + fixed)     (recent values: a high quantile)
    plan(p)   =  scale * p + fixed + q99(r)

where p is the profiled latency and each residual is taken against the fit as it stood before
the batch (honest one-step-ahead errors). The compute fit carries what is proportional (a slow
or busy CPU stretches every forward); the residual carries everything else, additively: the
pipe, the loop noticing the result, a busy router, and compute noise. An additive tail is the
right shape for both: noise on a large batch is a few percent of it, while a multiplicative
tail learned from sub-millisecond batches (whose timing noise is mostly absolute) would
inflate the largest batches by half; and a slow loop adds the same delay to every batch
(fitting it as a scale would make large batches look absurdly expensive). The plan is one
affine map of the table: policies keep their offline structures and divide the slack by
`plan_scale` after taking `plan_overhead_s` off (base.table_slack_s). A caller without a
separate compute time passes y for both.

Old observations fade with a half-life in seconds, so a co-tenant that starts or stops eating
the CPU is followed both ways within a few seconds; the fit is ridge-regularised toward a prior
(the table, or the start-up probe's factor), so it is defined from the first batch on and stays
sane when every batch has the same profiled latency. Scale may go below 1: a faster device is
learned too.

Pure: no clock reads (times are passed in), no I/O, no torch. The live router and the
simulator use the same class.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from superserve.errors import ConfigError

__all__ = ["CalibrationConfig", "LatencyModel", "RecentQuantile", "ResponseTail"]


@dataclass(frozen=True)
class CalibrationConfig:
    half_life_s: float = 1.0  # weight of an observation halves every this many seconds
    # the reserve: this quantile of recent residuals (observed - fit). 0.9, not 0.99: each
    # batch planned at its own p99 under a heavy tail (a co-tenant time-slicing the worker)
    # left the planner believing capacity was below the load (live, CPU hog at 1,000 req/s:
    # 0.72 attainment at 0.99, 0.88 at 0.9, where the fastest fixed subnet gets 0.88); on
    # the quiet matrix 0.9 held JSON 1,500 req/s at 0.993 (0.984) and binary 2,000 at 0.999
    # (0.988) in one pass, 0.965 / 0.961 in another (docs/calibration.md: run-to-run spread
    # at the machine's edge). The rest of the slack absorbs the batches above it.
    quantile: float = 0.9
    # the reserve as a line in the profiled latency (the quantile of small and of large
    # batches' residuals), not one constant: see LatencyModel._tail_line
    linear_tail: bool = False
    window: int = 400  # how many recent batches the reserve is taken over
    # the router's per-request reserve for resolve -> last byte written is this quantile (it
    # adds to the batch reserve; 0.95 measured no better live: 1,000 / 1,500 / 2,000 req/s JSON
    # gave 0.9942 / 0.9623 / 0.5019 vs 0.9919 / 0.9753 / 0.6765 at 0.99, CPU-bound at the top)
    response_quantile: float = 0.99
    tail_max_age_s: float = 3.0  # ... and none older than this (so a drift down is followed)
    # a batch's responses are encoded and written one after another: the k-th waits for the
    # k-1 before it. The response tail is kept per position (ResponseTail): its quantile at
    # the first position plus this much per response ahead, until `min_samples` batches of
    # several responses have measured it (the median of their slopes). Measured live (JSON,
    # 750-1,000 req/s, on a 2-core VM ~2x slower than the one that profiled the shipped
    # table): 0.02-0.18 ms, more as the load generator sharing the core takes its turns. A
    # batch-1 warm-up measures nothing of it
    response_per_image_prior_s: float = 0.0001
    min_samples: int = 16  # until then the plan is `initial_tail` x the fit + initial transport
    initial_tail: float = 1.15  # margin factor before enough batches were seen
    prior_scale: float = 1.0  # the compute fit's prior: the table as profiled ...
    prior_overhead_s: float = 0.0  # ... plus this per batch (a fixed part of the forward)
    initial_transport_s: float = 0.0005  # dispatch + pipe + loop, before enough batches
    # how many batches' worth of evidence the prior is, on the scale and on the fixed part
    # (at the fastest batch); while every batch has the same profiled latency (light load)
    # the fixed part stays near its prior and the scale takes the error
    prior_weight: float = 1.0
    prior_overhead_weight: float = 1.0
    min_scale: float = 0.002  # a GPU may run a CPU-profiled table hundreds of times faster
    max_scale: float = 50.0
    max_overhead_s: float = 0.050
    # one batch moves the fit at most this far: an observation above clip x the current
    # prediction counts as clip x it (a loop stalled for a second is one sample, not the
    # truth; a real step up is still followed, by x clip per batch)
    clip: float = 3.0
    # a step (a co-tenant starts or stops, the machine stalls): when, of the last
    # `step_window` batches' compute times, those beyond x`step_ratio` of the fit on one side
    # outnumber those beyond it on the other by `step_need` (7 of 8, none the other way),
    # the evidence so far (those batches' too) is cut to `step_keep` of its weight, and
    # again while the fit is still that far off, so the fit follows within a few dozen
    # batches instead of seconds of half-lives (0 turns it off). Simulated, mean of 8
    # traces (benchmarks/transients_sim.py's world): the worker x2 for 1 s at 2,000 req/s
    # 0.9889 -> 0.9929 attainment; a CPU hog at 1,000 req/s 0.9963 / 0.9952 -> 0.9975 /
    # 0.9971 (run / last 10 s); steady load unchanged (10% jitter never trips it). 0.3 and
    # 0.02 did worse on one of the two, and counting 7 of 8 on one side whatever the
    # eighth did gave 0.9964 / 0.9957 under the hog
    step_window: int = 8
    step_need: int = 7
    step_ratio: float = 1.3
    step_keep: float = 0.1
    # a strong step is taken sooner: `strong_need` batches in a row beyond x`strong_ratio` of
    # the fit on the same side cut the evidence the same way (0 turns it off). Live, a CPU
    # hog on the worker's core costs x5-x7 for ~0.5 s at its start and every few seconds
    # after (the batch log), x1.5 between; with long batches, 7 of 8 took ~0.2 s to see
    # the onset. Simulated, mean of 24 traces (benchmarks/transients_sim.py): such spikes
    # at 1,000 req/s 0.9732 -> 0.9756; the worker x4 for 0.3 s 0.9881 -> 0.9890; x2 for 1 s
    # 0.9918 -> 0.9912; the time-sliced hog 0.9973 / 0.9965 -> 0.9965 / 0.9970 (run / last
    # 10 s); steady 2,000 req/s unchanged
    strong_need: int = 2
    strong_ratio: float = 2.0

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ConfigError(f"half_life_s must be > 0, got {self.half_life_s!r}")
        if not 0.5 <= self.quantile < 1:
            raise ConfigError(f"quantile must be in [0.5, 1), got {self.quantile!r}")
        if not (isinstance(self.window, int) and self.window >= 8):
            raise ConfigError(f"window must be an int >= 8, got {self.window!r}")
        if not self.tail_max_age_s > 0:
            raise ConfigError(f"tail_max_age_s must be > 0, got {self.tail_max_age_s!r}")
        if not 0 <= self.response_per_image_prior_s <= self.max_overhead_s:
            raise ConfigError(f"response_per_image_prior_s must be in [0, {self.max_overhead_s}],"
                              f" got {self.response_per_image_prior_s!r}")
        if not self.initial_tail >= 1:
            raise ConfigError(f"initial_tail must be >= 1, got {self.initial_tail!r}")
        if not self.min_scale <= self.prior_scale <= self.max_scale:
            raise ConfigError(f"prior_scale {self.prior_scale!r} must be within "
                              f"[{self.min_scale}, {self.max_scale}]")
        if not 0 <= self.initial_transport_s <= self.max_overhead_s:
            raise ConfigError(f"initial_transport_s must be in [0, {self.max_overhead_s}], "
                              f"got {self.initial_transport_s!r}")
        if not 0 <= self.prior_overhead_s <= self.max_overhead_s:
            raise ConfigError(f"prior_overhead_s must be in [0, {self.max_overhead_s}], got "
                              f"{self.prior_overhead_s!r}")
        if not self.clip > 1:
            raise ConfigError(f"clip must be > 1, got {self.clip!r}")
        if not (isinstance(self.step_window, int) and 1 <= self.step_need <= self.step_window):
            raise ConfigError(f"need 1 <= step_need <= step_window, got {self.step_need!r}, "
                              f"{self.step_window!r}")
        if not (isinstance(self.strong_need, int) and self.strong_need >= 0
                and self.strong_ratio > 1):
            raise ConfigError(f"need strong_need >= 0 and strong_ratio > 1, got "
                              f"{self.strong_need!r}, {self.strong_ratio!r}")
        if not (self.step_ratio > 1 and 0 <= self.step_keep < 1):
            raise ConfigError(f"need step_ratio > 1 and 0 <= step_keep < 1, got "
                              f"{self.step_ratio!r}, {self.step_keep!r}")
        if not (self.prior_weight > 0 and self.prior_overhead_weight > 0):
            raise ConfigError("prior_weight and prior_overhead_weight must be > 0, got "
                              f"{self.prior_weight!r}, {self.prior_overhead_weight!r}")


def _quantiles(a: np.ndarray, q: float) -> tuple[float, float]:
    """(the q quantile, the median) of `a` (modified in place), as `np.quantile`'s default
    (linear) method computes them, by partial sorting: ~5x cheaper than np.quantile on the
    few hundred samples here (it runs after every few batches on the serving loop)."""
    n = len(a)
    ks: list[int] = []
    for x in (q, 0.5):
        i = x * (n - 1)
        lo = math.floor(i)
        ks += (lo, min(lo + 1, n - 1))
    a.partition(sorted(set(ks)))
    out = []
    for x in (q, 0.5):
        i = x * (n - 1)
        lo = math.floor(i)
        hi = min(lo + 1, n - 1)
        out.append(float(a[lo] + (a[hi] - a[lo]) * (i - lo)))
    return out[0], out[1]


class RecentQuantile:
    """A high quantile (and the median) of recent samples, over a bounded window bounded in
    age, recomputed lazily: adding is O(1); the quantiles are refreshed every `every`
    additions (default: every 1/32 of the window, at least 8), and no more often than every
    `min_interval_s` (a stream fed per request, thousands a second, needs no fresher
    quantile than a few per second)."""

    def __init__(self, quantile: float, window: int, max_age_s: float,
                 every: int | None = None, min_interval_s: float = 0.0) -> None:
        self.q, self.max_age_s = quantile, max_age_s
        self.every = max(8, window // 32) if every is None else every
        self.min_interval_s = min_interval_s
        self._refreshed_s = -math.inf
        self._t: deque[float] = deque(maxlen=window)
        self._v: deque[float] = deque(maxlen=window)
        self._value: float | None = None
        self._median: float | None = None
        self._dirty = 0

    def __len__(self) -> int:
        return len(self._v)

    def add(self, now_s: float, value: float) -> None:
        self._t.append(now_s)
        self._v.append(value)
        self._dirty += 1
        if self._value is None or (self._dirty >= self.every
                                   and now_s - self._refreshed_s >= self.min_interval_s):
            self._refresh(now_s)

    def _refresh(self, now_s: float) -> None:
        self._dirty = 0
        self._refreshed_s = now_s
        while self._t and now_s - self._t[0] > self.max_age_s:
            self._t.popleft()
            self._v.popleft()
        if self._v:
            # the quantile, but never decided by one or two samples: with n of them, at most
            # the (1 - 2/n) quantile (a p99 needs 200 samples to be a p99)
            q = min(self.q, max(0.5, 1.0 - 2.0 / len(self._v)))
            a = np.fromiter(self._v, float, len(self._v))
            self._value, self._median = _quantiles(a, q)
        else:
            self._value = self._median = None

    def expire(self, now_s: float) -> bool:
        """Drop samples older than max_age_s now (and refresh the quantile); True when any
        were dropped."""
        if self._t and now_s - self._t[0] > self.max_age_s:
            self._refresh(now_s)
            return True
        return False

    def value(self, default: float) -> float:
        return default if self._value is None else self._value

    def median(self, default: float) -> float:
        return default if self._median is None else self._median

    def clear(self) -> None:
        self._t.clear()
        self._v.clear()
        self._value = None
        self._dirty = 0


class ResponseTail:
    """Resolve -> last byte written, per position in the batch.

    The front end writes a batch's responses one after another, so the k-th response of a
    batch waits for the k-1 before it: delay(k) ~ base + per_image x (k - 1), where base is
    what every response pays (the loop noticing the result, a busy loop) and per_image the
    encoding and writing of one response. `reserve_s(b)` is the tail for a batch of b: a high
    quantile of recent residuals (delay - per_image x (k - 1)) plus per_image x (b - 1).
    per_image is the median slope of recent batches with two or more responses written (the
    last against the first), and `response_per_image_prior_s` until `min_samples` of them
    (0 until any response was reported: a router without a front end writes none).

    One quantile over every response (until 2026-11-30) learned the tail of the batches it
    had seen: after a lull of small batches (a paced warm-up, the start of a run, a quiet
    spell) it planned the first burst's 32-image batch with the 0.7 ms tail of a batch of
    one. Pure: times are passed in."""

    def __init__(self, config: CalibrationConfig) -> None:
        self.config = c = config
        # recent responses: when written, position, delay (the residuals are taken at each
        # refresh, against the slope as it then stands)
        self._t: deque[float] = deque(maxlen=1024)
        self._k: deque[int] = deque(maxlen=1024)
        self._d: deque[float] = deque(maxlen=1024)
        self._dirty = 0
        self._refreshed_s = -math.inf
        self._slopes = RecentQuantile(0.5, 64, 10 * c.tail_max_age_s)
        self.base_s = 0.0
        self.per_image_s = 0.0
        self._seen = False

    def add(self, now_s: float, position: int, delay_s: float) -> None:
        """A response written `delay_s` after its batch resolved, `position` (1-based) in
        the order its batch's responses were written. The quantile is refreshed every 32
        responses and at most every 50 ms (a stream fed per request)."""
        self._seen = True
        self._t.append(now_s)
        self._k.append(position)
        self._d.append(delay_s)
        self._dirty += 1
        if len(self._d) <= self.config.min_samples or (
                self._dirty >= 32 and now_s - self._refreshed_s >= 0.05):
            self._refresh(now_s)

    def add_batch(self, now_s: float, first: tuple[int, float], last: tuple[int, float]
                  ) -> None:
        """One batch's first and last written response, as (position, delay)."""
        (k0, d0), (k1, d1) = first, last
        if k1 > k0:
            self._slopes.add(now_s, max(0.0, (d1 - d0) / (k1 - k0)))
            if abs(self._per_image() - self.per_image_s) > 0.1 * self.per_image_s:
                self._refresh(now_s)  # the residuals are taken against the slope

    def expire(self, now_s: float) -> None:
        """Forget responses older than `tail_max_age_s` (and slopes older than 10x that)."""
        old = (self._t and now_s - self._t[0] > self.config.tail_max_age_s)
        if old or self._slopes.expire(now_s):
            self._refresh(now_s)

    def _refresh(self, now_s: float) -> None:
        c = self.config
        self._dirty, self._refreshed_s = 0, now_s
        while self._t and now_s - self._t[0] > c.tail_max_age_s:
            self._t.popleft()
            self._k.popleft()
            self._d.popleft()
        self.per_image_s = self._per_image()
        n = len(self._d)
        if n < c.min_samples:
            self.base_s = 0.0
            return
        a = (np.fromiter(self._d, float, n)
             - self.per_image_s * (np.fromiter(self._k, float, n) - 1.0))
        # never decided by one or two samples, as RecentQuantile
        q = min(c.response_quantile, max(0.5, 1.0 - 2.0 / n))
        self.base_s = min(max(_quantiles(a, q)[0], 0.0), c.max_overhead_s)

    def _per_image(self) -> float:
        c = self.config
        if len(self._slopes) >= c.min_samples:
            return self._slopes.median(c.response_per_image_prior_s)
        return c.response_per_image_prior_s if self._seen else 0.0

    def reserve_s(self, batch: int) -> float:
        """The tail to plan for a batch of `batch` responses."""
        return min(self.base_s + self.per_image_s * max(batch - 1, 0),
                   self.config.max_overhead_s)


class LatencyModel:
    """Online model of a batch's real cost as an affine map of its profiled latency."""

    def __init__(self, p_lo_s: float, p_hi_s: float, config: CalibrationConfig | None = None
                 ) -> None:
        """`p_lo_s`, `p_hi_s`: the table's latency range (fastest at batch 1, slowest at the
        largest batch): the fixed part's prior weighs like batches at the fastest."""
        if not 0 < p_lo_s <= p_hi_s:
            raise ConfigError(f"need 0 < p_lo_s <= p_hi_s, got {p_lo_s!r}, {p_hi_s!r}")
        self.config = c = config or CalibrationConfig()
        self.p_lo_s, self.p_hi_s = p_lo_s, p_hi_s
        self._decay_per_s = math.log(2.0) / c.half_life_s
        self._prior = (c.prior_scale, c.prior_overhead_s)
        # relative weights are 1 / (prior cost + this)^2: sub-millisecond batches, whose
        # timing noise is mostly absolute, do not outweigh the rest
        self._w_floor = 0.0005
        # decayed sums of w, p, p^2, y, p*y (Python floats: numpy's per-call overhead
        # on five numbers cost more than the arithmetic)
        self._sums = [0.0] * 5
        self._t_last: float | None = None
        self.samples = 0
        self.scale, self.overhead_s = self._prior
        self._resid = RecentQuantile(c.quantile, c.window, c.tail_max_age_s)
        # the tail, split by batch size: residuals of batches profiled at or below the split
        # point (the running median of profiled latencies) and above it, with the median
        # profiled latency of each half, so the reserve can grow with the batch (see
        # `reserve_slope`)
        self._resid_lo = RecentQuantile(c.quantile, c.window, c.tail_max_age_s)
        self._resid_hi = RecentQuantile(c.quantile, c.window, c.tail_max_age_s)
        self._p_all = RecentQuantile(0.5, c.window, c.tail_max_age_s)
        self._p_lo = RecentQuantile(0.5, c.window, c.tail_max_age_s)
        self._p_hi = RecentQuantile(0.5, c.window, c.tail_max_age_s)
        self._transport = RecentQuantile(c.quantile, c.window, c.tail_max_age_s)
        self._steps: deque[int] = deque(maxlen=max(c.step_window, 1))
        self._strong = 0  # signed run of batches beyond x strong_ratio on one side
        self.steps_detected = 0
        self.last_observed_s = 0.0
        self.last_compute_s = 0.0
        self.last_predicted_s = 0.0  # what the plan said for the last batch (with the tail)
        self._plan = (1.0, 0.0)
        self._replan()

    # ------------------------------------------------------------------ the plan
    @property
    def warm(self) -> bool:
        return len(self._resid) >= self.config.min_samples

    @property
    def tail(self) -> float:
        """The multiplicative margin: `initial_tail` until enough batches were seen, then 1
        (the reserve is the additive residual quantile)."""
        return 1.0 if self.warm else self.config.initial_tail

    @property
    def reserve_s(self) -> float:
        """High quantile of observed - fitted compute, per batch (>= 0): with the linear
        tail, its part that does not grow with the batch."""
        c = self.config
        if not self.warm:
            return c.initial_transport_s
        if c.linear_tail:
            _slope, fixed = self._tail_line()
            return min(fixed, c.max_overhead_s)
        return min(max(self._resid.value(0.0), 0.0), c.max_overhead_s)

    @property
    def reserve_slope(self) -> float:
        """With the linear tail: how much the reserve grows per second of profiled latency."""
        return self._tail_line()[0] if self.config.linear_tail and self.warm else 0.0

    def _tail_line(self) -> tuple[float, float]:
        """(slope, fixed >= 0): the line through (median profiled, residual quantile) of the
        small and the large half of recent batches, so reserve(p) = slope x p + fixed bounds
        both an additive tail (a wake-up, a time slice: the same for every batch) and one
        that grows with the batch (preemptions, a slower core: more for a longer batch).
        One half empty or not above the other: a constant (the larger quantile)."""
        q_all = max(self._resid.value(0.0), 0.0)
        if len(self._resid_lo) < self.config.min_samples or \
                len(self._resid_hi) < self.config.min_samples:
            return 0.0, q_all
        p1, p2 = self._p_lo.median(0.0), self._p_hi.median(0.0)
        q1, q2 = max(self._resid_lo.value(0.0), 0.0), max(self._resid_hi.value(0.0), 0.0)
        if p2 <= p1 * 1.05 or q2 <= q1:
            return 0.0, max(q1, q2)
        slope = (q2 - q1) / (p2 - p1)
        fixed = q1 - slope * p1
        if fixed < 0.0:  # through the origin, still above the large half's quantile
            return q2 / p2, 0.0
        return slope, fixed

    @property
    def transport_s(self) -> float:
        """Median of dispatch-to-result beyond the worker's compute (reported, not planned)."""
        return max(self._transport.median(self.config.initial_transport_s), 0.0)

    @property
    def plan_scale(self) -> float:
        """Multiply profiled latencies by this ..."""
        return self._plan[0]

    @property
    def plan_overhead_s(self) -> float:
        """... and add this: the reserve a policy plans with (a high quantile of the cost)."""
        return self._plan[1]

    def _replan(self) -> None:
        """Recompute the plan (read several times per request; it changes only when a batch
        is observed, the model is seeded, or time passes in `tick`)."""
        tail = self.tail
        self._plan = (tail * self.scale + self.reserve_slope,
                      tail * self.overhead_s + self.reserve_s)

    def predict_s(self, profiled_s: float) -> float:
        """The planned (high-quantile) cost of a batch profiled at `profiled_s`."""
        return self.plan_scale * profiled_s + self.plan_overhead_s

    def mean_s(self, profiled_s: float) -> float:
        """The fitted (typical) cost: the compute fit plus the median transport."""
        return self.scale * profiled_s + self.overhead_s + self.transport_s

    # ------------------------------------------------------------------ learning
    def seed(self, now_s: float, factor: float, weight: float = 32.0) -> None:
        """Start from a measured factor (the start-up probe): `weight` batches' worth of
        evidence that batches take `factor` x the table, spread over its latency range. It
        fades like data, so a probe taken in a bad moment is forgotten once batches flow,
        or, with none flowing, after a few half-lives (the model relaxes to its prior)."""
        c = self.config
        f = min(max(factor, c.min_scale), c.max_scale)
        for p in np.geomspace(self.p_lo_s, self.p_hi_s, 4):
            self._add(now_s, float(p), f * float(p) + self._prior[1], weight / 4.0)
        self._solve()
        self._replan()

    def tick(self, now_s: float) -> None:
        """Let time pass without a batch: evidence fades (toward the prior) and the tail
        forgets old ratios. Cheap when called often; acts once per half-life of silence."""
        if self._t_last is None or now_s - self._t_last < self.config.half_life_s:
            return
        self._decay(now_s)
        self._t_last = now_s
        for q in (self._resid, self._resid_lo, self._resid_hi, self._p_all, self._p_lo,
                  self._p_hi):
            q.expire(now_s)
        self._transport.expire(now_s)
        self._solve()
        self._replan()

    def _add(self, now_s: float, p: float, y: float, n: float = 1.0) -> None:
        if self._t_last is not None and now_s > self._t_last:
            self._decay(now_s)
        self._t_last = now_s if self._t_last is None else max(self._t_last, now_s)
        # relative least squares: each batch weighs by 1 / (its prior cost)^2, so a 0.4 ms
        # batch counts as much as a 30 ms one (the tail is a ratio; so is the fit's error)
        w = n / (self._prior[0] * p + self._prior[1] + self._w_floor) ** 2
        sums = self._sums
        sums[0] += w
        sums[1] += w * p
        sums[2] += w * p * p
        sums[3] += w * y
        sums[4] += w * p * y

    def _decay(self, now_s: float) -> None:
        """Fade the evidence by the time since the last batch (half-life)."""
        f = math.exp(-self._decay_per_s * (now_s - self._t_last))
        self._sums = [x * f for x in self._sums]

    def observe(self, now_s: float, profiled_s: float, observed_s: float,
                compute_s: float | None = None) -> None:
        """One finished batch: profiled latency (table, plus any actuation), what it really
        took (dispatch to result, as the router saw it) and, when known, the worker's own
        compute time of it (the rest is transport: pipe, loop, dispatch)."""
        if compute_s is None:
            compute_s = observed_s
        if not (observed_s >= 0 and profiled_s > 0 and math.isfinite(observed_s)
                and 0 <= compute_s and math.isfinite(compute_s)):
            return
        compute_s = min(compute_s, observed_s)
        fit = self.scale * profiled_s + self.overhead_s
        self.last_predicted_s = self.predict_s(profiled_s)
        self.last_observed_s, self.last_compute_s = observed_s, compute_s
        self._transport.add(now_s, observed_s - compute_s)
        self._resid.add(now_s, observed_s - fit)
        if self.config.linear_tail:
            self._p_all.add(now_s, profiled_s)
            low = profiled_s <= self._p_all.median(profiled_s)
            (self._resid_lo if low else self._resid_hi).add(now_s, observed_s - fit)
            (self._p_lo if low else self._p_hi).add(now_s, profiled_s)
        c = self.config
        if c.step_keep > 0 and fit > 0:
            r = compute_s / fit
            st = self._steps
            st.append(1 if r > c.step_ratio else (-1 if r * c.step_ratio < 1 else 0))
            side = 1 if r > c.strong_ratio else (-1 if r * c.strong_ratio < 1 else 0)
            self._strong = self._strong + side if side and self._strong * side >= 0 else side
            if ((len(st) == c.step_window and abs(sum(st)) >= c.step_need)
                    or (c.strong_need and abs(self._strong) >= c.strong_need)):
                self._strong = 0
                if self._t_last is not None and now_s > self._t_last:
                    self._decay(now_s)
                    self._t_last = now_s
                self._sums = [x * c.step_keep for x in self._sums]
                st.clear()
                self.steps_detected += 1
        y = min(compute_s, self.config.clip * fit) if fit > 0 else compute_s
        self._add(now_s, profiled_s, y)
        self.samples += 1
        self._solve()
        self._replan()

    def _solve(self) -> None:
        c = self.config
        s0, o0 = self._prior
        w, sp, spp, sy, spy = self._sums
        # ridge penalties toward the prior, in the fit's relative units: lam_s (s - s0)^2 +
        # lam_o (o - o0)^2, each worth that many batches (lam_o: batches at the fastest)
        lam_s = c.prior_weight
        lam_o = c.prior_overhead_weight / (s0 * self.p_lo_s + o0 + self._w_floor) ** 2
        spp, spy = spp + lam_s, spy + lam_s * s0
        w, sy = w + lam_o, sy + lam_o * o0
        det = spp * w - sp * sp
        if det <= 1e-18 * max(spp * w, 1e-30):
            return
        scale = (spy * w - sp * sy) / det
        overhead = (spp * sy - sp * spy) / det
        if overhead < 0.0 or overhead > c.max_overhead_s:  # refit the scale with it clamped
            overhead = min(max(overhead, 0.0), c.max_overhead_s)
            scale = (spy - overhead * sp) / spp
        self.scale = min(max(scale, c.min_scale), c.max_scale)
        self.overhead_s = overhead

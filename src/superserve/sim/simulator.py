"""Discrete-event simulator of the router + N workers, using the live policy objects.

Deterministic: the same trace, table, policy, config and seed give identical results (the only
randomness, latency jitter, comes from a seeded numpy Generator).

Why it is fast (the paper's 120 s MAF trace at 6,400 q/s is 768,000 requests):
- One SLO per run makes every deadline arrival + SLO, so the EDF order is the arrival order and
  the queue is an index range [head, tail) over the sorted arrivals. Arrivals and deadline drops
  advance in bulk with bisect; requests of a failed worker's batch go to a small side queue
  (their deadlines are the earliest, so they are served first).
- The per-batch path allocates almost nothing: one reused view object (a frozen QueueView costs
  ~1 us to build, as much as the whole SlackFit decision), plain lists for the batch records,
  and completion times and accuracies filled in with numpy once at the end.
- The arrival rate the policies see is the router's RateEstimator, computed for every arrival
  at once with numpy (`rate.ewma_levels`), so the simulator and the live router agree.

The protocol with the policy is the one in scheduling/base.py, identical in the live router.

A mis-profiled world: batches really take `latency_factor` x their profiled latency (a factor
that may change during the run, `factor_steps`), with optional jitter. With `calibrate` the
policy plans as the live router does, with the online LatencyModel (scheduling/calibration.py)
fed by every batch when it ends; without it, with the table as is (plus `overhead_s`).

A front end behind on its core (`frontend_s`): every request first takes `frontend_s` of one
FIFO stage (live: the HTTP parse and decode on the router's core, shared with a load generator)
before the router's queue sees it; its deadline still counts from its arrival (the first
byte). The router's rate and burst estimates see the queue's entries, and the miss feedback
leaves out requests that entered with under `FRONT_END_SHARE` of their SLO left, as live.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable
from superserve.scheduling.base import Policy, rate_guard_binds_of
from superserve.scheduling.batching import BatchWaitConfig, hold_until
from superserve.scheduling.bursts import DEFAULT_BURST_HALF_LIFE_S, burst_levels
from superserve.scheduling.calibration import CalibrationConfig, LatencyModel
from superserve.scheduling.feedback import FRONT_END_SHARE, FeedbackConfig, MissFeedback
from superserve.scheduling.rate import ewma_levels, warmup_gain

__all__ = ["SimConfig", "SimResult", "frontend_entries", "simulate"]


@dataclass(frozen=True)
class SimConfig:
    slo_s: float = 0.05  # latency SLO of every request
    workers: int = 1
    overhead_s: float = 0.0  # per-batch overhead beyond the profiled latency (dispatch, I/O)
    # of it, what keeps the worker busy (None: all of it); the rest is client-side delay
    # that the policy reserves but that does not occupy a worker (live: network, event loops)
    busy_overhead_s: float | None = None
    jitter: float = 0.0  # relative std-dev of a batch's service time (normal, clipped at -50%)
    # a CPU-bound co-tenant time-sliced with the worker from `preempt_from_s` on: during a
    # batch it takes the core for `preempt_s` at a time, at rate 1/preempt_s, so a batch of
    # base time T is stretched by preempt_s x Poisson(T / preempt_s): x2 on average, a
    # whole slice or nothing for a batch shorter than one (what `calibration_live --hog-at`
    # does to a real worker: the fit and its tail must cope with that noise)
    preempt_s: float = 0.0
    preempt_from_s: float = 0.0
    # a noisy host: stalls of `stall_s` (uniform in [stall_s / 2, stall_s]) arrive at
    # `stall_rate_per_s` while the worker computes, so a batch of time T is hit by
    # Poisson(rate x T) of them (measured on a slow, shared 2-core VM: worker batches of a
    # 1-3 ms subnet took 30-60 ms about once every 2 s, whatever the policy)
    stall_s: float = 0.0
    stall_rate_per_s: float = 0.0
    actuation_s: float = 0.0  # paid when a worker's subnet changes (0 for SubNetAct)
    # per request, one FIFO front-end stage ahead of the router's queue (0: none; see the
    # module docstring): a burst reaches the queue at 1 / frontend_s, its deadlines unmoved
    frontend_s: float = 0.0
    failures: tuple[tuple[float, int], ...] = ()  # (time_s, worker id): that worker dies
    restart_s: float | None = None  # a failed worker is back after this long (None: never)
    rate_tau_s: float = 1.0  # RateEstimator time constant (the router's default)
    seed: int = 0
    record_batches: bool = False  # keep (t, subnet, batch, worker) per dispatch (plots)
    # the world: a batch really takes latency_factor x its profiled latency, and from each
    # (time_s, factor) of factor_steps on, that factor instead (drift: a co-tenant)
    latency_factor: float = 1.0
    factor_steps: tuple[tuple[float, float], ...] = ()
    calibrate: bool = False  # plan with the online latency model, as the live router does
    calibration: CalibrationConfig | None = None
    # the router's miss feedback on SlackFit's rate guard (RouterConfig.feedback; None: off)
    feedback: FeedbackConfig | None = field(default_factory=FeedbackConfig)
    # an idle worker's hold for company (RouterConfig.batch_wait; None: every batch at once)
    batch_wait: BatchWaitConfig | None = field(default_factory=BatchWaitConfig)

    def __post_init__(self) -> None:
        if not (self.slo_s > 0 and math.isfinite(self.slo_s)):
            raise ConfigError(f"slo_s must be > 0, got {self.slo_s!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers!r}")
        if self.busy_overhead_s is not None and not 0 <= self.busy_overhead_s <= self.overhead_s:
            raise ConfigError(f"busy_overhead_s must be in [0, overhead_s], got "
                              f"{self.busy_overhead_s!r}")
        for name in ("jitter", "actuation_s", "overhead_s", "preempt_s", "stall_s",
                     "stall_rate_per_s", "frontend_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.rate_tau_s > 0:
            raise ConfigError(f"rate_tau_s must be > 0, got {self.rate_tau_s!r}")
        if not self.latency_factor > 0 or any(not f > 0 for _, f in self.factor_steps):
            raise ConfigError("latency factors must be > 0, got "
                              f"{self.latency_factor!r} and steps {self.factor_steps!r}")
        if list(self.factor_steps) != sorted(self.factor_steps):
            raise ConfigError(f"factor_steps must be sorted by time, got {self.factor_steps!r}")
        if self.restart_s is not None and not self.restart_s >= 0:
            raise ConfigError(f"restart_s must be >= 0 or None, got {self.restart_s!r}")
        for t, w in self.failures:
            if not 0 <= w < self.workers:
                raise ConfigError(f"failures: worker {w} at t={t}: workers are "
                                  f"0..{self.workers - 1}")
            if not t >= 0:
                raise ConfigError(f"failures: time {t!r} of worker {w} must be >= 0")


@dataclass
class SimResult:
    requests: int
    completed_in_slo: int
    completed_late: int
    dropped: int
    slo_attainment: float
    mean_serving_accuracy: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    wall_s: float
    requests_per_wall_s: float
    batches: int
    mean_batch_size: float
    lost_batches: int = 0  # batches lost to worker failures (their requests re-queued)
    # dispatched batches by the rule that planned them (Plan.rule; a one-rule policy: its name)
    plans: dict[str, int] = field(default_factory=dict)
    batch_log: list[tuple[float, int, int, int]] = field(default_factory=list, repr=False)
    # with record_batches: per request, its finish time (nan: never served) and the served
    # subnet's accuracy; per dispatch, the planned latency scale (calibration timelines)
    finish_s: np.ndarray | None = field(default=None, repr=False)
    served_accuracy: np.ndarray | None = field(default=None, repr=False)
    scale_log: list[tuple[float, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("batch_log", "finish_s", "served_accuracy", "scale_log")}


class _View:
    """A mutable stand-in for scheduling.base.QueueView with the same fields, reused for
    every decision. Policies are pure and keep no reference to their view, so reuse is safe."""

    __slots__ = ("arrival_rate_qps", "burst_images", "burst_peaks", "cycle_overhead_s",
                 "entry_share", "head_deadline_s", "head_images", "head_queued_s", "head_slo_s",
                 "latency_scale", "length", "overhead_s", "rate_boost", "worker_id",
                 "worker_subnet")

    def __init__(self, overhead_s: float, slo_s: float) -> None:
        self.length, self.head_deadline_s, self.worker_id = 0, 0.0, 0
        self.worker_subnet: int | None = None
        self.arrival_rate_qps, self.overhead_s = 0.0, overhead_s
        self.latency_scale = 1.0
        self.burst_images = 0.0
        self.burst_peaks: tuple[float, ...] = ()
        self.head_slo_s: float | None = slo_s  # one SLO for every request (router: each head's)
        self.cycle_overhead_s: float | None = None  # None: overhead_s (no calibration)
        self.rate_boost = 1.0
        self.head_images = 1  # every simulated request is one image
        self.head_queued_s: float | None = None  # None: at its arrival (no front end)
        self.entry_share: float | None = None  # None: the whole SLO (no front end)


def frontend_entries(arr: np.ndarray, service_s: float) -> np.ndarray:
    """When each of the sorted arrivals `arr` leaves a FIFO stage that serves one at a time
    in `service_s`: e[i] = max(arr[i], e[i-1]) + service_s, in closed form (a running max of
    arr[i] - i x service_s), so a burst leaves the stage at 1 / service_s."""
    k = np.arange(len(arr)) * service_s
    return np.maximum.accumulate(arr - k) + k + service_s


def _latency_rows(table: ProfileTable) -> list[list[float]]:
    """lat[subnet][b] for every b in 0..max_batch (index 0 unused): list lookups, no search."""
    return [[0.0] + [table.latency_s(i, b) for b in range(1, table.max_batch + 1)]
            for i in range(len(table))]


def simulate(arrivals_s: Sequence[float] | np.ndarray, table: ProfileTable, policy: Policy,
             cfg: SimConfig) -> SimResult:
    t_wall = time.perf_counter()
    arr = np.asarray(arrivals_s, dtype=float)
    if len(arr) and np.any(np.diff(arr) < 0):
        arr = np.sort(arr)
    n = len(arr)
    arrl: list[float] = arr.tolist()  # arrivals: the deadlines' clock
    # entries into the router's queue (the same list without a front end), and per request
    # prefix counts of those the miss feedback may count (`okc`; None: all of them)
    ent, entl, okc = arr, arrl, None
    if cfg.frontend_s > 0 and n:
        ent = frontend_entries(arr, cfg.frontend_s)
        entl = ent.tolist()
        ok = (ent - arr) <= FRONT_END_SHARE * cfg.slo_s
        okc = np.concatenate([[0], np.cumsum(ok)]).tolist()
    levels: list[float] = ewma_levels(ent, cfg.rate_tau_s).tolist()
    tau = cfg.rate_tau_s
    # SlackFit's adaptive guard: the router's BurstTracker, for every arrival at once
    burst_window = getattr(policy, "burst_window_s", None)
    fractions = getattr(policy, "burst_fractions", (1.0,))
    # per arrival: the peak per window (one row per arrival)
    bursts: list[tuple[float, ...]] = (
        list(zip(*(burst_levels(ent, f * burst_window).tolist() for f in fractions)))
        if burst_window and n else [])
    burst_tau = DEFAULT_BURST_HALF_LIFE_S / math.log(2)
    slo, overhead, jitter = cfg.slo_s, cfg.overhead_s, cfg.jitter
    preempt, preempt_from = cfg.preempt_s, cfg.preempt_from_s
    stall, stall_rate = cfg.stall_s, cfg.stall_rate_per_s if cfg.stall_s > 0 else 0.0
    busy_ovh = overhead if cfg.busy_overhead_s is None else cfg.busy_overhead_s
    fastest = getattr(policy, "min_latency_s", table.fastest_s)
    drop_slack = getattr(policy, "drop_slack_s", None)
    early_drop = drop_slack is not None and getattr(policy, "early_drop", True)
    lat = _latency_rows(table)
    max_b = table.max_batch
    rng = np.random.default_rng(cfg.seed)
    exp = math.exp

    head = 0  # first request not yet dispatched or dropped (main range)
    requeue: list[int] = []  # re-queued request indices, sorted (earliest deadline first)
    free = list(range(cfg.workers - 1, -1, -1))  # stack of free worker ids
    alive = [True] * cfg.workers
    worker_subnet: list[int | None] = [None] * cfg.workers
    # in flight per worker: (done, lo, hi, members or None, subnet); a range [lo, hi) of the
    # main queue, or an explicit member list when re-queued requests are in the batch
    in_flight: dict[int, tuple[float, int, int, list[int] | None, int]] = {}
    busy: list[tuple[float, int, int]] = []  # heap (t_done, seq, worker)
    seq = 0
    events: list[tuple[float, int, str, int]] = []  # failures / restarts
    for t, w in cfg.failures:
        heapq.heappush(events, (t, len(events), "fail", w))
    # completed batches: ranges in three parallel lists, member lists apart
    done_lo: list[int] = []
    done_hi: list[int] = []
    done_t: list[float] = []
    done_sub: list[int] = []
    done_members: list[tuple[list[int], float, int]] = []
    batches = lost = batch_items = 0
    log: list[tuple[float, int, int, int]] = []
    record = cfg.record_batches
    scale_log: list[tuple[float, float]] = []
    view = _View(overhead, slo)
    model = None
    if cfg.calibrate:
        model = LatencyModel(table.fastest_s, max(max(r) for r in table.lat_s), cfg.calibration)
    client_ovh = overhead - busy_ovh  # reserved, never occupies a worker (live: the front end)
    fb = MissFeedback(cfg.feedback) if cfg.feedback is not None else None
    binds = rate_guard_binds_of(policy)
    fb_up = cfg.feedback.up if cfg.feedback is not None else 1.0
    step_t = [t for t, _ in cfg.factor_steps]
    step_f = [f for _, f in cfg.factor_steps]
    base_factor = cfg.latency_factor
    scale = drop_scale = 1.0
    plan_ovh = drop_ovh = overhead
    decide = policy.decide
    plans: dict[str, int] = {}
    actuation = cfg.actuation_s
    now = 0.0
    bisect_left, bisect_right = bisect.bisect_left, bisect.bisect_right
    heappush, heappop = heapq.heappush, heapq.heappop

    wait = cfg.batch_wait
    hold_at = math.inf  # a held batch's end (a free worker waits for company until then)
    held = -math.inf  # the last hold that ran out: not held again
    tail = 0
    while True:
        # requests arrived by now; time only moves forward, so search a short window first
        hi = tail + 64
        if hi < n and entl[hi] > now:
            tail = bisect_right(entl, now, tail, hi)
        else:
            tail = bisect_right(entl, now, tail)
        # ---- dispatch to free workers while there is work
        if model is not None:
            scale = model.plan_scale
            plan_ovh = model.plan_overhead_s + client_ovh
            view.latency_scale, view.overhead_s = scale, plan_ovh
            view.cycle_overhead_s = model.overhead_s + model.transport_s
            # the drop rule's typical cost (Router.drop_scale, Router.drop_overhead_s)
            drop_scale, drop_ovh = model.scale, view.cycle_overhead_s + client_ovh
        while free and (requeue or head < tail):
            # the shared drop rule, in bulk on the main range: deadline - now - overhead <
            # fastest x scale <=> arrival < now + overhead + fastest x scale - slo, at the
            # typical cost; and the policy's early drop, at the planned one, when its bar for
            # the queue as it stands is above the fastest choice
            rate = (levels[tail - 1] * exp((entl[tail - 1] - now) / tau)
                    / warmup_gain(now - entl[0], tau)) if tail else 0.0
            bar = max(fastest, drop_slack(len(requeue) + (tail - head), rate)) \
                if early_drop else fastest
            cut = now + drop_ovh + fastest * drop_scale - slo
            if bar > fastest:
                cut = max(cut, now + plan_ovh + bar * scale - slo)
            dropped = fresh = 0  # fresh: evidence for the feedback's next raise (is_fresh)
            fresh_from = fb.fresh_from(slo) if fb is not None else math.inf
            while requeue and arrl[requeue[0]] < cut:
                k = requeue.pop(0)
                if okc is None or okc[k + 1] > okc[k]:
                    fresh += arrl[k] >= fresh_from
                    dropped += 1
            if head < tail and arrl[head] < cut:
                new_head = bisect_left(arrl, cut, head, tail)
                if fb is not None:
                    first = bisect_left(arrl, fresh_from, head, new_head)
                    if okc is None:
                        dropped += new_head - head
                        fresh += new_head - first
                    else:
                        dropped += okc[new_head] - okc[head]
                        fresh += okc[new_head] - okc[first]
                head = new_head
            if fb is not None:
                fb.add(now, dropped, dropped, fresh, fresh)
                view.rate_boost = fb.update(now)
            qlen = len(requeue) + (tail - head)
            if qlen == 0:
                break
            if wait is not None:
                until = hold_until(wait, now if now > held else held,  # noqa: FURB136
                                   arrl[requeue[0] if requeue else head], slo, qlen, rate, max_b)
                if until is not None:
                    hold_at = until
                    break
                hold_at = math.inf  # going now: any hold set before is void
            w = free[-1]
            view.length = qlen
            view.head_deadline_s = arrl[requeue[0] if requeue else head] + slo
            if okc is not None:  # a front end: the router's view of when requests entered
                view.head_queued_s = entl[requeue[0] if requeue else head]
                view.entry_share = (arrl[tail - 1] + slo - entl[tail - 1]) / slo
            view.worker_id = w
            view.worker_subnet = worker_subnet[w]
            view.arrival_rate_qps = rate
            if bursts and tail:
                decay = exp((entl[tail - 1] - now) / burst_tau)
                view.burst_peaks = peaks = tuple(p * decay for p in bursts[tail - 1])
                view.burst_images = peaks[-1]
            if fb is not None:  # a raise only where it changes a plan (Router._with_feedback)
                fb.set_can_raise(now, binds is not None
                                 and binds(view, fb_up, now))  # type: ignore[arg-type]
            plan = decide(view, now)  # type: ignore[arg-type]  # duck-typed QueueView
            if plan is None:
                break
            free.pop()
            subnet = plan.subnet
            # conditional expressions, not min(): a builtin call per batch is measurable here
            b = plan.batch_size if plan.batch_size < qlen else qlen  # noqa: FURB136
            if requeue:
                members: list[int] | None = requeue[:b]
                del requeue[:b]
                rest = b - len(members)
                members += range(head, head + rest)
                lo = hi = 0
                head += rest
            else:
                members, lo, hi = None, head, head + b
                head = hi
            profiled = (lat[subnet][b] if b <= max_b else table.latency_s(subnet, b)) \
                + plan.load_s
            factor = step_f[bisect_right(step_t, now) - 1] \
                if step_t and now >= step_t[0] else base_factor
            service = profiled * factor + busy_ovh
            if actuation and worker_subnet[w] is not None and worker_subnet[w] != subnet:
                service += actuation
            if jitter:
                service *= max(0.5, 1.0 + jitter * rng.standard_normal())
            if preempt and now >= preempt_from:
                service += preempt * rng.poisson(service / preempt)
            if stall_rate:
                k = rng.poisson(stall_rate * service)
                if k:
                    service += stall * rng.uniform(0.5, 1.0, k).sum()
            compute = service - busy_ovh if service > busy_ovh else service  # the worker's own
            worker_subnet[w] = subnet
            done = now + service
            in_flight[w] = (done, lo, hi, members, subnet, profiled, service, compute)
            heappush(busy, (done, seq, w))
            seq += 1
            batches += 1
            batch_items += b
            rule = plan.rule or policy.name
            plans[rule] = plans.get(rule, 0) + 1
            if record:
                log.append((now, subnet, b, w))
                scale_log.append((now, scale))
        # ---- next event: a completion, a failure/restart, or (with a free worker) an arrival
        t_done = busy[0][0] if busy else math.inf
        t_event = events[0][0] if events else math.inf
        t_arr = entl[tail] if (free and tail < n) else math.inf
        nxt = t_done if t_done < t_event else t_event  # noqa: FURB136
        if t_arr < nxt:  # noqa: PLR1730
            nxt = t_arr
        # a hold left from before a worker failure took the free worker away ends now at once
        t_hold = (hold_at if hold_at > now else now) if free else math.inf  # noqa: FURB136
        if t_hold < nxt:  # noqa: PLR1730
            nxt = t_hold
        if nxt == math.inf:
            break
        now = nxt
        if t_hold <= nxt:  # the hold ran out: the next pass dispatches what is queued
            held, hold_at = hold_at, math.inf
        elif t_done <= nxt:
            w = heappop(busy)[2]
            done, lo, hi, members, subnet, profiled, service, compute = in_flight.pop(w)
            if model is not None:
                model.observe(done, profiled, service, compute)
            if fb is not None:  # on time: arrival >= finish - slo, as _result counts it
                late_before = done + client_ovh - slo - 1e-12
                fresh_from = fb.fresh_from(slo)
                if members is None:
                    late = bisect_left(arrl, late_before, lo, hi)
                    first = bisect_left(arrl, fresh_from, lo, hi)
                    if okc is None:
                        fb.add(done, hi - lo, late - lo, hi - first, max(0, late - first))
                    else:  # the same ranges, counting only what the feedback may
                        fb.add(done, okc[hi] - okc[lo], okc[late] - okc[lo],
                               okc[hi] - okc[first], max(0, okc[late] - okc[first]))
                else:
                    seen = members if okc is None else \
                        [k for k in members if okc[k + 1] > okc[k]]
                    fb.add(done, len(seen), sum(arrl[k] < late_before for k in seen),
                           sum(arrl[k] >= fresh_from for k in seen),
                           sum(fresh_from <= arrl[k] < late_before for k in seen))
            if members is None:
                done_lo.append(lo)
                done_hi.append(hi)
                done_t.append(done)
                done_sub.append(subnet)
            else:
                done_members.append((members, done, subnet))
            free.append(w)
        elif t_event <= nxt:
            _, _, kind, w = heappop(events)
            if kind == "fail" and alive[w]:
                alive[w] = False
                if w in free:
                    free.remove(w)
                entry = in_flight.pop(w, None)
                if entry is not None:  # its batch is lost; the requests go back to the queue
                    lost += 1
                    lo, hi, members = entry[1], entry[2], entry[3]
                    requeue = sorted(requeue + (list(range(lo, hi)) if members is None
                                                else members))
                    busy = [e for e in busy if e[2] != w]
                    heapq.heapify(busy)
                worker_subnet[w] = None
                if cfg.restart_s is not None:
                    heappush(events, (now + cfg.restart_s, seq, "restart", w))
                    seq += 1
            elif kind == "restart" and not alive[w]:
                alive[w] = True
                free.append(w)
    # requests never dispatched (all workers dead) stay nan: they count as dropped
    finish, served_acc = _fill(n, table, done_lo, done_hi, done_t, done_sub, done_members)
    finish = finish + (overhead - busy_ovh)  # the client-side part of the overhead
    res = _result(arr, finish, served_acc, slo, time.perf_counter() - t_wall, batches,
                  batch_items, lost, log)
    res.plans = plans
    if record:
        res.finish_s, res.served_accuracy, res.scale_log = finish, served_acc, scale_log
    return res


def _fill(n: int, table: ProfileTable, lo: list[int], hi: list[int], t: list[float],
          sub: list[int], members: list[tuple[list[int], float, int]]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Completion time and served accuracy per request (nan / 0 where never completed)."""
    finish = np.full(n, np.nan)
    served_acc = np.zeros(n)
    if lo:
        lo_a, hi_a = np.asarray(lo), np.asarray(hi)
        lengths = hi_a - lo_a
        starts = np.repeat(lo_a - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        idx = np.arange(int(lengths.sum())) + starts
        finish[idx] = np.repeat(np.asarray(t), lengths)
        served_acc[idx] = np.repeat(np.asarray(table.acc)[np.asarray(sub)], lengths)
    for m, done, s in members:
        finish[m] = done
        served_acc[m] = table.acc[s]
    return finish, served_acc


def _result(arr: np.ndarray, finish: np.ndarray, served_acc: np.ndarray, slo: float,
            wall: float, batches: int, items: int, lost: int,
            log: list[tuple[float, int, int, int]]) -> SimResult:
    n = len(arr)
    latency = finish - arr
    completed = ~np.isnan(finish)
    met = completed & (np.nan_to_num(latency, nan=np.inf) <= slo + 1e-12)
    in_slo = int(np.count_nonzero(met))
    lat_ms = latency[completed] * 1e3
    return SimResult(
        requests=n, completed_in_slo=in_slo,
        completed_late=int(np.count_nonzero(completed)) - in_slo,
        dropped=int(n - np.count_nonzero(completed)),
        slo_attainment=in_slo / n if n else 0.0,
        mean_serving_accuracy=float(served_acc[met].mean()) if in_slo else 0.0,
        latency_ms_p50=float(np.percentile(lat_ms, 50)) if lat_ms.size else None,
        latency_ms_p99=float(np.percentile(lat_ms, 99)) if lat_ms.size else None,
        wall_s=wall, requests_per_wall_s=n / wall if wall > 0 else math.inf,
        batches=batches, mean_batch_size=items / batches if batches else 0.0,
        lost_batches=lost, batch_log=log)

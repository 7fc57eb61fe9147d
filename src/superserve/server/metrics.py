"""Prometheus metrics, counted where requests become terminal (the router's listener hook).

SLO attainment is counted on the client's clock: a completed request meets its SLO when the
last byte of its response was written by its deadline (first byte + SLO), which the front
end reports after writing (`on_written`); a request that ended any other way is a miss when
it ends. The calibration gauges show what the router plans with (scheduling/calibration.py).

Each server gets its own CollectorRegistry, so several servers (tests) never collide.
Queue depth, workers alive and the calibration gauges are read at scrape time (nothing on the
hot path), on the event loop, which owns that state; the text is then rendered off the loop
(`render_async`, server/offload.py). The loop's own lag is sampled by a cheap periodic timer
(`LoopLagMonitor`).
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from superserve.runtime.router import InferenceResult
from superserve.types import Outcome

__all__ = ["CONTENT_TYPE", "LoopLagMonitor", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0,
                      2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)


class LoopLagMonitor:
    """How late the event loop runs a timer due every `interval_s`: time it spent on something
    else (a blocking call, a long callback) that every request waited behind. One callback
    per interval (~3 us: ~0.01 % of a core at 20 Hz). A block shorter than the interval is
    seen in part (the part after the timer fell due) or not at all; one longer is seen within
    `interval_s` of its length. `recent_max_s` is the worst lag of the last 1-2 windows."""

    def __init__(self, histogram: Histogram, interval_s: float = 0.05,
                 window_s: float = 30.0) -> None:
        self.histogram = histogram
        self.interval_s = interval_s
        self.window_s = window_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._window_end = 0.0
        self._max_now = 0.0
        self._max_prev = 0.0
        self.samples = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop()
        self._loop = loop
        self._due = time.monotonic() + self.interval_s
        self._window_end = self._due + self.window_s
        self._handle = loop.call_later(self.interval_s, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def recent_max_s(self) -> float:
        return max(self._max_now, self._max_prev)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        # time.monotonic, not loop.time(): uvloop's is a cached ms clock, stale by as much
        # as the iteration that ran before this timer (the very lag measured here)
        now = time.monotonic()
        lag = max(now - self._due, 0.0)  # a loop may run a timer a bit early
        self.histogram.observe(lag)
        self.samples += 1
        if now >= self._window_end:
            self._max_prev, self._max_now = self._max_now, 0.0
            self._window_end = now + self.window_s
        self._max_now = max(self._max_now, lag)
        self._due = now + self.interval_s
        self._handle = loop.call_later(self.interval_s, self._tick)


class _LoopHistogram:
    """A histogram observed on the event loop only: a bisect and two additions (~0.3 us),
    where prometheus-client's takes a lock per bucket update (~2 us); exported by
    `_LoopOwned` from a copy taken on the loop at scrape time."""

    __slots__ = ("bounds", "counts", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def family(self, counts: list[int], total: float) -> Any:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        cum, buckets = 0, []
        for bound, n in zip((*self.bounds, math.inf), counts):
            cum += n
            buckets.append((floatToGoString(bound), cum))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


class _LoopCounter:
    """A counter (optionally by one label) incremented on the event loop only."""

    __slots__ = ("doc", "label", "name", "values")

    def __init__(self, name: str, doc: str, label: str | None = None) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.values: dict[str, float] = {}

    def family(self, values: dict[str, float]) -> Any:
        from prometheus_client.core import CounterMetricFamily

        if self.label is None:
            return CounterMetricFamily(self.name, self.doc, value=values.get("", 0.0))
        f = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for key, v in sorted(values.items()):
            f.add_metric([key], v)
        return f


class _LoopOwned:
    """The per-request and per-batch series, kept as plain numbers by the loop and copied on
    the loop before each render (`snapshot`), so the render (on a thread) reads a consistent
    copy and the hot path takes no lock."""

    def __init__(self) -> None:
        self.histograms: list[_LoopHistogram] = []
        self.counters: list[_LoopCounter] = []
        self._copy: list[Any] = []

    def histogram(self, *args: Any) -> _LoopHistogram:
        self.histograms.append(h := _LoopHistogram(*args))
        return h

    def counter(self, *args: Any) -> _LoopCounter:
        self.counters.append(c := _LoopCounter(*args))
        return c

    def snapshot(self) -> None:
        self._copy = [*((h, list(h.counts), h.sum) for h in self.histograms),
                      *((c, dict(c.values)) for c in self.counters)]

    def collect(self) -> Any:
        for item in self._copy:
            yield item[0].family(*item[1:])


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float], workers_alive: Callable[[], float],
                 router: Any = None) -> None:
        r = self.registry = CollectorRegistry()
        # what every request and batch updates: plain numbers owned by the loop (no lock on
        # the hot path), exported from a copy taken at scrape time
        own = self._own = _LoopOwned()
        self.requests = own.counter("superserve_requests", "Requests by terminal outcome",
                                    "outcome")
        self._outcomes = self.requests.values
        for o in Outcome:
            self._outcomes[o.value] = 0.0
        self.deadline_met = own.counter("superserve_requests_deadline_met",
                                        "Requests whose response was written within their "
                                        "SLO (first byte to last byte)")
        self.edge_latency = own.histogram("superserve_request_edge_latency_seconds",
                                          "First byte received to last byte written, "
                                          "completed requests", _LATENCY_BUCKETS_S)
        self.latency = own.histogram("superserve_request_latency_seconds",
                                     "End-to-end latency inside the server, completed "
                                     "requests", _LATENCY_BUCKETS_S)
        self.queue_time = own.histogram("superserve_queue_time_seconds",
                                        "Arrival to dispatch of completed requests",
                                        _LATENCY_BUCKETS_S)
        self.batch_size = own.histogram("superserve_batch_size", "Images per dispatched batch",
                                        _BATCH_BUCKETS)
        self.subnet_requests = own.counter("superserve_subnet_requests",
                                           "Completed requests per serving subnet", "subnet")
        self.subnet_batches = own.counter("superserve_subnet_batches",
                                          "Dispatched batches per subnet", "subnet")
        # gauges read from loop-owned state, refreshed on the loop before each render
        self._read: list[tuple[Gauge, Callable[[], float]]] = []
        self._read_on_loop(Gauge("superserve_queue_depth", "Images waiting in the EDF queue",
                                 registry=r), queue_depth)
        self._read_on_loop(Gauge("superserve_workers_alive", "Workers ready to serve",
                                 registry=r), workers_alive)
        self._total = 0
        self._met = 0
        self._read_on_loop(Gauge("superserve_slo_attainment",
                                 "Responses written within the deadline / all requests, since "
                                 "start", registry=r),
                           lambda: self._met / self._total if self._total else 1.0)
        self.loop_lag = LoopLagMonitor(Histogram(
            "superserve_event_loop_lag_seconds", "How late the event loop ran a timer due "
            "every 50 ms (time spent blocked on one piece of work)", buckets=_LAG_BUCKETS_S,
            registry=r))
        self._read_on_loop(Gauge("superserve_event_loop_lag_max_seconds",
                                 "Worst event-loop lag of the last 30-60 s", registry=r),
                           lambda: self.loop_lag.recent_max_s)
        try:  # built inside the server's loop: sample it for as long as it runs
            self.loop_lag.start(asyncio.get_running_loop())
        except RuntimeError:
            pass
        self.batch_ratio = own.histogram(
            "superserve_calibration_batch_ratio",
            "Observed / planned (predicted) time of each batch, dispatch to result",
            (0.1, 0.25, 0.5, *[round(0.6 + 0.05 * k, 2) for k in range(17)], 1.5, 2.0, 3.0,
             5.0))
        self._snapshots: list[Callable[[], None]] = [own.snapshot]
        r.register(own)
        if router is not None:
            self._router_gauges(r, router)

    def _router_gauges(self, r: CollectorRegistry, router: Any) -> None:
        holds = self._own.counter("superserve_batch_holds",
                                  "Times an idle worker held its next batch for company "
                                  "(the batch wait, --batch-wait-ms)")
        late = self._own.counter("superserve_late_at_door",
                                 "Requests refused as late (504) before their bodies were "
                                 "decoded: their SLO was spent when their last byte was read "
                                 "(--late-at-door)")
        plans = self._own.counter("superserve_plans",
                                  "Dispatched batches by the policy rule that planned them "
                                  "(SlackFit: front, fastest, light, rate, guard, bucket; "
                                  "docs/scheduling.md, \"Which rule planned a batch\")",
                                  "rule")
        stats = getattr(router, "stats", None)  # duck-typed routers may keep none

        def copy_counts() -> None:
            holds.values[""] = float(getattr(stats, "holds", 0))
            late.values[""] = float(getattr(stats, "late_at_door", 0))
            plans.values.update(getattr(stats, "plans", {}))

        self._snapshots.insert(0, copy_counts)  # before the loop-owned series are copied
        m = router.calibration
        fb = getattr(router, "feedback", None)  # MissFeedback, or None when off
        gauges = [  # (name, help, read at scrape time)
            ("plan_scale", "Planned batch cost = this x profiled latency + plan overhead",
             lambda: router.latency_scale),
            ("plan_overhead_seconds", "Per-batch reserve planned on top",
             lambda: router.overhead_s),
            ("fit_scale", "Fitted scale of the worker's compute", lambda: m.scale),
            ("fit_overhead_seconds", "Fitted fixed part of the worker's compute",
             lambda: m.overhead_s),
            ("tail_factor", "Multiplicative margin (1.15 until 16 batches, then 1)",
             lambda: m.tail),
            ("reserve_seconds", "High quantile (--calibration-quantile) of observed - fitted batch time", lambda: m.reserve_s),
            ("transport_seconds", "Median dispatch-to-result beyond the worker's compute",
             lambda: m.transport_s),
            ("response_tail_seconds", ("High quantile of resolve to last byte written, at a "
                                       "batch's first position"),
             lambda: router.response_tail_s),
            ("response_per_image_seconds", ("What each response written before it adds to a "
                                            "response's tail (a batch of b plans "
                                            "response_tail + this x (b - 1))"),
             lambda: getattr(router, "response_per_image_s", 0.0)),
            ("batches", "Batches the calibration has seen", lambda: m.samples),
            ("steps", ("Steps in the worker's compute cost detected (old evidence cut: a "
                       "co-tenant started or stopped, the machine stalled)"),
             lambda: getattr(m, "steps_detected", 0)),
            ("last_predicted_seconds", "Planned time of the last batch",
             lambda: m.last_predicted_s),
            ("last_observed_seconds", "Observed time of the last batch",
             lambda: m.last_observed_s),
            ("last_compute_seconds", "The worker's own compute time of the last batch",
             lambda: router.last_compute_s),
            ("probe_factor", "Start-up check: measured / profiled latency (0: not measured)",
             lambda: router.probe_factor or 0.0),
            ("rate_boost", ("Miss feedback: multiplier on SlackFit's rate-guard headroom "
                            "(1: no recent misses)"), lambda: 1.0 if fb is None else fb.boost),
            ("miss_fraction", ("Miss feedback: recent fraction of requests late, dropped or "
                               "refused"),
             lambda: 0.0 if fb is None else fb.miss_fraction(router.clock.now())),
            ("entry_share", ("Share of its SLO the newest request had left when it reached "
                             "the router (below SlackFit's front= share: a front end behind)"),
             lambda: getattr(router, "entry_share", 1.0)),
            ("front_end_behind", ("1 while SlackFit's front-end rule binds: it plans like the "
                                  "fastest fixed subnet until requests reach the router in "
                                  "time"),
             lambda: float(getattr(router, "front_end_behind", False))),
        ]
        for name, doc, fn in gauges:
            self._read_on_loop(Gauge(f"superserve_calibration_{name}", doc, registry=r), fn)

    def _read_on_loop(self, gauge: Gauge, fn: Callable[[], float]) -> None:
        self._read.append((gauge, fn))

    def refresh(self) -> None:
        """Read the loop-owned state into the gauges (on the loop, before rendering)."""
        for gauge, fn in self._read:
            gauge.set(fn())
        for refresh in self._snapshots:
            refresh()

    def track_live_workers(self, live_by_node: Callable[[], dict[str, int]]) -> None:
        """`superserve_workers_live{node=...}`: workers ready to serve per node (a Ray node's
        IP, "local" for worker processes), read at scrape time (server/admin.py)."""
        from prometheus_client.core import GaugeMetricFamily

        seen: dict[str, int] = {}

        def refresh() -> None:  # on the loop (`refresh`); collect may run on a thread
            seen.clear()
            seen.update(live_by_node())

        class _PerNode:
            def collect(self) -> Any:
                g = GaugeMetricFamily("superserve_workers_live",
                                      "Workers ready to serve, per node", labels=["node"])
                for node, n in sorted(seen.items()):
                    g.add_metric([node], n)
                yield g

        refresh()
        self._snapshots.append(refresh)
        self.registry.register(_PerNode())

    # RouterListener
    def on_terminal(self, result: InferenceResult) -> None:
        self._outcomes[result.outcome.value] += 1
        if result.outcome is Outcome.COMPLETED:
            self.latency.observe(result.latency_s)
            self.queue_time.observe(result.queue_s)
            per = self.subnet_requests.values
            key = str(result.subnet_id)
            per[key] = per.get(key, 0.0) + 1
        else:
            self._total += 1  # a miss whenever its answer is written

    def on_written(self, result: InferenceResult) -> None:
        if result.outcome is not Outcome.COMPLETED:
            return
        self._total += 1
        if math.isfinite(result.written_s):  # inf: the answer never went out whole
            self.edge_latency.observe(result.written_s - result.arrival_s)
        if result.met_on_client_clock:
            self._met += 1
            self.deadline_met.values[""] = float(self._met)

    def on_batch_timing(self, observed_s: float, predicted_s: float) -> None:
        if predicted_s > 0:
            self.batch_ratio.observe(observed_s / predicted_s)

    def on_batch(self, subnet_id: int, batch_size: int) -> None:
        self.batch_size.observe(batch_size)
        per = self.subnet_batches.values
        key = str(subnet_id)
        per[key] = per.get(key, 0.0) + 1

    def render(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """`render` with the text built off the loop (a few hundred series: ~1-3 ms of pure
        Python; counters and histograms are thread-safe, loop state was read first)."""
        from superserve.server.offload import MODE, run_blocking

        self.refresh()
        if MODE == "off":
            return generate_latest(self.registry)
        return await run_blocking(generate_latest, self.registry)

    def close(self) -> None:
        self.loop_lag.stop()

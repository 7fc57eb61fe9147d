"""Prometheus metrics, counted where requests become terminal (the router's listener hook).

SLO attainment is counted on the client's clock: a completed request meets its SLO when the
last byte of its response was written by its deadline (first byte + SLO), which the front
end reports after writing (`on_written`); a request that ended any other way is a miss when
it ends. The calibration gauges show what the router plans with (scheduling/calibration.py).

Each server gets its own CollectorRegistry, so several servers (tests) never collide.
Queue depth and workers alive are read at scrape time, costing nothing on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from superserve.runtime.router import InferenceResult
from superserve.types import Outcome

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0,
                      2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float], workers_alive: Callable[[], float],
                 router: Any = None) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("superserve_requests", "Requests by terminal outcome",
                                ["outcome"], registry=r)
        for o in Outcome:
            self.requests.labels(o.value)
        self.deadline_met = Counter("superserve_requests_deadline_met",
                                    "Requests whose response was written within their SLO "
                                    "(first byte to last byte)", registry=r)
        self.edge_latency = Histogram("superserve_request_edge_latency_seconds",
                                      "First byte received to last byte written, completed "
                                      "requests", buckets=_LATENCY_BUCKETS_S, registry=r)
        self.latency = Histogram("superserve_request_latency_seconds",
                                 "End-to-end latency inside the server, completed requests",
                                 buckets=_LATENCY_BUCKETS_S, registry=r)
        self.queue_time = Histogram("superserve_queue_time_seconds",
                                    "Arrival to dispatch of completed requests",
                                    buckets=_LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("superserve_batch_size", "Images per dispatched batch",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.subnet_requests = Counter("superserve_subnet_requests",
                                       "Completed requests per serving subnet", ["subnet"],
                                       registry=r)
        self.subnet_batches = Counter("superserve_subnet_batches",
                                      "Dispatched batches per subnet", ["subnet"], registry=r)
        g = Gauge("superserve_queue_depth", "Images waiting in the EDF queue", registry=r)
        g.set_function(queue_depth)
        w = Gauge("superserve_workers_alive", "Workers ready to serve", registry=r)
        w.set_function(workers_alive)
        self._total = 0
        self._met = 0
        a = Gauge("superserve_slo_attainment",
                  "Responses written within the deadline / all requests, since start",
                  registry=r)
        a.set_function(lambda: self._met / self._total if self._total else 1.0)
        self.batch_ratio = Histogram(
            "superserve_calibration_batch_ratio",
            "Observed / planned (predicted) time of each batch, dispatch to result",
            buckets=(0.1, 0.25, 0.5, *[round(0.6 + 0.05 * k, 2) for k in range(17)], 1.5, 2.0,
                     3.0, 5.0),
            registry=r)
        if router is not None:
            self._router_gauges(r, router)

    @staticmethod
    def _router_gauges(r: CollectorRegistry, router: Any) -> None:
        m = router.calibration
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
            ("reserve_seconds", "p99 of observed - fitted compute per batch", lambda: m.reserve_s),
            ("transport_seconds", "Median dispatch-to-result beyond the worker's compute",
             lambda: m.transport_s),
            ("response_tail_seconds", "High quantile of resolve to last byte written",
             lambda: router.response_tail_s),
            ("batches", "Batches the calibration has seen", lambda: m.samples),
            ("last_predicted_seconds", "Planned time of the last batch",
             lambda: m.last_predicted_s),
            ("last_observed_seconds", "Observed time of the last batch",
             lambda: m.last_observed_s),
            ("last_compute_seconds", "The worker's own compute time of the last batch",
             lambda: router.last_compute_s),
            ("probe_factor", "Start-up check: measured / profiled latency (0: not measured)",
             lambda: router.probe_factor or 0.0),
        ]
        for name, doc, fn in gauges:
            Gauge(f"superserve_calibration_{name}", doc, registry=r).set_function(fn)

    def track_live_workers(self, live_by_node: Callable[[], dict[str, int]]) -> None:
        """`superserve_workers_live{node=...}`: workers ready to serve per node (a Ray node's
        IP, "local" for worker processes), read at scrape time (server/admin.py)."""
        from prometheus_client.core import GaugeMetricFamily

        class _PerNode:
            def collect(self) -> Any:
                g = GaugeMetricFamily("superserve_workers_live",
                                      "Workers ready to serve, per node", labels=["node"])
                for node, n in sorted(live_by_node().items()):
                    g.add_metric([node], n)
                yield g

        self.registry.register(_PerNode())

    # RouterListener
    def on_terminal(self, result: InferenceResult) -> None:
        self.requests.labels(result.outcome.value).inc()
        if result.outcome is Outcome.COMPLETED:
            self.latency.observe(result.latency_s)
            self.queue_time.observe(result.queue_s)
            self.subnet_requests.labels(str(result.subnet_id)).inc()
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
            self.deadline_met.inc()

    def on_batch_timing(self, observed_s: float, predicted_s: float) -> None:
        if predicted_s > 0:
            self.batch_ratio.observe(observed_s / predicted_s)

    def on_batch(self, subnet_id: int, batch_size: int) -> None:
        self.batch_size.observe(batch_size)
        self.subnet_batches.labels(str(subnet_id)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

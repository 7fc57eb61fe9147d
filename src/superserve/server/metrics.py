"""Prometheus metrics, counted where requests become terminal (the router's listener hook).

Each server gets its own CollectorRegistry, so several servers (tests) never collide.
Queue depth and workers alive are read at scrape time, costing nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from superserve.runtime.router import InferenceResult
from superserve.types import Outcome

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0,
                      2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float], workers_alive: Callable[[], float]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("superserve_requests", "Requests by terminal outcome",
                                ["outcome"], registry=r)
        for o in Outcome:
            self.requests.labels(o.value)
        self.deadline_met = Counter("superserve_requests_deadline_met",
                                    "Requests completed within their SLO", registry=r)
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
                  "Completed within deadline / all requests, since start", registry=r)
        a.set_function(lambda: self._met / self._total if self._total else 1.0)

    # RouterListener
    def on_terminal(self, result: InferenceResult) -> None:
        self.requests.labels(result.outcome.value).inc()
        self._total += 1
        if result.outcome is Outcome.COMPLETED:
            self.latency.observe(result.latency_s)
            self.queue_time.observe(result.queue_s)
            self.subnet_requests.labels(str(result.subnet_id)).inc()
            if result.deadline_met:
                self._met += 1
                self.deadline_met.inc()

    def on_batch(self, subnet_id: int, batch_size: int) -> None:
        self.batch_size.observe(batch_size)
        self.subnet_batches.labels(str(subnet_id)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

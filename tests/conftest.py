"""Shared fixtures for the serving tests: a small synthetic ProfileTable and a minimal
deadline-aware policy, so router and server tests do not depend on trained artifacts."""

from __future__ import annotations

import contextlib

import pytest

from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.scheduling.base import Plan, QueueView

BATCHES = (1, 2, 4, 8, 16)


def serving_port(proc, model: str, lines: list[str], timeout_s: float) -> int | None:
    """Read a `superserve serve` subprocess's output until it says it serves `model` over HTTP:
    that port, or None when it exits or `timeout_s` passes first. Every line read is appended
    to `lines` (for the failure message)."""
    import re
    import time

    pattern = re.compile(rf"serving '{re.escape(model)}' on http://127\.0\.0\.1:(\d+)")
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            return None
        lines.append(line)
        m = pattern.search(line)
        if m:
            return int(m.group(1))
    return None


def synthetic_table() -> ProfileTable:
    """Three subnets: fast/inaccurate to slow/accurate. Latency = base + per_image * B."""
    rows = [(0.90, 1.0, 0.25), (0.95, 2.0, 0.5), (0.99, 4.0, 1.0)]  # acc, base ms, ms/image
    subnets = [SubnetProfile(id=i, spec={"family": "fake", "level": i}, accuracy=acc,
                             latency_ms={b: base + per * b for b in BATCHES})
               for i, (acc, base, per) in enumerate(rows)]
    return ProfileTable.build("resnet", subnets, BATCHES, device="cpu", threads=1)


class GreedyPolicy:
    """Test-local stand-in for SlackFit: the most accurate subnet whose latency at the batch
    it would take fits the slack; otherwise the fastest subnet at the largest batch that fits."""

    name = "greedy"

    def __init__(self, table: ProfileTable) -> None:
        self.table = table

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        t = self.table
        slack = (view.head_deadline_s - now_s - view.overhead_s) / view.latency_scale
        b = min(view.length, t.max_batch)
        for s in sorted(range(len(t)), key=lambda i: -t.acc[i]):
            if t.latency_s(s, b) <= slack:
                return Plan(subnet=s, batch_size=b)
        fits = [bb for bb in t.batch_sizes if t.latency_s(0, bb) <= slack]
        return Plan(subnet=0, batch_size=max(fits) if fits else 1)


class RecordingPolicy(GreedyPolicy):
    """GreedyPolicy that keeps every view it is asked to plan for (`views`)."""

    def __init__(self, table: ProfileTable) -> None:
        super().__init__(table)
        self.views: list[QueueView] = []

    def decide(self, view: QueueView, now_s: float) -> Plan | None:
        self.views.append(view)
        return super().decide(view, now_s)


@pytest.fixture
def table() -> ProfileTable:
    return synthetic_table()


def make_test_policy(table: ProfileTable, spec: str = "slackfit"):
    """The shared policy objects, the very ones the simulator runs."""
    from superserve.scheduling import make_policy

    return make_policy(spec, table)


class ServerThread:
    """A real server (REST + gRPC on ephemeral 127.0.0.1 ports) on its own event loop in a
    background thread, so synchronous clients (tritonclient) can call it from the test.
    `make_pool(table, clock)` builds the worker pool inside that loop."""

    def __init__(self, table, make_pool, policy: str = "slackfit", **cfg_kw) -> None:
        import asyncio
        import threading

        from superserve.server.config import ServeConfig

        self.table = table
        self.cfg = ServeConfig(http_port=0, grpc_port=0, **cfg_kw)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._make_pool = make_pool
        self._policy = policy
        self.running = self.call(self._start(), timeout=60)
        self.http = f"http://127.0.0.1:{self.running.http_port}"
        self.grpc = f"127.0.0.1:{self.running.grpc_port}"

    async def _start(self):
        from superserve.runtime.clock import LoopClock
        from superserve.server.app import start_server

        pool = self._make_pool(self.table, LoopClock())
        from superserve.scheduling import make_policy

        policy = make_policy(self._policy, self.table, slo_s=self.cfg.default_slo_s)
        running = await start_server(self.cfg, self.table, policy, pool)
        await running.wait_ready(30)
        return running

    def call(self, coro, timeout=30):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.running.stop(drain_timeout_s=2.0), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@contextlib.contextmanager
def socket_wait_server(monkeypatch, wait_s: float, settle_s: float = 0.2, **cfg_kw):
    """A real server (fake pool, one worker) on which every request's bytes read as having
    waited `wait_s` in the kernel's socket buffer before the loop read them (a stand-in for a
    busy loop), and an HTTP connection to it, opened `settle_s` before it is handed out:
    yields (server, connection)."""
    import http.client
    import time

    from superserve.runtime.fake import FakePool
    from superserve.server import rx_wait

    monkeypatch.setattr(rx_wait, "socket_wait_reader", lambda sock: (lambda: wait_s))
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1), **cfg_kw)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.running.http_port, timeout=10)
        conn.connect()
        time.sleep(settle_s)
        try:
            yield s, conn
        finally:
            conn.close()
    finally:
        s.close()

"""A profile-driven fake worker pool: no compute, latency from the ProfileTable.

Each batch "runs" for `table.latency_s(subnet, B) + load_s` on the injected clock and returns
logits whose argmax is the subnet id (so tests can see which subnet answered). With a
`ManualClock` the router is tested without processes, sockets or sleeps; with a `LoopClock`
the same fake serves a real HTTP/gRPC front end in tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from superserve.profiling.table import ProfileTable
from superserve.runtime.clock import Clock, TimerHandle
from superserve.runtime.protocol import BatchTask, PoolListener

__all__ = ["FakePool"]


class FakePool:
    def __init__(self, table: ProfileTable, clock: Clock, n_workers: int = 1,
                 startup_s: float = 0.0, restart_s: float = 0.05, num_classes: int = 10,
                 latency_scale: float = 1.0) -> None:
        self.table = table
        self.clock = clock
        self.n_workers = n_workers
        self.startup_s = startup_s
        self.restart_s = restart_s
        self.num_classes = num_classes
        self.latency_scale = latency_scale  # 0 makes a no-compute, no-latency worker
        self._listener: PoolListener | None = None
        self._alive: set[int] = set()
        self._pending: dict[int, TimerHandle] = {}
        self.submitted: list[tuple[int, BatchTask]] = []
        self.fail_next: str | None = None  # make the next batch fail with this message
        self._ids = n_workers  # the next id add_worker gives (ids are never reused)
        self._removed: set[int] = set()

    def start(self, listener: PoolListener) -> None:
        self._listener = listener
        for wid in range(self.n_workers):
            self._schedule_ready(wid, self.startup_s)

    def _schedule_ready(self, wid: int, delay_s: float) -> None:
        def ready() -> None:
            if wid in self._removed:
                return
            self._alive.add(wid)
            assert self._listener is not None
            self._listener.worker_ready(wid)

        self.clock.call_at(self.clock.now() + delay_s, ready)

    def submit(self, worker_id: int, task: BatchTask) -> None:
        assert worker_id in self._alive and worker_id not in self._pending, worker_id
        self.submitted.append((worker_id, task))
        n = len(task.images)
        service_s = self.table.latency_s(task.subnet, n) * self.latency_scale + task.load_s
        fail, self.fail_next = self.fail_next, None

        def done() -> None:
            self._pending.pop(worker_id, None)
            assert self._listener is not None
            if fail is not None:
                self._listener.batch_failed(worker_id, task.batch_id, fail)
                return
            logits = np.zeros((n, self.num_classes), dtype=np.float32)
            logits[:, task.subnet % self.num_classes] = 1.0
            self._listener.batch_done(worker_id, task.batch_id, logits, service_s)

        self._pending[worker_id] = self.clock.call_at(self.clock.now() + service_s, done)

    def kill(self, worker_id: int) -> None:
        """Simulate kill -9: the batch in flight is lost, the worker restarts later."""
        h = self._pending.pop(worker_id, None)
        if h is not None:
            h.cancel()
        self._alive.discard(worker_id)
        assert self._listener is not None
        self._listener.worker_lost(worker_id, "killed")
        self._schedule_ready(worker_id, self.restart_s)

    # membership (server/admin.py), as the real pools: an added worker is ready after
    # `startup_s`; a removed one is gone for good and reported lost (its batch, if any,
    # re-queued by the router)
    def add_worker(self) -> int:
        wid, self._ids = self._ids, self._ids + 1
        self.n_workers += 1
        self._schedule_ready(wid, self.startup_s)
        return wid

    def remove_worker(self, worker_id: int) -> None:
        if not 0 <= worker_id < self._ids:
            raise KeyError(worker_id)
        if worker_id in self._removed:
            return
        self._removed.add(worker_id)
        self.n_workers -= 1
        h = self._pending.pop(worker_id, None)
        if h is not None:
            h.cancel()
        self._alive.discard(worker_id)
        assert self._listener is not None
        self._listener.worker_lost(worker_id, "removed by the operator")

    def members(self) -> dict[int, dict[str, Any]]:
        return {wid: {"state": "ready" if wid in self._alive else "starting", "node": "local",
                      "pid": None}
                for wid in range(self._ids) if wid not in self._removed}

    def busy(self, worker_id: int) -> bool:
        return worker_id in self._pending

    def alive(self) -> int:
        return len(self._alive)

    async def close(self) -> None:
        for h in self._pending.values():
            h.cancel()
        self._pending.clear()
        self._alive.clear()


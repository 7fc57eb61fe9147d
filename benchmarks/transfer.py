"""Batch transfer between the router and a worker process: pipe (pickled) vs shared memory.

A no-compute worker (kind noop) answers each batch at once, so what is timed is the trip
router -> worker -> router: staging the batch, the control message, the worker's wake-up and
read, its reply and the router's read. Per transport and image size: round-trip time per batch
(p50/p99 after warm-up) and the router process's own CPU time per batch (the part that competes
with the front end on its core).

    python benchmarks/transfer.py [--batches 300] [--batch 32] [--json]

Run it on a quiet machine; the worker is pinned to the last CPU when there are two or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import numpy as np

from superserve.runtime.pool import TRANSPORTS, LocalProcessPool
from superserve.runtime.protocol import BatchTask
from superserve.runtime.worker import WorkerConfig

SHAPES = {"28x28": (1, 28, 28), "224x224x3": (3, 224, 224)}


class _Listener:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.done: asyncio.Future[float] | None = None

    def worker_ready(self, worker_id: int) -> None:
        self.ready.set()

    def batch_done(self, worker_id: int, batch_id: int, logits: np.ndarray,
                   service_s: float) -> None:
        assert self.done is not None
        self.done.set_result(time.perf_counter())

    def batch_failed(self, worker_id: int, batch_id: int, message: str) -> None:
        assert self.done is not None
        self.done.set_exception(RuntimeError(message))

    def worker_lost(self, worker_id: int, reason: str) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError(reason))


async def measure(transport: str, shape: tuple[int, ...], batch: int, batches: int,
                  warmup: int = 20) -> dict[str, float]:
    pool = LocalProcessPool(WorkerConfig(kind="noop"), 1, restart=False, transport=transport)
    listener = _Listener()
    pool.start(listener)
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(0)
    images = rng.random((batch, *shape), dtype=np.float32)
    trips, cpu = [], []
    try:
        await asyncio.wait_for(listener.ready.wait(), 60)
        for i in range(warmup + batches):
            listener.done = loop.create_future()
            c0, t0 = time.process_time(), time.perf_counter()
            pool.submit(0, BatchTask(i, 0, images))
            t1 = await asyncio.wait_for(listener.done, 10)
            c1 = time.process_time()
            if i >= warmup:
                trips.append(t1 - t0)
                cpu.append(c1 - c0)
    finally:
        await pool.close()
    t, c = np.array(trips) * 1e6, np.array(cpu) * 1e6
    return {"transport": transport, "batch": batch, "batch_mb": images.nbytes / 2**20,
            "trip_p50_us": float(np.percentile(t, 50)), "trip_p99_us": float(np.percentile(t, 99)),
            "router_cpu_us": float(c.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = os.cpu_count() or 1
    if n >= 2 and hasattr(os, "sched_setaffinity"):
        os.environ.setdefault("SUPERSERVE_WORKER_CPUS", str(n - 1))
        os.sched_setaffinity(0, {0})
    rows = []
    for name, shape in SHAPES.items():
        for transport in TRANSPORTS:
            row = asyncio.run(measure(transport, shape, args.batch, args.batches))
            row["images"] = name
            rows.append(row)
            if not args.json:
                print(f"{name:>10} b{args.batch} ({row['batch_mb']:.1f} MiB) {transport:>4}: "
                      f"round trip p50 {row['trip_p50_us']:8.0f} us  p99 "
                      f"{row['trip_p99_us']:8.0f} us  router CPU {row['router_cpu_us']:7.0f} "
                      "us/batch", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

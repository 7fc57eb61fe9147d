"""Per-batch overhead: a Ray actor vs a local worker process, on the same event loop.

The worker does nothing (`noop` kind: logits at once), so what is timed is the path a batch
takes from `pool.submit` to the router's `batch_done` callback on the event loop: pickling,
the pipe (local) or Ray's task submission, argument transfer (inline below Ray's 100 KiB
direct-call limit, the object store above it) and the awaited ObjectRef coming back.

    python benchmarks/ray_overhead.py [--batches 1 32 128] [--n 400] [--warmup 50] [--json OUT]

Ray runs as a local one-node cluster on 127.0.0.1 started here (stopped at the end). Both
pools are measured interleaved in rounds, so load from other processes hits both alike.
Reported: p50 / p99 / mean in microseconds per batch size and backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only


class _Timer:
    """A PoolListener that resolves one future per batch."""

    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.wait: dict[int, asyncio.Future[float]] = {}

    def worker_ready(self, wid):
        self.ready.add(wid)

    def batch_done(self, wid, bid, logits, service_s):
        self.wait.pop(bid).set_result(time.perf_counter())

    def batch_failed(self, wid, bid, message):
        self.wait.pop(bid).set_exception(RuntimeError(message))

    def worker_lost(self, wid, reason):
        raise RuntimeError(f"worker lost during the benchmark: {reason}")


async def _round_trip(pool, timer: _Timer, bid: int, images: np.ndarray) -> float:
    from superserve.runtime.protocol import BatchTask

    fut = asyncio.get_running_loop().create_future()
    timer.wait[bid] = fut
    t0 = time.perf_counter()
    pool.submit(0, BatchTask(bid, 0, images))
    return (await fut) - t0


async def main(args: argparse.Namespace) -> dict:
    from superserve.runtime.pool import LocalProcessPool
    from superserve.runtime.ray_pool import RayActorPool, RayPoolConfig
    from superserve.runtime.worker import WorkerConfig

    cfg = WorkerConfig(kind="noop")
    pools = {"local": LocalProcessPool(cfg, 1),
             "ray": RayActorPool(cfg, 1, RayPoolConfig(cpus_per_worker=1.0))}
    timers = {k: _Timer() for k in pools}
    for k, p in pools.items():
        p.start(timers[k])
    try:
        end = time.monotonic() + 120
        while not all(0 in t.ready for t in timers.values()):
            if time.monotonic() > end:
                raise TimeoutError("workers not ready in 120 s")
            await asyncio.sleep(0.05)
        out: dict = {"n": args.n, "warmup": args.warmup, "results": {}}
        bid = 0
        for b in args.batches:
            images = np.random.default_rng(0).random((b, 1, 28, 28), dtype=np.float32)
            samples: dict[str, list[float]] = {k: [] for k in pools}
            for i in range(args.warmup + args.n):
                for k, pool in pools.items():  # interleaved
                    bid += 1
                    dt = await _round_trip(pool, timers[k], bid, images)
                    if i >= args.warmup:
                        samples[k].append(dt * 1e6)
            for k, s in samples.items():
                a = np.array(s)
                out["results"][f"{k}/b{b}"] = {
                    "backend": k, "batch": b, "bytes": int(images.nbytes),
                    "p50_us": round(float(np.percentile(a, 50)), 1),
                    "p99_us": round(float(np.percentile(a, 99)), 1),
                    "mean_us": round(float(a.mean()), 1)}
        return out
    finally:
        for p in pools.values():
            await p.close()


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--n", type=int, default=400, help="timed batches per size and backend")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    res = asyncio.run(main(args))
    print(f"{'backend':8s} {'batch':>5s} {'bytes':>8s} {'p50 us':>8s} {'p99 us':>8s} "
          f"{'mean us':>8s}")
    for r in res["results"].values():
        print(f"{r['backend']:8s} {r['batch']:5d} {r['bytes']:8d} {r['p50_us']:8.1f} "
              f"{r['p99_us']:8.1f} {r['mean_us']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(cli())

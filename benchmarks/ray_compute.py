"""A worker's own compute per batch: local worker process vs Ray actor, same torch config.

Where `ray_overhead.py` times the path of a batch with a worker that does nothing, this one
times the work itself: the `service_s` each torch worker reports (its `run` call, measured
inside the worker) for one subnet of a small resnet table (`--subnet`: 0 its smallest, 1
its largest), so that a
difference in how the two kinds of process run torch (threads, OpenMP environment, shared
memory input) shows apart from transport. Pools, one worker each, measured interleaved so
load from other processes hits them alike:

    local   LocalProcessPool, batches through the shared-memory slab (the default)
    pipe    LocalProcessPool, batches pickled through the pipe
    omp1    LocalProcessPool spawned with OMP_NUM_THREADS=1 (what Ray sets for its actors)
    ray     RayActorPool on a local one-node Ray (127.0.0.1), started and stopped here

    python benchmarks/ray_compute.py [--pools local pipe omp1 ray] [--batches 1 8] [--n 300]
                                     [--subnet 0|1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
POOLS = ("local", "pipe", "omp1", "ray")


class _Listener:
    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.wait: dict[int, asyncio.Future] = {}

    def worker_ready(self, wid):
        self.ready.add(wid)

    def batch_done(self, wid, bid, logits, service_s):
        self.wait.pop(bid).set_result(service_s)

    def batch_failed(self, wid, bid, message):
        self.wait.pop(bid).set_exception(RuntimeError(message))

    def worker_lost(self, wid, reason):
        raise RuntimeError(f"worker lost during the benchmark: {reason}")


def _table(folder: Path) -> Path:
    """The shipped resnet table cut to its smallest and largest subnets at batches 1 and 8."""
    from superserve.profiling import default_table_path
    from superserve.profiling.table import ProfileTable

    src = default_table_path("resnet")
    t = ProfileTable.load(src)
    path = folder / "small.json"
    t.cut([0, len(t) - 1], (1, 8)).save(path)
    (folder / "small.norm.pt").write_bytes(src.with_suffix(".norm.pt").read_bytes())
    return path


def _pool(kind: str, cfg):
    from superserve.runtime.pool import LocalProcessPool

    if kind == "ray":
        from superserve.runtime.ray_pool import RayActorPool, RayPoolConfig

        return RayActorPool(cfg, 1, RayPoolConfig())
    return LocalProcessPool(cfg, 1, transport="pipe" if kind == "pipe" else "shm")


async def main(args: argparse.Namespace) -> dict:
    from superserve.runtime.protocol import BatchTask
    from superserve.runtime.worker import WorkerConfig

    path = _table(Path(tempfile.mkdtemp(prefix="ray-compute-")))
    cfg = WorkerConfig(kind="torch", model="resnet", table_path=str(path),
                       norm_path=str(path.with_suffix(".norm.pt")), device="cpu",
                       threads=args.threads)
    pools, listeners = {}, {}
    for kind in args.pools:
        pools[kind], listeners[kind] = _pool(kind, cfg), _Listener()
        had = os.environ.get("OMP_NUM_THREADS")
        if kind == "omp1":
            os.environ["OMP_NUM_THREADS"] = "1"  # read by the worker spawned now
        try:
            pools[kind].start(listeners[kind])
        finally:
            if kind == "omp1":
                os.environ.pop("OMP_NUM_THREADS", None)
                if had is not None:
                    os.environ["OMP_NUM_THREADS"] = had
    try:
        end = time.monotonic() + 300
        while not all(0 in lst.ready for lst in listeners.values()):
            if time.monotonic() > end:
                raise TimeoutError("workers not ready in 300 s")
            await asyncio.sleep(0.05)
        out: dict = {"info": {k: {x: v for x, v in p.info(0).items() if x != "probe"}
                              for k, p in pools.items()}, "results": {}}
        bid = 0
        for b in args.batches:
            images = np.random.default_rng(0).random((b, 1, 28, 28), dtype=np.float32)
            samples: dict[str, list[float]] = {k: [] for k in pools}
            for i in range(args.warmup + args.n):
                for k, pool in pools.items():  # interleaved
                    bid += 1
                    fut = asyncio.get_running_loop().create_future()
                    listeners[k].wait[bid] = fut
                    pool.submit(0, BatchTask(bid, args.subnet, images))
                    service_s = await fut
                    if i >= args.warmup:
                        samples[k].append(service_s * 1e3)
            for k, s in samples.items():
                a = np.array(s)
                out["results"][f"{k}/b{b}"] = {
                    "pool": k, "batch": b, "p50_ms": round(float(np.percentile(a, 50)), 3),
                    "p90_ms": round(float(np.percentile(a, 90)), 3),
                    "mean_ms": round(float(a.mean()), 3)}
        return out
    finally:
        for p in pools.values():
            await p.close()


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", nargs="+", choices=POOLS, default=list(POOLS))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--n", type=int, default=300, help="timed batches per size and pool")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--subnet", type=int, choices=[0, 1], default=1,
                    help="0: the table's smallest subnet, 1: its largest (default)")
    args = ap.parse_args()
    res = asyncio.run(main(args))
    for k, info in res["info"].items():
        print(f"{k:6s} torch threads {info.get('torch_threads')}, interop "
              f"{info.get('interop_threads')}, OMP_NUM_THREADS {info.get('omp_num_threads')}, "
              f"CPUs {info.get('cpus')}")
    print(f"{'pool':6s} {'batch':>5s} {'p50 ms':>8s} {'p90 ms':>8s} {'mean ms':>8s}")
    for r in res["results"].values():
        print(f"{r['pool']:6s} {r['batch']:5d} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} "
              f"{r['mean_ms']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())

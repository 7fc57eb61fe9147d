"""`superserve bench soak`: a long run at a steady fraction of capacity, watching for leaks.

Starts `superserve serve` (profile workers by default: batches sleep their profiled latency,
so the machine's CPU goes to the router and the client), sends a bursty open-loop stream
(gamma inter-arrivals, CV^2 = 4) at `--load` x the table's capacity in images/s, and samples, every `--sample-s`, the router's and the workers' RSS and the router's open file
descriptors. After `--warmup-s`, growth is measured from the median of the first samples to
the median of the last ones. Every request must end with a response (`lost` counts those that
got none: transport errors or client timeouts). Prints a JSON report with --json; `--plot`
writes RSS and fd curves.

The capacity (one profile worker, the fastest subnet at its best batch: ~6,700 images/s on the
shipped table) is far beyond what a Python client sends as one-image requests, so each request
carries `--images` images (default: the fewest that keep the request rate under
`--max-rate`): the router sees ~70% of its image capacity, batched as it would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--warmup-s", type=float, default=None,
                   help="excluded from growth (default: 20%% of the duration, at most 60 s)")
    p.add_argument("--load", type=float, default=0.7, help="fraction of capacity (default 0.7)")
    p.add_argument("--max-rate", type=float, default=200.0,
                   help="request rate cap, req/s (the client's own CPU; default 200)")
    p.add_argument("--images", type=int, default=0,
                   help="images per request (default 0: the fewest that reach --load x "
                        "capacity within --max-rate)")
    p.add_argument("--sample-s", type=float, default=1.0)
    p.add_argument("--slo-ms", type=float, default=100.0)
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--worker-kind", default="profile", choices=["profile", "noop", "torch"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="write RSS/fd curves to this PNG")
    p.add_argument("--json", action="store_true")


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _capacity_rps(table: Any) -> float:
    """Images per second of one worker on the fastest subnet at its best batch."""
    fastest = min(range(len(table)), key=lambda s: table.latency_s(s, 1))
    return max(b / table.latency_s(fastest, b) for b in table.batch_sizes)


def _growth(series: list[float], warm: int) -> float:
    after = series[warm:]
    if len(after) < 4:
        return 0.0
    k = max(2, len(after) // 10)
    first, last = statistics.median(after[:k]), statistics.median(after[-k:])
    return (last - first) / first if first else 0.0


async def _load(url: str, rate: float, duration_s: float, slo_ms: float, seed: int,
                statuses: Counter, lost: list[int], images: int = 1) -> int:
    """Open loop: gamma inter-arrivals (CV^2 = 4) at `rate` req/s of `images` images each,
    over the load generator's raw keep-alive HTTP client (~0.1 ms of CPU a request; httpx
    spent ~1 ms and could not keep a 200 req/s schedule on a busy 2-core machine)."""
    from superserve.bench.loadgen import LoadgenConfig, RequestRecord

    base = url.split("/v2/", 1)[0]
    cfg = LoadgenConfig(url=base, slo_ms=slo_ms, timeout_s=10.0)
    rng = np.random.default_rng(seed)
    img = rng.random((images, 1, 28, 28), dtype=np.float32)
    client = _soak_client_class()(cfg, max_connections=256)
    cv2 = 4.0  # bursty: gamma inter-arrivals with squared coefficient of variation 4
    tasks: set[asyncio.Task[None]] = set()
    sent = 0

    async def one() -> None:
        rec = RequestRecord(index=0, scheduled_s=0.0)
        try:
            await client.infer(0, img, rec)
            statuses[int(rec.status)] += 1
        except Exception as e:  # noqa: BLE001  no response: a timeout or a broken connection
            statuses[type(e).__name__] += 1
            lost.append(1)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    t = t0
    try:
        # bounded by the schedule and, should the client fall behind, by wall time too
        while t - t0 < duration_s and loop.time() - t0 < duration_s + 60:
            t += rng.gamma(1 / cv2, cv2 / rate)
            # always yield: a client that falls behind must still let its requests run
            await asyncio.sleep(max(0.0, t - loop.time()))
            task = loop.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    finally:
        await client.close()
    return sent


def _soak_client_class() -> type:
    """Built on first use: the load generator is imported only when a soak runs."""
    from superserve.bench.loadgen import _RawHttpClient

    class SoakClient(_RawHttpClient):
        """The raw client, one prebuilt request of N images (binary extension)."""

        def request(self, key: int, image: np.ndarray, batched: bool = True) -> bytes:
            return super().request(key, image, batched=True)

    return SoakClient


def run(args: argparse.Namespace) -> int:
    from superserve.bench.server_proc import ServerProcess
    from superserve.profiling.table import ProfileTable
    from superserve.server.components import resolve_table

    _, path, _ = resolve_table("resnet", args.table, check_family=False)
    image_rate = args.load * _capacity_rps(ProfileTable.load(path))
    images = args.images or max(1, math.ceil(image_rate / args.max_rate))
    rate = image_rate / images
    warmup_s = args.warmup_s if args.warmup_s is not None else min(60.0, 0.2 * args.duration)
    logdir = Path(tempfile.mkdtemp(prefix="superserve-soak-"))
    srv_args = ["--worker-kind", args.worker_kind, "--table", str(path), "--workers", "1",
                "--slo-ms", str(args.slo_ms)]
    samples: list[dict[str, float]] = []
    statuses: Counter = Counter()
    lost: list[int] = []
    with ServerProcess(srv_args, logdir / "server.log") as srv:
        router_pid = srv.proc.pid  # type: ignore[union-attr]
        url = f"{srv.http_url}/v2/models/resnet/infer"

        async def main() -> int:
            load = asyncio.ensure_future(_load(url, rate, args.duration, args.slo_ms,
                                               args.seed, statuses, lost, images))
            t0 = time.monotonic()
            while not load.done():
                workers = srv.worker_pids()
                samples.append({"t_s": time.monotonic() - t0,
                                "router_rss": _rss_bytes(router_pid),
                                "worker_rss": sum(_rss_bytes(p) for p in workers),
                                "router_fds": _fds(router_pid), "workers": len(workers)})
                await asyncio.wait([load], timeout=args.sample_s)
            return load.result()

        sent = asyncio.run(main())
        rc = srv.stop()
    warm = sum(1 for s in samples if s["t_s"] < warmup_s)
    router_rss = [s["router_rss"] for s in samples]
    fds = [s["router_fds"] for s in samples]
    answered = sum(v for k, v in statuses.items() if isinstance(k, int))
    report = {
        "duration_s": args.duration, "warmup_s": warmup_s, "rate_rps": round(rate, 1),
        "images_per_request": images, "image_rate": round(rate * images, 1),
        "requests": sent, "answered": answered, "lost": sent - answered,
        "statuses": {str(k): v for k, v in statuses.items()},
        "rss_growth_after_warmup": round(_growth(router_rss, warm), 4),
        "worker_rss_growth_after_warmup": round(
            _growth([s["worker_rss"] for s in samples], warm), 4),
        "fd_growth": int(fds[-1] - fds[warm]) if len(fds) > warm else 0,
        "router_rss_peak_mb": round(max(router_rss, default=0) / 2**20, 1),
        "samples": len(samples), "server_exit_code": rc, "server_log": str(logdir / "server.log"),
    }
    if args.plot:
        _plot(samples, warmup_s, args.plot)
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:32s} {v}")
    return 0 if report["lost"] == 0 and rc == 0 else 1


def _plot(samples: list[dict[str, float]], warmup_s: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] for s in samples]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    a.plot(t, [s["router_rss"] / 2**20 for s in samples], label="router")
    a.plot(t, [s["worker_rss"] / 2**20 for s in samples], label="workers")
    a.set_ylabel("RSS (MiB)")
    a.legend()
    b.plot(t, [s["router_fds"] for s in samples])
    b.set_ylabel("router open fds")
    b.set_xlabel("time (s)")
    for ax in (a, b):
        ax.axvline(warmup_s, color="grey", linestyle=":")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

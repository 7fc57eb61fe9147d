"""`superserve bench soak`: a long run at a steady fraction of capacity, watching for leaks.

Starts `superserve serve` (profile workers by default: batches sleep their profiled latency,
so the machine's CPU goes to the router and the client), measures the capacity of that live
server (below), sends a bursty open-loop stream (gamma inter-arrivals, CV^2 = 4) at `--load` x
that measured capacity in images/s, and samples, every `--sample-s`, the router's and the
workers' RSS and the router's open file descriptors. After `--warmup-s`, growth is measured
from the median of the first samples to the median of the last ones. Every request must end
with a response (`lost` counts those that got none: transport errors or client timeouts).
Prints a JSON report with --json; `--plot` writes RSS and fd curves.

Capacity. The table's nominal capacity (one profile worker, the fastest subnet at its best
batch: ~6,700 images/s on the shipped table) is not what the live server serves: the router
plans each batch at its calibrated cost (scale x profiled + a per-batch reserve for the pipe,
the loop and the response tail, scheduling/calibration.py), SlackFit spends slack on accuracy,
and a bursty trace brings, within one SLO, several times its mean. A soak sized on the nominal
figure ran at ~100% of the real one (10 min: 55,818 x 200, 50,922 x 504, 11,152 x 429). So the
capacity is measured on the live server first: a closed-loop run (`--probe-s`: a few clients
send the soak's request back to back) gives the sustained throughput (images answered with 200
per second, second half) and warms the router's calibration; then a short ramp of the soak's
own bursty stream, `--ramp-step-s` per step at 20%, 30%, ... 100% of that throughput, stops at
the first step that answers fewer than 99% of its requests with 200. The measured capacity is
the last step that passed; the soak runs at `--load` x that. The router's calibrated plan
(`superserve_calibration_plan_scale`, `..._plan_overhead_seconds` on /metrics) is read at the
end of each phase and reported beside it, as the capacity the router believes it has.

Each request carries `--images` images (default: the fewest that keep the request rate under
`--max-rate` at `--load` x the capacity; each ramp step sends the request the soak would send
were that step the capacity, so the ramp reaches --max-rate / --load requests a second): the
router sees its images batched as it would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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
    p.add_argument("--probe-s", type=float, default=None,
                   help="closed-loop throughput probe before the soak (default 8 s, at most "
                        "--duration; 0: no probe, run at --load x the table's nominal "
                        "capacity)")
    p.add_argument("--ramp-step-s", type=float, default=None,
                   help="seconds per step of the bursty ramp after the probe (default 5, "
                        "shorter for a soak under 50 s)")
    p.add_argument("--sample-s", type=float, default=1.0)
    p.add_argument("--slo-ms", type=float, default=100.0)
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--worker-kind", default="profile", choices=["profile", "noop", "torch"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="write RSS/fd curves to this PNG (no value: soak.png beside the "
                        "server log)")
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


def _capacity_rps(table: Any, scale: float = 1.0, overhead_s: float = 0.0) -> float:
    """Images per second of one worker on the fastest subnet at its best batch, each batch
    costing `scale` x its profiled latency + `overhead_s` (defaults: the table as is)."""
    fastest = min(range(len(table)), key=lambda s: table.latency_s(s, 1))
    return max(b / (scale * table.latency_s(fastest, b) + overhead_s)
               for b in table.batch_sizes)


def _calibration(metrics_text: str) -> dict[str, float]:
    """The `superserve_calibration_*` gauges of a /metrics text, by their short name."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^superserve_calibration_(\w+) (\S+)$", metrics_text, re.MULTILINE)}


def _outcomes(statuses: Counter) -> dict[str, int]:
    """Statuses as the client saw them, by terminal outcome (loadgen's names)."""
    out = dict.fromkeys(("completed", "dropped_deadline", "rejected", "failed", "lost"), 0)
    for k, v in statuses.items():
        if not isinstance(k, int):
            out["lost"] += v
        elif k == 200:
            out["completed"] += v
        elif k == 504:
            out["dropped_deadline"] += v
        elif k in (429, 503):
            out["rejected"] += v
        else:
            out["failed"] += v
    return out


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


RAMP = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # x the closed-loop throughput
RAMP_OK = 0.99  # a step passes when this fraction of its requests got 200


async def _closed_loop(base_url: str, table: Any, images: int, slo_ms: float,
                       duration_s: float) -> tuple[float, Counter]:
    """Enough clients to keep ~6 of the largest batches' images in flight send the soak's
    request back to back for `duration_s`: images answered with 200 per second over the
    second half (the first warms the router's calibration), and the statuses."""
    from superserve.bench.loadgen import LoadgenConfig, RequestRecord

    cfg = LoadgenConfig(url=base_url, slo_ms=slo_ms, timeout_s=10.0)
    concurrency = max(2, math.ceil(6 * max(table.batch_sizes) / images))
    client = _soak_client_class()(cfg, max_connections=concurrency)
    img = np.random.default_rng(0).random((images, 1, 28, 28), dtype=np.float32)
    statuses: Counter = Counter()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ok_after_half = 0

    async def sender() -> None:
        nonlocal ok_after_half
        while loop.time() - t0 < duration_s:
            rec = RequestRecord(index=0, scheduled_s=0.0)
            try:
                await client.infer(0, img, rec)
                statuses[int(rec.status)] += 1
                if rec.status == "200" and loop.time() - t0 >= duration_s / 2:
                    ok_after_half += images
            except Exception as e:  # noqa: BLE001  counted, as in the soak
                statuses[type(e).__name__] += 1

    try:
        await client.prepare(concurrency)
        await asyncio.gather(*(sender() for _ in range(concurrency)))
    finally:
        await client.close()
    return ok_after_half / (duration_s / 2), statuses


async def _planned(base_url: str, table: Any) -> float:
    """The capacity the router plans with now, from its /metrics calibration gauges."""
    import httpx

    async with httpx.AsyncClient(timeout=30.0) as http:
        g = _calibration((await http.get(f"{base_url}/metrics")).text)
    if "plan_scale" not in g or "plan_overhead_seconds" not in g:
        return math.nan
    return _capacity_rps(table, g["plan_scale"], g["plan_overhead_seconds"])


async def _probe(base_url: str, table: Any, shape: Callable[[float], int], slo_ms: float,
                 probe_s: float, step_s: float, seed: int) -> dict[str, Any]:
    """Measure the live server's capacity in images/s (module docstring): closed loop, then
    the bursty ramp. `capacity` is the last ramp step that passed (0: none did). `shape`
    maps an image rate to the images per request the soak would send at that rate, so the
    step that sets the capacity ran the soak's own request."""
    closed, closed_statuses = await _closed_loop(base_url, table, shape(_capacity_rps(table)),
                                                 slo_ms, probe_s)
    out: dict[str, Any] = {"closed_loop": closed, "closed_loop_outcomes":
                           _outcomes(closed_statuses),
                           "calibrated_after_closed_loop": await _planned(base_url, table),
                           "ramp": [], "capacity": 0.0}
    url = f"{base_url}/v2/models/resnet/infer"
    for k, f in enumerate(RAMP if closed > 0 else ()):
        statuses: Counter = Counter()
        images = shape(f * closed)
        sent = await _load(url, f * closed / images, step_s, slo_ms, seed + 1 + k, statuses,
                           [], images)
        ok = statuses.get(200, 0) / sent if sent else 0.0
        out["ramp"].append({"images_per_s": round(f * closed, 1), "images_per_request": images,
                            "requests": sent, "ok": round(ok, 4)})
        if ok < RAMP_OK:
            break
        out["capacity"] = f * closed
    out["calibrated_after_ramp"] = await _planned(base_url, table)
    return out


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
    table = ProfileTable.load(path)
    nominal = _capacity_rps(table)

    def shape(image_rate: float) -> int:
        """Images per request at `image_rate` x --load: the fewest under --max-rate."""
        return args.images or max(1, math.ceil(args.load * image_rate / args.max_rate))

    probe_s = min(8.0, args.duration) if args.probe_s is None else args.probe_s
    step_s = (min(5.0, max(1.0, args.duration / 10)) if args.ramp_step_s is None
              else args.ramp_step_s)
    warmup_s = args.warmup_s if args.warmup_s is not None else min(60.0, 0.2 * args.duration)
    logdir = Path(tempfile.mkdtemp(prefix="superserve-soak-"))
    srv_args = ["--worker-kind", args.worker_kind, "--table", str(path), "--workers", "1",
                "--slo-ms", str(args.slo_ms)]
    samples: list[dict[str, float]] = []
    statuses: Counter = Counter()
    lost: list[int] = []
    probe: dict[str, Any] = {}
    with ServerProcess(srv_args, logdir / "server.log") as srv:
        router_pid = srv.proc.pid  # type: ignore[union-attr]
        url = f"{srv.http_url}/v2/models/resnet/infer"
        if probe_s > 0:
            probe = asyncio.run(_probe(srv.http_url, table, shape, args.slo_ms, probe_s,
                                       step_s, args.seed))
        measured = probe.get("capacity", nominal)
        if not measured > 0:
            srv.stop()
            print(f"soak: no capacity measured: {json.dumps(probe)}; see "
                  f"{logdir / 'server.log'}", file=sys.stderr)
            return 1
        image_rate = args.load * measured
        images = shape(measured)
        rate = image_rate / images
        print(f"soak: capacity nominal {nominal:,.0f} images/s, measured {measured:,.0f} "
              f"(closed loop {probe.get('closed_loop', math.nan):,.0f}, calibrated plan "
              f"{probe.get('calibrated_after_ramp', math.nan):,.0f}); {args.duration:.0f} s at "
              f"{rate:.1f} req/s x {images} images", file=sys.stderr, flush=True)

        async def main() -> int:
            load = asyncio.ensure_future(_load(url, rate, args.duration, args.slo_ms,
                                               args.seed, statuses, lost, images))
            t0 = time.monotonic()
            while not load.done():
                workers = srv.worker_pids()
                samples.append({"t_s": time.monotonic() - t0,
                                "router_rss": _rss_bytes(router_pid),
                                "worker_rss": sum(_rss_bytes(p) for p in workers),
                                "router_fds": _fds(router_pid), "workers": len(workers),
                                # cumulative, so a step in RSS can be set beside the
                                # requests that were refused or dropped around it
                                "ok": statuses.get(200, 0),
                                "not_ok": sum(statuses.values()) - statuses.get(200, 0)})
                await asyncio.wait([load], timeout=args.sample_s)
            return load.result()

        sent = asyncio.run(main())
        rc = srv.stop()
    warm = sum(1 for s in samples if s["t_s"] < warmup_s)
    router_rss = [s["router_rss"] for s in samples]
    fds = [s["router_fds"] for s in samples]
    answered = sum(v for k, v in statuses.items() if isinstance(k, int))
    report = {
        "duration_s": args.duration, "warmup_s": warmup_s, "load": args.load,
        "capacity_nominal": round(nominal, 1), "capacity_measured": round(measured, 1),
        "capacity_probe": {k: ((round(v, 1) if math.isfinite(v) else None)
                               if isinstance(v, float) else v) for k, v in probe.items()},
        "rate_rps": round(rate, 1), "images_per_request": images,
        "image_rate": round(rate * images, 1),
        "requests": sent, "answered": answered, "lost": sent - answered,
        "outcomes": _outcomes(statuses),
        "statuses": {str(k): v for k, v in statuses.items()},
        "rss_growth_after_warmup": round(_growth(router_rss, warm), 4),
        "worker_rss_growth_after_warmup": round(
            _growth([s["worker_rss"] for s in samples], warm), 4),
        "fd_growth": int(fds[-1] - fds[warm]) if len(fds) > warm else 0,
        "router_rss_peak_mb": round(max(router_rss, default=0) / 2**20, 1),
        "samples": len(samples), "samples_csv": _write_samples(samples, logdir),
        "server_exit_code": rc,
        "load_avg_1m": round(os.getloadavg()[0], 2), "server_log": str(logdir / "server.log"),
    }
    if args.plot is not None:
        plot = args.plot or str(logdir / "soak.png")
        _plot(samples, warmup_s, plot)
        report["plot"] = plot
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:32s} {v}")
    return 0 if report["lost"] == 0 and rc == 0 else 1


def _write_samples(samples: list[dict[str, float]], logdir: Path) -> str:
    """Every sample, one CSV row (t_s, RSS in bytes, fds, cumulative 200s and others)."""
    import csv

    path = logdir / "samples.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0]) if samples else ["t_s"])
        w.writeheader()
        w.writerows(samples)
    return str(path)


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

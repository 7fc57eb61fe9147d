"""10x overload for 60 s (issue #15 item 4): every request must end in a terminal status
quickly (a rejection is 429/503 with a message; its p99 latency < 10 ms), nothing may be lost,
and the router's memory must stay bounded.

Starts `superserve serve --worker-kind profile` (batches sleep their profiled latency, so the
machine's CPU goes to the router and the client) on the shipped resnet table slowed down
`--slow` times (a capacity a Python open-loop client can exceed 10x on a small machine:
x99 gives one worker ~68 images/s on the fastest subnet at its best batch), and sends
one-image requests (binary extension, the project's raw asyncio client) open loop at
`--factor` x that capacity for `--duration` s. The router's RSS is sampled every 0.5 s.

    nice -n 19 .venv/bin/python benchmarks/overload.py --duration 60 --json

Report: requests, outcomes by HTTP status (and client-side failures: timeouts or broken
connections count as lost), latency of rejections (429 and 503: p50/p99/max) and of
completions, the client's largest send lag (how far it fell behind its schedule), router
RSS at the start and at its peak. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from superserve.bench.loadgen import LoadgenConfig, run_loadgen
from superserve.bench.server_proc import ServerProcess
from superserve.bench.soak import _capacity_rps, _rss_bytes


def _lag(text: str) -> dict[str, float]:
    """The server's loop-lag histogram: samples, how many over 10 / 50 ms, the worst (gauge)."""
    def value(name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else math.nan

    n = value("superserve_event_loop_lag_seconds_count")
    b = "superserve_event_loop_lag_seconds_bucket"
    return {"samples": n, "over_10ms": n - value(b + '{le="0.01"}'),
            "over_50ms": n - value(b + '{le="0.05"}'),
            "max_ms": round(value("superserve_event_loop_lag_max_seconds") * 1e3, 1)}


def _pct(a: list[float], q: float) -> float | None:
    return round(float(np.percentile(a, q)), 2) if a else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--factor", type=float, default=10.0, help="x capacity (default 10)")
    p.add_argument("--slow", type=float, default=99.0,
                   help="the table's latencies x this, < 100 (default 99)")
    p.add_argument("--slo-ms", type=float, default=1000.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from superserve.profiling.table import ProfileTable
    from superserve.server.components import resolve_table

    _, path, _ = resolve_table("resnet", None, check_family=False)
    table = ProfileTable.load(path).scaled(args.slow)
    capacity = _capacity_rps(table)
    rate = args.factor * capacity
    if rate * args.duration > 100_000 or args.duration > 600:
        p.error(f"{rate:.0f} req/s for {args.duration} s is more than this bench sends "
                "(100,000 requests, 600 s)")
    logdir = Path(tempfile.mkdtemp(prefix="superserve-overload-"))
    table.save(logdir / "table.json")
    srv_args = ["--worker-kind", "profile", "--table", str(logdir / "table.json"),
                "--workers", "1", "--slo-ms", str(args.slo_ms)]
    with ServerProcess(srv_args, logdir / "server.log") as srv:
        pid = srv.proc.pid  # type: ignore[union-attr]
        cfg = LoadgenConfig(url=srv.http_url, slo_ms=args.slo_ms, timeout_s=10.0,
                            max_duration_s=args.duration + 20)
        images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
        labels = np.zeros(64, dtype=int)
        rss: list[int] = []

        async def run() -> list[Any]:
            await run_loadgen(cfg, np.arange(20) * 0.05, images, labels)  # warm up
            rss.append(_rss_bytes(pid))
            n = int(rate * args.duration)
            arrivals = np.sort(np.random.default_rng(1).uniform(0, args.duration, n))
            load = asyncio.ensure_future(run_loadgen(cfg, arrivals, images, labels))
            while not load.done():
                rss.append(_rss_bytes(pid))
                await asyncio.wait([load], timeout=0.5)
            return load.result()

        recs = asyncio.run(run())
        import httpx

        lag = _lag(httpx.get(f"{srv.http_url}/metrics", timeout=30).text)
        rc = srv.stop()
    by_status = Counter(r.status or r.outcome for r in recs)
    rejected = [r.latency_ms for r in recs if r.status in ("429", "503")]
    completed = [r.latency_ms for r in recs if r.status == "200"]
    messages = Counter(r.message[:60] for r in recs if r.status in ("429", "503"))
    lost = [r for r in recs if not r.status]
    report = {
        "duration_s": args.duration, "capacity_images_per_s": round(capacity, 1),
        "rate_rps": round(rate, 1), "factor": args.factor, "slo_ms": args.slo_ms,
        "requests": len(recs), "by_status": dict(by_status), "lost": len(lost),
        "lost_examples": [r.message for r in lost[:3]],
        "rejection_ms": {"n": len(rejected), "p50": _pct(rejected, 50),
                         "p99": _pct(rejected, 99),
                         "max": round(max(rejected), 2) if rejected else None},
        "completed_ms": {"n": len(completed), "p50": _pct(completed, 50),
                         "p99": _pct(completed, 99)},
        "rejection_messages": dict(messages.most_common(3)),
        "max_send_lag_ms": round(max((r.sent_s - r.scheduled_s for r in recs
                                      if not math.isnan(r.sent_s)), default=0) * 1e3, 1),
        "loop_lag": lag,  # the server's own metric, whole run (warm-up included)
        "router_rss_start_mb": round(rss[0] / 2**20, 1) if rss else None,
        "router_rss_peak_mb": round(max(rss) / 2**20, 1) if rss else None,
        "server_exit_code": rc, "load_avg_1m": os.getloadavg()[0],
        "server_log": str(logdir / "server.log"),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:24s} {v}")
    return 0 if not lost and rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

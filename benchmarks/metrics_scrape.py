"""How long a GET /metrics takes while the server is under heavy load, and whether scraping
delays the request path (issue #15: observability must not cost the requests it observes).

Starts `superserve serve --worker-kind profile` on the shipped resnet table slowed `--slow`
times (as benchmarks/overload.py: one worker, ~68 images/s) and sends one-image requests
(binary extension, the load generator's raw client) open loop at `--factor` x that capacity
for 2 x `--duration` s: the first half unscraped, the second half scraped every
`--interval-s` by a separate process (its own interpreter: its timing shares no GIL with the
load client), keep-alive as Prometheus does. An idle scrape series runs before the load.

Report: scrape time p50/p99/max (idle and under load), the body's size and series count; per
half, the server's loop lag (`superserve_event_loop_lag_seconds`: samples over 10 / 50 ms, the
worst bucket reached) and the client's latency of rejections and completions (p50/p99), so a
scrape that stalls the loop shows as lag and as slower rejections in the scraped half.

    nice -n 19 .venv/bin/python benchmarks/metrics_scrape.py --duration 20 --json

Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def scrape_series(url: str, interval_s: float, duration_s: float) -> dict[str, Any]:
    """GET /metrics every `interval_s` for `duration_s` on one keep-alive connection; the
    wall time of each, request sent to body read (ms)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    times, size, errors = [], 0, 0
    end = time.monotonic() + duration_s
    next_at = time.monotonic()
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                errors += 1
            size = len(body)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            continue
        times.append((time.perf_counter() - t0) * 1e3)
        next_at += interval_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    conn.close()
    return {"times_ms": times, "bytes": size, "errors": errors}


def _scraper_process(url: str, interval_s: float, duration_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--scrape", url, "--interval-s",
                             str(interval_s), "--duration", str(duration_s)],
                            stdout=subprocess.PIPE, text=True)


def _summary(times: list[float]) -> dict[str, Any]:
    if not times:
        return {"n": 0}
    a = np.asarray(times)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def _lag_counts(text: str) -> dict[str, float]:
    """Cumulative loop-lag histogram: {le: count} and the sample count."""
    out = {le: float(v) for le, v in re.findall(
        r'^superserve_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE)}
    m = re.search(r"^superserve_event_loop_lag_seconds_count (\S+)$", text, re.MULTILINE)
    out["count"] = float(m.group(1)) if m else math.nan
    return out


def _lag_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    n = after["count"] - before["count"]
    below = {le: after[le] - before.get(le, 0.0) for le in after if le not in ("count",)}
    worst = max((float(le) for le, c in below.items() if le != "+Inf" and c < n),
                default=0.0)  # the largest bucket bound some sample exceeded
    return {"samples": n, "over_10ms": n - below.get("0.01", n),
            "over_50ms": n - below.get("0.05", n), "worst_bucket_exceeded_ms": worst * 1e3}


def _get(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics", timeout=30).text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per half")
    p.add_argument("--factor", type=float, default=10.0, help="x capacity (default 10)")
    p.add_argument("--slow", type=float, default=99.0)
    p.add_argument("--slo-ms", type=float, default=1000.0)
    p.add_argument("--interval-s", type=float, default=0.25, help="scrape period (0.25 s)")
    p.add_argument("--offload", default=None, choices=["process", "thread", "off"],
                   help="the server's SUPERSERVE_OFFLOAD (off: /metrics rendered on the loop)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--scrape", default=None, help=argparse.SUPPRESS)  # the scraper process
    args = p.parse_args(argv)
    if args.scrape:
        print(json.dumps(scrape_series(args.scrape, args.interval_s, args.duration)))
        return 0

    from superserve.bench.loadgen import LoadgenConfig, run_loadgen
    from superserve.bench.server_proc import ServerProcess
    from superserve.bench.soak import _capacity_rps
    from superserve.profiling.table import ProfileTable
    from superserve.server.components import resolve_table

    if args.offload:
        os.environ["SUPERSERVE_OFFLOAD"] = args.offload  # inherited by the server
    _, path, _ = resolve_table("resnet", None, check_family=False)
    table = ProfileTable.load(path).scaled(args.slow)
    rate = args.factor * _capacity_rps(table)
    if rate * 2 * args.duration > 100_000 or args.duration > 300:
        p.error("more than this bench sends (100,000 requests, 2 x 300 s)")
    logdir = Path(tempfile.mkdtemp(prefix="superserve-scrape-"))
    table.save(logdir / "table.json")
    srv_args = ["--worker-kind", "profile", "--table", str(logdir / "table.json"),
                "--workers", "1", "--slo-ms", str(args.slo_ms)]
    with ServerProcess(srv_args, logdir / "server.log") as srv:
        url = srv.http_url
        idle = json.loads(_scraper_process(url, 0.05, 3.0).communicate(timeout=60)[0])
        cfg = LoadgenConfig(url=url, slo_ms=args.slo_ms, timeout_s=10.0,
                            max_duration_s=2 * args.duration + 30)
        images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
        labels = np.zeros(64, dtype=int)
        lag: dict[str, dict[str, float]] = {}

        async def run() -> tuple[list[Any], dict[str, Any]]:
            await run_loadgen(cfg, np.arange(20) * 0.05, images, labels)  # warm up
            n = int(rate * 2 * args.duration)
            arrivals = np.sort(np.random.default_rng(1).uniform(0, 2 * args.duration, n))
            lag["start"] = _lag_counts(await asyncio.to_thread(_get, url))
            load = asyncio.ensure_future(run_loadgen(cfg, arrivals, images, labels))
            await asyncio.sleep(args.duration)
            lag["half"] = _lag_counts(await asyncio.to_thread(_get, url))
            scraper = _scraper_process(url, args.interval_s, args.duration)
            out, _ = await asyncio.to_thread(scraper.communicate, None, 2 * args.duration + 60)
            recs = await load
            lag["end"] = _lag_counts(await asyncio.to_thread(_get, url))
            return recs, json.loads(out)

        recs, loaded = asyncio.run(run())
        text = _get(url)
        rc = srv.stop()
    halves = {}
    for name, lo, hi in (("unscraped", 0.0, args.duration),
                         ("scraped", args.duration, 2 * args.duration)):
        part = [r for r in recs if lo <= r.scheduled_s < hi]
        halves[name] = {
            "requests": len(part),
            "rejection_ms": _summary([r.latency_ms for r in part if r.status in ("429", "503")]),
            "completed_ms": _summary([r.latency_ms for r in part if r.status == "200"]),
            "lost": sum(1 for r in part if not r.status),
            "loop_lag": _lag_delta(lag["start" if lo == 0 else "half"],
                                   lag["half" if lo == 0 else "end"])}
    report = {
        "offload": os.environ.get("SUPERSERVE_OFFLOAD", "process"),
        "rate_rps": round(rate, 1), "factor": args.factor, "half_s": args.duration,
        "interval_s": args.interval_s,
        "metrics_bytes": loaded["bytes"],
        "metrics_series": sum(1 for line in text.splitlines() if line and line[0] != "#"),
        "scrape_idle_ms": _summary(idle["times_ms"]),
        "scrape_under_load_ms": _summary(loaded["times_ms"]),
        "scrape_errors": idle["errors"] + loaded["errors"],
        **halves,
        "server_exit_code": rc, "load_avg_1m": round(os.getloadavg()[0], 2),
        "server_log": str(logdir / "server.log"),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:24s} {v}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The worst event-loop lag while 16 MiB JSON bodies are decoded amid 1,000 req/s of normal
traffic (issue #12 item 2), with off-loop decoding disabled, on threads, and in a decode
process (`SUPERSERVE_OFFLOAD=off|thread|process`, server/offload.py), side by side.

For each mode: start `superserve serve --worker-kind noop` (no compute: the loop's own work
is what is measured), warm up, then for `--duration` s send small JSON requests (one
[1, 1, 28, 28] image, KServe v2 JSON `data`) open loop at `--rate`, and every
`--heavy-every-s` one JSON body of `--heavy-mb` MiB (256 images of full-precision floats,
padded with spaces to the size: the largest body the server accepts by default). The server's
own loop-lag metric (`superserve_event_loop_lag_seconds`, a timer due every 50 ms) is read
before and after: the report gives the worst lag bucket reached during the run, the count of
samples over 10 ms and 100 ms, and `superserve_event_loop_lag_max_seconds`. The client side
gives the small requests' outcomes and latency (send to response), what every request waits
behind a blocked loop.

    nice -n 19 .venv/bin/python benchmarks/loop_lag.py --duration 20 --json

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from superserve.bench.loadgen import LoadgenConfig, _RawHttpClient, run_loadgen
from superserve.bench.server_proc import ServerProcess


class _JsonClient(_RawHttpClient):
    """The load generator's raw HTTP client, sending KServe v2 JSON bodies (`data`)."""

    def request(self, key: int, image: np.ndarray) -> bytes:
        b = self._reqs.get(key)
        if b is None:
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, *image.shape],
                                           "datatype": "FP32",
                                           "data": image.ravel().tolist()}],
                               "parameters": {"slo_ms": self._cfg.slo_ms},
                               "outputs": [{"name": "predicted"}]}).encode()
            b = self._reqs[key] = (
                f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        return b


def heavy_body(mib: float, seed: int = 0) -> bytes:
    """A JSON infer body of 256 [1, 28, 28] images, padded with spaces to `mib` MiB."""
    vals = np.random.default_rng(seed).random((256, 1, 28, 28))
    text = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                   "shape": [256, 1, 28, 28], "data": vals.tolist()}],
                       "parameters": {"slo_ms": 60_000}})
    target = int(mib * 2**20) - 1024
    pad = max(0, (target - len(text)) // text.count(","))
    return text.replace(",", "," + " " * pad).encode()


def _lag_histogram(text: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(r'^superserve_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$',
                         text, re.MULTILINE):
        out[m.group(1)] = float(m.group(2))
    for name in ("superserve_event_loop_lag_seconds_count",
                 "superserve_event_loop_lag_max_seconds"):
        m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        out[name] = float(m.group(1)) if m else math.nan
    return out


async def _post(host: str, port: int, path: str, body: bytes, timeout_s: float
                ) -> tuple[int, float]:
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        await asyncio.wait_for(reader.read(), timeout_s)
        return int(line.split()[1]), time.perf_counter() - t0
    finally:
        writer.close()


def run_mode(mode: str, args: argparse.Namespace, body: bytes, logdir: Path) -> dict[str, Any]:
    import httpx

    os.environ["SUPERSERVE_OFFLOAD"] = mode  # the served process reads it at import
    srv_args = ["--worker-kind", "noop", "--workers", "1", "--slo-ms", str(args.slo_ms)]
    with ServerProcess(srv_args, logdir / f"server-{mode}.log") as srv:
        cfg = LoadgenConfig(url=srv.http_url, slo_ms=args.slo_ms, timeout_s=10.0,
                            max_duration_s=args.duration + 30)
        images = np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32)
        labels = np.zeros(64, dtype=int)

        async def warm() -> None:
            n = int(args.rate * 3)
            await run_loadgen(cfg, np.arange(n) / args.rate, images, labels,
                              client=_JsonClient(cfg))
            code, _ = await _post("127.0.0.1", srv.http_port, "/v2/models/resnet/infer", body,
                                  60.0)  # starts the decode process, if any
            assert code == 200, code

        asyncio.run(warm())
        time.sleep(1.0)
        before = _lag_histogram(httpx.get(f"{srv.http_url}/metrics", timeout=30).text)

        async def main() -> tuple[list[Any], list[tuple[int, float]]]:
            n = int(args.rate * args.duration)
            arrivals = np.sort(np.random.default_rng(2).uniform(0, args.duration, n))
            heavy: list[tuple[int, float]] = []

            async def heavies() -> None:
                k = int(args.duration / args.heavy_every_s)
                tasks = []
                for i in range(k):
                    await asyncio.sleep(args.heavy_every_s if i else args.heavy_every_s / 2)
                    tasks.append(asyncio.ensure_future(_post(
                        "127.0.0.1", srv.http_port, "/v2/models/resnet/infer", body, 120.0)))
                for t in tasks:
                    try:
                        heavy.append(await t)
                    except (OSError, TimeoutError, IndexError, ValueError) as e:
                        heavy.append((-1, math.nan))
                        print(f"heavy request failed: {e!r}", file=sys.stderr)

            h = asyncio.ensure_future(heavies())
            recs = await run_loadgen(cfg, arrivals, images, labels, client=_JsonClient(cfg))
            await h
            return recs, heavy

        recs, heavy = asyncio.run(main())
        time.sleep(0.2)
        after = _lag_histogram(httpx.get(f"{srv.http_url}/metrics", timeout=30).text)
    bounds = sorted(float(k) for k in before if k[0].isdigit() or k == "+Inf")
    delta = {b: after[_key(b)] - before[_key(b)] for b in bounds}
    samples = after["superserve_event_loop_lag_seconds_count"] - before[
        "superserve_event_loop_lag_seconds_count"]
    worst = next((b for b in bounds if delta[b] >= samples), math.inf)
    lat = np.array([r.latency_ms for r in recs if r.outcome == "completed"])
    return {
        "mode": mode,
        "lag_samples": int(samples),
        "worst_lag_le_ms": worst * 1e3,
        "lag_over_10ms": int(samples - delta[0.01]),
        "lag_over_100ms": int(samples - delta[0.1]),
        "lag_max_gauge_ms": round(after["superserve_event_loop_lag_max_seconds"] * 1e3, 1),
        "small_requests": len(recs),
        "small_outcomes": dict(Counter(r.outcome for r in recs)),
        "small_latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99),
                             "max": round(float(lat.max()), 1) if len(lat) else None},
        "max_send_lag_ms": round(max((r.sent_s - r.scheduled_s for r in recs
                                      if not math.isnan(r.sent_s)), default=0) * 1e3, 1),
        "heavy": {"sent": len(heavy), "statuses": dict(Counter(c for c, _ in heavy)),
                  "seconds": [round(s, 2) for _, s in heavy]},
    }


def _key(b: float) -> str:
    return "+Inf" if math.isinf(b) else repr(b)


def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 2) if len(a) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="small requests/s (default 1000)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per mode (default 20)")
    p.add_argument("--heavy-every-s", type=float, default=2.0)
    p.add_argument("--heavy-mb", type=float, default=16.0)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--modes", default="off,thread,process")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.duration * args.rate > 200_000 or args.duration > 600:
        p.error("at most 200,000 small requests and 600 s per mode")
    body = heavy_body(args.heavy_mb)
    logdir = Path(tempfile.mkdtemp(prefix="superserve-looplag-"))
    rows = [run_mode(m.strip(), args, body, logdir) for m in args.modes.split(",")]
    report = {"rate_rps": args.rate, "duration_s": args.duration,
              "heavy_body_bytes": len(body), "heavy_every_s": args.heavy_every_s,
              "load_avg_1m": os.getloadavg()[0], "modes": rows, "server_logs": str(logdir)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in rows:
            print(f"{r['mode']:8s} worst lag <= {r['worst_lag_le_ms']:7.1f} ms  "
                  f"(gauge {r['lag_max_gauge_ms']} ms; >10 ms: {r['lag_over_10ms']}, "
                  f">100 ms: {r['lag_over_100ms']} of {r['lag_samples']} samples)  small p99 "
                  f"{r['small_latency_ms']['p99']} ms max {r['small_latency_ms']['max']} ms  "
                  f"{r['small_outcomes']}  heavy {r['heavy']['statuses']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""An independent open-loop client for a KServe v2 server: aiohttp, JSON bodies.

What a new user would write, not the project's own load generator (nothing of
superserve.bench.loadgen is used): each request is a KServe v2 JSON body with one FP32
[1, 1, 28, 28] MNIST-5k test image, sent at its scheduled time from a trace spec (only the
arrival times of superserve.traces.load_trace are used), whatever the earlier responses do.
Latency is counted from the SCHEDULED send time, so the client's own lag is charged too.
Concurrency is bounded (a request waiting for a slot is still timed from its schedule) and
every request has a timeout; loopback addresses only.

    python benchmarks/open_loop_client.py --url http://127.0.0.1:8000 \\
        --trace bursty:base=500,variant=500,cv2=4,duration=20 --json

Report (JSON with --json): requests, slo_attainment (HTTP 200 within the SLO / all),
outcomes by status ("200", "504", ..., "timeout", "error", "unfinished" when the run's
bound cut it off), mean profiled accuracy of the
requests met (response parameter subnet_accuracy), realized accuracy (argmax of the logits
vs the label) of the requests met and of all 200s, latency p50/p99 of 200s, the largest send
lag, and a per-second timeline by scheduled time. It prints "open_loop_client: run started"
on stderr when the timed run begins (after the warm-up), for harnesses that act mid-run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="resnet")
    p.add_argument("--trace", required=True, help="trace spec, e.g. bursty:base=500,variant=500,"
                   "cv2=4,duration=20 or azure-llm:name=code,rate=1000,duration=20")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--send-slo", action=argparse.BooleanOptionalAction, default=True,
                   help="send the SLO as the request parameter slo_ms")
    p.add_argument("--concurrency", type=int, default=1024, help="requests in flight at most")
    p.add_argument("--timeout-s", type=float, default=5.0, help="per request")
    p.add_argument("--warmup", type=int, default=50,
                   help="requests sent before the timed run (20 ms apart), not counted")
    p.add_argument("--warmup-burst", type=int, default=32,
                   help="then this many at once, so that the run starts with that many "
                        "keep-alive connections open (not counted)")
    p.add_argument("--seed", type=int, default=0, help="which test images are sent")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    return p.parse_args(argv)


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in ("localhost", "::1") and not host.startswith("127."):
        raise SystemExit(f"open_loop_client: loopback addresses only, got {url!r}")


def bodies(images: np.ndarray, slo_ms: float | None) -> list[bytes]:
    """One KServe v2 JSON body per image (built once: the client must stay cheap)."""
    out = []
    for img in images:
        doc: dict[str, Any] = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                           "datatype": "FP32", "data": img.reshape(-1).tolist()}]}
        if slo_ms is not None:
            doc["parameters"] = {"slo_ms": slo_ms}
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def predicted(doc: dict[str, Any]) -> int:
    outs = {o.get("name"): o for o in doc.get("outputs") or []}
    if "logits" in outs:
        return int(np.argmax(np.asarray(outs["logits"]["data"], dtype=float)[:10]))
    if "predicted" in outs:
        return int(outs["predicted"]["data"][0])
    return -1


async def run(args: argparse.Namespace, arrivals: np.ndarray, images: np.ndarray,
              labels: np.ndarray) -> list[dict[str, Any]]:
    import aiohttp

    url = f"{args.url.rstrip('/')}/v2/models/{args.model}/infer"
    body = bodies(images, args.slo_ms if args.send_slo else None)
    picks = np.random.default_rng(args.seed).integers(0, len(images), size=len(arrivals))
    slots = asyncio.Semaphore(args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    conn = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    headers = {"Content-Type": "application/json"}
    recs: list[dict[str, Any]] = []

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def one(i: int, scheduled: float, t0: float) -> None:
            k = int(picks[i])
            rec = {"t": scheduled, "status": "unfinished", "latency_ms": math.nan,
                   "lag_ms": math.nan, "acc": math.nan, "correct": False}
            recs.append(rec)
            async with slots:
                rec["lag_ms"] = (time.perf_counter() - t0 - scheduled) * 1e3
                try:
                    async with session.post(url, data=body[k], headers=headers) as r:
                        raw = await r.read()
                        rec["status"] = str(r.status)
                        if r.status == 200:
                            doc = json.loads(raw)
                            rec["acc"] = float((doc.get("parameters") or {})
                                               .get("subnet_accuracy", math.nan))
                            rec["correct"] = predicted(doc) == int(labels[k])
                except TimeoutError:
                    rec["status"] = "timeout"
                except (aiohttp.ClientError, ValueError):
                    rec["status"] = "error"
            rec["latency_ms"] = (time.perf_counter() - t0 - scheduled) * 1e3

        async def paced(i: int, scheduled: float, t0: float) -> None:
            delay = t0 + scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(i, scheduled, t0)

        # warm-up: connections and first-call costs stay out of the timed run. Paced, 20 ms
        # apart (until 2026-11-29 all of them went at once: a clump of 150 requests that the
        # server's burst guard then remembered for the first seconds of the timed run)
        t_w = time.perf_counter()
        warm = [asyncio.create_task(paced(i % len(arrivals), 0.02 * i, t_w))
                for i in range(min(args.warmup, len(arrivals)))]
        if warm:
            await asyncio.wait(warm, timeout=args.timeout_s + 0.02 * len(warm))
        burst = [asyncio.create_task(one(i % len(arrivals), 0.0, time.perf_counter()))
                 for i in range(min(args.warmup_burst, len(arrivals)))]
        if burst:
            await asyncio.wait(burst, timeout=args.timeout_s)
        for task in warm + burst:
            task.cancel()
        recs.clear()
        print("open_loop_client: run started", file=sys.stderr, flush=True)
        gc.collect()
        gc.disable()  # a full collection mid-run stalls the loop for tens of ms
        # the requests still in flight: asyncio.wait over all of them at the end would stall
        # the loop for ~0.1 s at 40,000 tasks (a callback added to each), while the last
        # responses are being read: a client-made dip in the run's last second
        pending: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        try:
            for i, t in enumerate(arrivals):
                delay = t0 + t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(i, float(t), t0))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=args.timeout_s + 30.0)
        finally:
            left = list(pending)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            gc.enable()
    return recs


def report(recs: list[dict[str, Any]], slo_ms: float, duration_s: float) -> dict[str, Any]:
    n = len(recs)
    ok = [r for r in recs if r["status"] == "200"]
    met = [r for r in ok if r["latency_ms"] <= slo_ms]
    outcomes: dict[str, int] = {}
    for r in recs:
        outcomes[r["status"]] = outcomes.get(r["status"], 0) + 1
    lat = np.array([r["latency_ms"] for r in ok])
    lags = [r["lag_ms"] for r in recs if math.isfinite(r["lag_ms"])]
    accs = [r["acc"] for r in met if math.isfinite(r["acc"])]
    timeline = []
    for s in range(max(1, math.ceil(duration_s))):
        b = [r for r in recs if s <= r["t"] < s + 1]
        bm = [r for r in b if r["status"] == "200" and r["latency_ms"] <= slo_ms]
        ba = [r["acc"] for r in bm if math.isfinite(r["acc"])]
        timeline.append({"t_s": s, "requests": len(b), "met": len(bm),
                         "slo_attainment": len(bm) / len(b) if b else None,
                         "profiled_accuracy": float(np.mean(ba)) if ba else None})
    return {
        "requests": n,
        "slo_ms": slo_ms,
        "slo_attainment": len(met) / n if n else 0.0,
        "outcomes": outcomes,
        "profiled_accuracy": float(np.mean(accs)) if accs else 0.0,
        "realized_accuracy": sum(r["correct"] for r in met) / len(met) if met else 0.0,
        "realized_accuracy_all_200": sum(r["correct"] for r in ok) / len(ok) if ok else 0.0,
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        "max_send_lag_ms": max(lags) if lags else 0.0,
        "timeline": timeline,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_loopback(args.url)
    from superserve.data import load_mnist
    from superserve.traces import load_trace

    trace = load_trace(args.trace)
    x, y = load_mnist().test
    images = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)
    recs = asyncio.run(run(args, np.asarray(trace.arrivals_s, dtype=float), images,
                           np.asarray(y)))
    rep = {"trace": args.trace, "url": args.url, **report(recs, args.slo_ms, trace.duration_s)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rep, f, indent=1)
    if args.json:
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            if k != "timeline":
                print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

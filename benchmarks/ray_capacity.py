"""Two workers on Ray vs two local worker processes: SLO attainment and served accuracy at
increasing rates (bursty trace, CV^2 4, SLO 50 ms), and the highest rate at >= 0.99.

    python benchmarks/ray_capacity.py [--rates 100 200 400 800] [--duration 15]
        [--kind torch|profile] [--json OUT]

One `superserve serve --workers 2` per (backend, rate), default flags otherwise (the Ray one
starts its own local Ray on 127.0.0.1); load starts once BOTH workers are ready, after 20
warm-up requests. Everything runs on this machine, so on a small shared machine the figures
say what the two backends cost on it, not what Ray gains across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def run_one(backend: str, rate: float, args: argparse.Namespace, out: Path) -> dict:
    from superserve.bench.loadgen import LoadgenConfig, run_loadgen, summarize
    from superserve.bench.server_proc import ServerProcess
    from superserve.data import load_mnist
    from superserve.experiments.live_fault import _wait_all_ready
    from superserve.traces import load_trace

    x, y = load_mnist().test
    arrivals = load_trace(f"bursty:base={rate / 2},variant={rate / 2},cv2=4,"
                          f"duration={args.duration},seed=0").arrivals_s
    serve = ["--backend", backend, "--workers", "2", "--worker-kind", args.kind,
             "--slo-ms", "50", "--grpc-port", "-1"]
    with ServerProcess(serve, out / f"{backend}-{rate:g}.log", ready_timeout_s=300) as srv:
        _wait_all_ready(srv.http_url, 2)
        cfg = LoadgenConfig(url=srv.http_url, slo_ms=50.0, protocol="http",
                            max_duration_s=args.duration + 60.0)
        asyncio.run(run_loadgen(cfg, np.arange(20) * 0.02, x, y))
        s = summarize(asyncio.run(run_loadgen(cfg, arrivals, x, y)), 50.0)
    return {"backend": backend, "rate": rate, "requests": s["requests"],
            "slo_attainment": round(s["slo_attainment"], 4),
            "mean_serving_accuracy": round(s["mean_serving_accuracy"], 4),
            "latency_ms_p99": s["latency_ms_p99"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--kind", choices=["torch", "profile"], default="torch")
    ap.add_argument("--backends", nargs="+", default=["local", "ray"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="ray-capacity-"))
    rows = []
    print(f"{'backend':8s} {'rate':>7s} {'requests':>8s} {'attain':>7s} {'acc %':>6s} "
          f"{'p99 ms':>7s}", flush=True)
    for rate in args.rates:  # interleaved: load from other processes hits both alike
        for backend in args.backends:
            r = run_one(backend, rate, args, out)
            rows.append(r)
            p99 = r["latency_ms_p99"] or float("nan")
            print(f"{backend:8s} {rate:7g} {r['requests']:8d} {r['slo_attainment']:7.4f} "
                  f"{100 * r['mean_serving_accuracy']:6.2f} {p99:7.1f}", flush=True)
    for backend in args.backends:
        ok = [r for r in rows if r["backend"] == backend and r["slo_attainment"] >= 0.99]
        best = max(ok, key=lambda r: r["rate"]) if ok else None
        print(f"{backend}: highest rate at >= 0.99 attainment: "
              + (f"{best['rate']:g} req/s, accuracy {100 * best['mean_serving_accuracy']:.2f}%"
                 if best else "none of the rates tried"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"server logs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

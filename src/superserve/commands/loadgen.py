"""`superserve loadgen --url URL --trace SPEC --slo-ms X [--protocol http|grpc|grpc-stream] [--out DIR] [--json]`.

Open loop: requests leave at the trace's times whatever the responses do; each carries one
held-out MNIST-5k test image, so realized accuracy is measured as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True,
                   help="http://127.0.0.1:8000 (HTTP) or 127.0.0.1:8001 (gRPC); loopback only")
    p.add_argument("--trace", required=True, help="trace spec or file")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--protocol", choices=["http", "grpc", "grpc-stream"], default="http",
                   help="http (KServe v2 REST, binary tensors), grpc (a unary call per "
                        "request) or grpc-stream (every request on one ModelStreamInfer call)")
    p.add_argument("--model", default="resnet")
    p.add_argument("--timeout-s", type=float, default=10.0, help="client bound per request")
    p.add_argument("--grpc-deadline", choices=["slo", "timeout"], default="slo",
                   help="grpc: each call's deadline, at its scheduled send time + the SLO "
                        "(slo: the server plans and counts against it; a late answer ends "
                        "DEADLINE_EXCEEDED) or --timeout-s after the send (timeout: a late "
                        "answer still arrives, and its latency is measured)")
    p.add_argument("--out", type=Path, default=None, help="write requests.csv and timeseries.png")
    p.add_argument("--seed", type=int, default=0, help="which test images are sent")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from tqdm import tqdm

    from superserve.bench.loadgen import (
        LoadgenConfig,
        plot_timeseries,
        run_loadgen,
        summarize,
        write_csv,
    )
    from superserve.data import load_mnist
    from superserve.traces import load_trace

    trace = load_trace(args.trace)
    cfg = LoadgenConfig(url=args.url, slo_ms=args.slo_ms, protocol=args.protocol,
                        model=args.model, timeout_s=args.timeout_s, seed=args.seed,
                        grpc_deadline=args.grpc_deadline,
                        max_duration_s=trace.duration_s + 60.0)
    x, y = load_mnist().test
    bar = tqdm(total=len(trace), desc="requests", unit="req", file=sys.stderr, mininterval=0.5,
               disable=None)
    records = asyncio.run(run_loadgen(cfg, trace.arrivals_s, x, y,
                                      progress=lambda i, n: bar.update(i - bar.n)))
    bar.close()
    summary = summarize(records, args.slo_ms)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(records, args.out / "requests.csv")
        plot_timeseries(records, args.out / "timeseries.png", title=trace.spec)
        summary["csv"] = str(args.out / "requests.csv")
        summary["plot"] = str(args.out / "timeseries.png")
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:22s} {v:.4g}" if isinstance(v, float) else f"{k:22s} {v}")
    return 0

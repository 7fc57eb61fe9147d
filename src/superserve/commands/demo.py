"""`superserve demo [--quick]`: the main job on the embedded default model.

Starts the server with the shipped resnet supernet and table, replays a bursty trace sized to
this machine (open loop, MNIST-5k test images), then repeats the run with Clipper+ at fixed
subnets and with INFaaS, and prints attainment, profiled and realized accuracy and p99 side by
side, with the simulator's prediction for each. At most ~10 minutes (--quick: ~2).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="shorter trace, four runs (~2 min)")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--rate", type=float, default=None,
                   help="mean request rate (default: sized to this machine by the simulator)")
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--out", type=Path, default=Path("results/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc",
                   help="what the load generator speaks (live runs; gRPC is cheaper per request)")


def run(args: argparse.Namespace) -> int:
    from superserve.experiments.live import run_demo

    return run_demo(args)

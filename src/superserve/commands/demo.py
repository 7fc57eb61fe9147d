"""`superserve demo [--quick]`: the main job on the embedded default model.

Serves the shipped resnet supernet and table with default flags and replays one trace that
goes through and well past the capacity of the most accurate subnet (on this machine: a
few seconds of timed forwards size it),
once per policy: SlackFit, Clipper+ at the fastest, a middle and the most accurate subnet, and
INFaaS (full run). Prints progress per run, then attainment, realized and profiled accuracy
side by side; writes timelines, the tradeoff plot and summary.json to --out. About 4-5
minutes (--quick: about 2-3).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="2 s phases, no INFaaS (~2-3 min)")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--burst-rate", type=float, default=None,
                   help="peak rate of the bursts in req/s (default: 3.5x the most accurate "
                        "subnet's capacity on this machine, at most 2,500 over HTTP on a "
                        "machine as fast as the table's)")
    p.add_argument("--phase-s", type=float, default=None,
                   help="length of each calm or burst phase (default 4; --quick 2)")
    p.add_argument("--policies", default=None,
                   help="comma list of `serve --policy` values instead of the default set")
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--out", type=Path, default=Path("results/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=["http", "grpc"], default="http",
                   help="what the load generator speaks (HTTP: the cheaper front end here)")
    p.add_argument("--worker-kind", choices=["torch", "profile"], default="torch",
                   help="profile: workers sleep the profiled latency (no model compute)")
    p.add_argument("--size-from-table", action="store_true",
                   help="size the trace from the table's latencies as they are (default: "
                        "a few seconds of forwards first measure this machine's speed, and "
                        "beyond x1.2 of the table the trace is sized from that)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="worker alone on CPU 1, router and load generator on CPU 0")


def run(args: argparse.Namespace) -> int:
    from superserve.experiments.demo import run_demo

    return run_demo(args)

"""`superserve bench NAME`: micro-benchmarks. Each lives in `superserve.bench.<name>` with
`add_arguments(parser)` and `run(args) -> int`, and prints one JSON object with --json."""

from __future__ import annotations

import argparse
import importlib

BENCHES: dict[str, str] = {
    "subnetact": "actuation time, supernet vs materialized latency, memory (SubNetAct)",
    "scheduler": "SlackFit decision time on a 1,000-request queue",
    "router": "router overhead and peak rate with a no-compute worker",
    "soak": "a long run at 70%% of the live server's measured capacity: RSS and fd growth, "
            "requests lost, outcomes",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, help_text in BENCHES.items():
        try:
            module = importlib.import_module(f"superserve.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"superserve.bench.{name}":
                raise
            continue
        # help= is %-formatted by argparse, description= is printed as is
        p = sub.add_parser(name, help=help_text, description=help_text.replace("%%", "%"))
        module.add_arguments(p)
        p.set_defaults(_bench=module)


def run(args: argparse.Namespace) -> int:
    return int(args._bench.run(args) or 0)

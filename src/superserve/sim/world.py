"""The live-like world the simulator benchmarks put policies in (benchmarks/frontier_sim.py,
benchmarks/frontend_sim.py): the table x `--factor` (the live 2-core host ran x1.38-x1.63),
10% jitter, `--busy-ms` of dispatch per batch that occupies the worker, the live router's
start-up reserve, and the online calibration planning, as the router does."""

from __future__ import annotations

import argparse
from typing import Any

from superserve.sim.simulator import SimConfig

__all__ = ["JITTER", "RESERVE_S", "add_world_arguments", "check_world_arguments",
           "world_config"]

RESERVE_S = 0.004  # the per-batch reserve the router plans with at start (a live value)
JITTER = 0.1  # relative std-dev of a batch's service time


def add_world_arguments(p: argparse.ArgumentParser, seeds: int) -> None:
    """--seeds (default `seeds`), --duration, --factor and --busy-ms."""
    p.add_argument("--seeds", type=int, default=seeds)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--factor", type=float, default=1.45,
                   help="the world runs the table x this (the live host: x1.38-x1.63)")
    p.add_argument("--busy-ms", type=float, default=0.8,
                   help="dispatch per batch that occupies the worker (ms)")


def check_world_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A clear usage error for a world that cannot run."""
    if args.seeds < 1 or args.duration <= 0 or args.factor <= 0 or args.busy_ms < 0:
        p.error("--seeds >= 1, --duration > 0, --factor > 0 and --busy-ms >= 0")


def world_config(args: argparse.Namespace, slo_s: float, seed: int, **extra: Any) -> SimConfig:
    """The world of `args` for one trace (`seed`), calibrated; `extra`: more SimConfig fields."""
    return SimConfig(slo_s=slo_s, overhead_s=RESERVE_S, busy_overhead_s=args.busy_ms / 1e3,
                     calibrate=True, latency_factor=args.factor, jitter=JITTER, seed=seed,
                     **extra)

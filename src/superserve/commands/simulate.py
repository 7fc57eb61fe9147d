"""`superserve simulate --table FILE --trace SPEC --policy P --workers N --slo-ms X [--json]`."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", default=None, help="ProfileTable JSON (default: the shipped resnet)")
    p.add_argument("--trace", required=True, help="trace spec or file")
    p.add_argument("--policy", default="slackfit")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--overhead-ms", type=float, default=0.0, help="per-batch overhead")
    p.add_argument("--jitter", type=float, default=0.0, help="relative std-dev of service time")
    p.add_argument("--actuation-ms", type=float, default=0.0,
                   help="delay paid when a worker switches subnet")
    p.add_argument("--fail", action="append", default=[], metavar="T:W",
                   help="worker W dies at time T seconds (repeatable)")
    p.add_argument("--restart-s", type=float, default=None)
    p.add_argument("--frontend-ms", type=float, default=0.0,
                   help="per request, a FIFO front end ahead of the router's queue (deadlines "
                        "still from arrival): a front end behind on its core; 0: none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")


def load_table(path: str | None):
    """The table at `path`; without one, the shipped resnet table, or (before the offline
    phase has shipped one) the synthetic OFA-ResNet-like stand-in, said on stderr."""
    import sys

    from superserve.profiling.table import ProfileTable

    if path is None:
        from superserve.profiling import default_table_path

        default = default_table_path("resnet")
        if not default.is_file():
            from superserve.sim.synthetic import synthetic_table

            print(f"note: no shipped table at {default}; using the synthetic stand-in "
                  "(superserve.sim.synthetic)", file=sys.stderr)
            return synthetic_table()
        path = default
    return ProfileTable.load(path)


def run(args: argparse.Namespace) -> int:
    from superserve.errors import ConfigError
    from superserve.scheduling import make_policy
    from superserve.sim.simulator import SimConfig, simulate
    from superserve.traces import load_trace

    table = load_table(args.table)
    try:
        fails = tuple((float(t), int(w)) for t, w in (f.split(":") for f in args.fail))
    except ValueError as e:
        raise ConfigError(f"--fail takes T:W (seconds:worker), got {args.fail}") from e
    cfg = SimConfig(slo_s=args.slo_ms / 1e3, workers=args.workers,
                    overhead_s=args.overhead_ms / 1e3, jitter=args.jitter,
                    actuation_s=args.actuation_ms / 1e3, failures=fails,
                    frontend_s=args.frontend_ms / 1e3,
                    restart_s=args.restart_s, seed=args.seed)
    policy = make_policy(args.policy, table, slo_s=cfg.slo_s, workers=cfg.workers)
    trace = load_trace(args.trace)
    result = simulate(trace.arrivals_s, table, policy, cfg).to_dict()
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24s} {v:.4g}" if isinstance(v, float) else f"{k:24s} {v}")
    return 0

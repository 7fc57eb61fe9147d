"""`superserve trace show SPEC [--plot PNG] [--json]` and `superserve trace save SPEC FILE`."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="rate statistics of a trace (and a rate plot)")
    show.add_argument("spec", help="kind:key=value,... or a trace file")
    show.add_argument("--plot", default=None, help="write the rate over time to this PNG")
    show.add_argument("--json", action="store_true")
    show.add_argument("--slo-ms", type=float, default=None,
                      help="also print what the trace asks of a server at this SLO, whatever "
                           "its policy: the service rate (requests / s) that 0.9, 0.99 and "
                           "0.999 attainment need at the least (traces/bounds.py)")
    show.add_argument("--service-rate", type=float, nargs="+", default=None, metavar="R",
                      help="with --slo-ms: the best attainment a server answering R requests "
                           "/ s can reach on the trace (an upper bound for any policy)")
    save = sub.add_parser("save", help="generate a trace and write it to a file")
    save.add_argument("spec")
    save.add_argument("file")


def plot_rate(arrivals, duration_s: float, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bins = max(1, int(np.ceil(duration_s)))
    counts = np.bincount(np.asarray(arrivals).astype(int), minlength=bins)[:bins]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(np.arange(bins) + 0.5, counts, lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests / s")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from superserve.traces import load_trace

    trace = load_trace(args.spec)
    if args.action == "save":
        trace.save(args.file)
        print(f"wrote {len(trace)} arrivals to {args.file}")
        return 0
    stats = {"spec": trace.spec, **trace.stats()}
    if args.service_rate and args.slo_ms is None:
        raise SystemExit("superserve trace show: --service-rate needs --slo-ms")
    if args.slo_ms is not None:
        if not args.slo_ms > 0 or any(not r > 0 for r in args.service_rate or ()):
            raise SystemExit("superserve trace show: --slo-ms and --service-rate must be > 0")
        from superserve.traces.bounds import attainment_bound, rate_needed

        a, slo = trace.arrivals_s.tolist(), args.slo_ms / 1e3
        stats["slo_ms"] = args.slo_ms
        for target in (0.9, 0.99, 0.999):
            stats[f"rate_needed_{target:g}"] = rate_needed(a, slo, target)
        for r in args.service_rate or ():
            stats[f"bound_at_{r:g}"] = attainment_bound(a, r, slo)
    if args.plot:
        plot_rate(trace.arrivals_s, trace.duration_s, args.plot, trace.spec)
        stats["plot"] = args.plot
    if args.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            print(f"{k:17s} {v:.4g}" if isinstance(v, float) else f"{k:17s} {v}")
    return 0

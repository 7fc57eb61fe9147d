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
    if args.plot:
        plot_rate(trace.arrivals_s, trace.duration_s, args.plot, trace.spec)
        stats["plot"] = args.plot
    if args.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            print(f"{k:12s} {v:.4g}" if isinstance(v, float) else f"{k:12s} {v}")
    return 0

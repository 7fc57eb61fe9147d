"""SlackFit against every fixed subnet, in the simulator: where a fixed subnet ties it, and why.

Issue 11 asks that no fixed subnet reach both SlackFit's attainment and its accuracy. This
runs, per mean rate, SlackFit (default flags) and Clipper+ fixed on each of the table's
subnets (`clipper:K`) on the same bursty traces (CV^2 4, half deterministic, half gamma; SLO
50 ms; 1 worker), in a world that runs the shipped table x `--factor` with `--busy-ms` of
dispatch per batch and 10% jitter, the router's calibration on (the live host ran x1.38-x1.63
of the table). Per rate it prints SlackFit's attainment and accuracy, the best fixed subnet
(the most accurate one that holds SlackFit's attainment, less `--tol`), and the margin, and
names the table's "knee" there: the most accurate subnet that can sustain the rate at all,
alone, at a batch size that meets the SLO in steady state (SlackFit's rate guard's test with
headroom 1). Where the best fixed subnet IS that knee, no mix of subnets can beat it by much
with a work-conserving policy: the subnets above it cannot keep up, and the worker runs it
at the small batches a short queue gives, busy all the time, so there is no idle time to
spend on them (see docs/scheduling.md, "Where a fixed subnet ties SlackFit").

    python benchmarks/frontier_sim.py [--rates 500 1000 1500 2000] [--seeds 4]
        [--factor 1.45] [--busy-ms 0.8] [--duration 20] [--policy SPEC] [--out DIR]

Writes frontier.json and frontier.png (per rate: every fixed subnet's attainment and
accuracy, SlackFit's point) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from superserve.profiling import default_table_path
from superserve.profiling.table import ProfileTable
from superserve.scheduling import make_policy
from superserve.sim.simulator import simulate
from superserve.sim.world import (
    RESERVE_S,
    add_world_arguments,
    check_world_arguments,
    world_config,
)
from superserve.traces import load_trace

SLO_S = 0.050


def cell(table: ProfileTable, spec: str, rate: float, seeds: int, args: argparse.Namespace
         ) -> tuple[float, float]:
    """Mean attainment and mean served accuracy of `spec` over `seeds` traces."""
    att, acc = [], []
    for seed in range(seeds):
        trace = load_trace(f"bursty:base={rate / 2},variant={rate / 2},cv2=4,"
                           f"duration={args.duration},seed={seed}")
        cfg = world_config(args, SLO_S, seed)
        r = simulate(np.asarray(trace.arrivals_s), table,
                     make_policy(spec, table, slo_s=SLO_S), cfg)
        att.append(r.slo_attainment)
        acc.append(r.mean_serving_accuracy)
    return float(np.mean(att)), float(np.mean(acc))


def knee(table: ProfileTable, rate: float, factor: float, busy_s: float) -> int:
    """The most accurate subnet that alone sustains `rate` at a batch size b whose typical
    cost (factor x profiled + busy) plus its planned cost (factor x profiled + reserve) fits
    the SLO: the test of SlackFit's rate guard (`SlackFit._throughputs`), headroom 1."""
    best = -1
    for i, row in enumerate(table.lat_s):
        thr = max((b / (factor * lat + busy_s) for b, lat in zip(table.batch_sizes, row)
                   if 2 * factor * lat + busy_s + RESERVE_S <= SLO_S), default=0.0)
        if thr >= rate and (best < 0 or table.acc[i] > table.acc[best]):
            best = i
    return best


def plot(rows: list[dict], table: ProfileTable, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.8), squeeze=False)
    for ax, row in zip(axes[0], rows):
        fixed = row["fixed"]
        ax.scatter([f["accuracy"] * 100 for f in fixed], [f["slo_attainment"] for f in fixed],
                   s=14, c="tab:gray", label="clipper:K (fixed subnet)")
        s = row["slackfit"]
        ax.scatter([s["accuracy"] * 100], [s["slo_attainment"]], s=60, c="tab:red",
                   marker="*", label=row["policy"], zorder=3)
        if row["best_fixed"] is not None:
            b = row["best_fixed"]
            ax.scatter([b["accuracy"] * 100], [b["slo_attainment"]], s=40,
                       facecolors="none", edgecolors="tab:blue", label="best fixed subnet")
        ax.set_ylim(max(0.0, min(f["slo_attainment"] for f in fixed) - 0.02), 1.005)
        best = "" if row["best_fixed"] is None else f", best fixed {row['best_fixed']['spec']}"
        ax.set_title(f"{row['rate']:.0f} req/s{best}", fontsize=9)
        ax.set_xlabel("served accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("SLO attainment")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{rows[0]['policy']} vs every fixed subnet (simulated, table x{rows[0]['factor']:g})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[500.0, 1000.0, 1500.0, 2000.0])
    add_world_arguments(p, seeds=4)
    p.add_argument("--policy", default="slackfit",
                   help="the adaptive policy's spec (default: slackfit, its default flags)")
    p.add_argument("--tol", type=float, default=0.0005,
                   help="a fixed subnet 'holds' SlackFit's attainment within this")
    p.add_argument("--out", type=Path, default=Path("results/frontier_sim"))
    args = p.parse_args()
    check_world_arguments(p, args)
    table = ProfileTable.load(default_table_path("resnet"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"world: table x{args.factor:g}, {args.busy_ms:g} ms dispatch per batch, 10% jitter; "
          f"{args.seeds} traces x {args.duration:g} s per cell, SLO {SLO_S * 1e3:.0f} ms",
          flush=True)
    print(f"{'rate':>6} {args.policy[:17]:>17} {'best fixed':>26} {'margin':>8} {'knee':>12}")
    for rate in args.rates:
        s_att, s_acc = cell(table, args.policy, rate, args.seeds, args)
        fixed = []
        for k in range(len(table)):
            att, acc = cell(table, f"clipper:{k}", rate, args.seeds, args)
            fixed.append({"spec": f"clipper:{k}", "slo_attainment": att, "accuracy": acc})
        holding = [f for f in fixed if f["slo_attainment"] >= s_att - args.tol]
        best = max(holding, key=lambda f: f["accuracy"]) if holding else None
        kn = knee(table, rate, args.factor, args.busy_ms / 1e3)
        margin = None if best is None else (s_acc - best["accuracy"]) * 100
        rows.append({"rate": rate, "factor": args.factor, "busy_ms": args.busy_ms,
                     "policy": args.policy, "slackfit": {"slo_attainment": s_att, "accuracy": s_acc},
                     "best_fixed": best, "margin_points": margin,
                     "knee": None if kn < 0 else f"clipper:{kn}", "fixed": fixed})
        best_s = "-" if best is None else (f"{best['spec']} {best['slo_attainment']:.4f} "
                                           f"{best['accuracy'] * 100:.2f}%")
        margin_s = "-" if margin is None or math.isnan(margin) else f"{margin:+.3f}"
        print(f"{rate:6.0f} {s_att:.4f} {s_acc * 100:6.2f}% {best_s:>26} {margin_s:>8} "
              f"{'-' if kn < 0 else f'clipper:{kn}':>12}", flush=True)
    (args.out / "frontier.json").write_text(json.dumps({"rows": rows}, indent=1))
    plot(rows, table, args.out)
    print(f"wrote {args.out / 'frontier.json'} and {args.out / 'frontier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

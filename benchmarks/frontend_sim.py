"""A front end behind on its core, in the simulator: SlackFit with and without its front-end
rule (`slackfit:front=0` turns it off) against fixed subnets.

Live, the router, its HTTP front end and the load generator share CPU 0 in the issue's
placement. On the Azure code trace (bursts of ~400 requests within 50 ms) that core hands
requests to the router late: they reach its queue with a fraction of their SLO left, while
the worker idles much of the time. Here every request first takes `--frontend-ms` of one FIFO
stage (`SimConfig.frontend_s`) before the router's queue sees it; its deadline still counts
from its arrival. The world runs the shipped table x `--factor` with 10% jitter and
`--busy-ms` of dispatch per batch, and the router plans with the online calibration, as live.

Per cell: attainment and served accuracy (mean over `--seeds`), and, of the requests that
entered the queue with some but under half of their SLO left, the share that met it: the
requests only a quick answer saves.

    python benchmarks/frontend_sim.py [--cells azure-code@1000:0,0.3,0.45 ...]
        [--policies slackfit slackfit:front=0 clipper:0] [--seeds 3] [--duration 20]
        [--factor 1.45] [--busy-ms 0.8] [--out results/frontend_sim]

Writes frontend.json and frontend.png in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from superserve.profiling import default_table_path
from superserve.profiling.table import ProfileTable
from superserve.scheduling import make_policy
from superserve.scheduling.feedback import FRONT_END_SHARE
from superserve.sim.simulator import frontend_entries, simulate
from superserve.sim.world import (
    add_world_arguments,
    check_world_arguments,
    world_config,
)
from superserve.traces import load_trace

SLO_S = 0.050
DEFAULT_CELLS = ("azure-code@1000:0,0.3,0.45", "bursty@2000:0,0.45,0.48")
DEFAULT_POLICIES = ("slackfit", "slackfit:front=0", "clipper:0")


def parse_cell(text: str) -> tuple[str, float, list[float]]:
    """`KIND@RATE:MS,MS,...` -> (kind, rate, front-end ms per request)."""
    try:
        head, ms = text.split(":", 1)
        kind, rate = head.split("@", 1)
        fes = [float(x) for x in ms.split(",") if x]
        r = float(rate)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"cell {text!r}: expected KIND@RATE:MS[,MS...]") from e
    if kind not in ("azure-code", "bursty") or r <= 0 or not fes or min(fes) < 0:
        raise argparse.ArgumentTypeError(
            f"cell {text!r}: KIND is azure-code or bursty, RATE > 0, front-end ms >= 0")
    return kind, r, fes


def trace_spec(kind: str, rate: float, duration: float, seed: int) -> str:
    if kind == "azure-code":  # the real timestamps, rescaled: one trace whatever the seed
        return f"azure-llm:name=code,rate={rate:g},duration={duration:g}"
    return (f"bursty:base={rate / 2:g},variant={rate / 2:g},cv2=4,duration={duration:g},"
            f"seed={seed}")


def cell(table: ProfileTable, spec: str, kind: str, rate: float, fe_ms: float,
         args: argparse.Namespace) -> dict:
    """Mean attainment, accuracy and the late entries' attainment of `spec` over the seeds."""
    att, acc, late_met = [], [], []
    for seed in range(args.seeds):
        arr = np.asarray(load_trace(trace_spec(kind, rate, args.duration, seed)).arrivals_s)
        cfg = world_config(args, SLO_S, seed, frontend_s=fe_ms / 1e3, record_batches=True)
        r = simulate(arr, table, make_policy(spec, table, slo_s=SLO_S), cfg)
        att.append(r.slo_attainment)
        acc.append(r.mean_serving_accuracy)
        left = arr + SLO_S - (frontend_entries(arr, fe_ms / 1e3) if fe_ms > 0 else arr)
        late = (left > 0) & (left < FRONT_END_SHARE * SLO_S)
        if late.any():
            met = ~np.isnan(r.finish_s) & (r.finish_s - arr <= SLO_S + 1e-12)
            late_met.append(float(met[late].mean()))
    return {"spec": spec, "slo_attainment": float(np.mean(att)), "accuracy": float(np.mean(acc)),
            "late_entries_met": float(np.mean(late_met)) if late_met else None}


def plot(rows: list[dict], out: Path) -> None:
    """Per trace: attainment (top) and served accuracy (bottom) against the front end's cost
    per request, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["trace"], row["rate"]), []).append(row)
    fig, axes = plt.subplots(2, len(groups), figsize=(4.6 * len(groups), 6.0), squeeze=False,
                             sharex="col")
    for col, ((kind, rate), cells) in enumerate(groups.items()):
        fes = [c["frontend_ms"] for c in cells]
        for k, spec in enumerate(r["spec"] for r in cells[0]["policies"]):
            for row, key, mult in ((0, "slo_attainment", 1.0), (1, "accuracy", 100.0)):
                axes[row][col].plot(fes, [c["policies"][k][key] * mult for c in cells],
                                    marker="o", label=spec)
        axes[0][col].set_title(f"{kind} at {rate:g} req/s", fontsize=9)
        axes[1][col].set_xlabel("front end per request (ms)")
        for row in (0, 1):
            axes[row][col].grid(alpha=0.3)
    axes[0][0].set_ylabel("SLO attainment")
    axes[1][0].set_ylabel("served accuracy (%)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("a front end behind on its core (simulated, calibrated)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "frontend.png", dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=parse_cell, nargs="+",
                   default=[parse_cell(c) for c in DEFAULT_CELLS],
                   help="KIND@RATE:MS[,MS...]: a trace (azure-code or bursty, CV^2 4) at a "
                        "mean rate, run at each front-end cost per request")
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    add_world_arguments(p, seeds=3)
    p.add_argument("--out", type=Path, default=Path("results/frontend_sim"))
    args = p.parse_args()
    check_world_arguments(p, args)
    table = ProfileTable.load(default_table_path("resnet"))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"world: table x{args.factor:g}, {args.busy_ms:g} ms dispatch per batch, 10% jitter, "
          f"calibrated; {args.seeds} seed(s) x {args.duration:g} s per cell, SLO "
          f"{SLO_S * 1e3:.0f} ms; 'late': entered with under {FRONT_END_SHARE:g} of the SLO",
          flush=True)
    print(f"{'trace':>10} {'rate':>6} {'fe ms':>6}  {'policy':<20} {'attain':>7} {'accuracy':>9}"
          f" {'late met':>9}")
    rows = []
    for kind, rate, fes in args.cells:
        for fe in fes:
            res = [cell(table, spec, kind, rate, fe, args) for spec in args.policies]
            for c in res:
                lm = "-" if c["late_entries_met"] is None else f"{c['late_entries_met']:.3f}"
                print(f"{kind:>10} {rate:6.0f} {fe:6.2f}  {c['spec']:<20} "
                      f"{c['slo_attainment']:7.4f} {100 * c['accuracy']:8.2f}% {lm:>9}",
                      flush=True)
            rows.append({"trace": kind, "rate": rate, "frontend_ms": fe, "policies": res})
    (args.out / "frontend.json").write_text(json.dumps(
        {"slo_ms": SLO_S * 1e3, "factor": args.factor, "busy_ms": args.busy_ms,
         "seeds": args.seeds, "duration_s": args.duration, "rows": rows}, indent=2))
    plot(rows, args.out)
    print(f"wrote {args.out / 'frontend.json'} and {args.out / 'frontend.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

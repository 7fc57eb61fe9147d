"""Transients in the simulator: how fast SlackFit's defaults react to a stall or a co-tenant,
and how fast they let go once it has passed.

Two mechanisms act on a transient: the router's miss feedback (scheduling/feedback.py), which
multiplies the rate guard's headroom while requests miss, and the calibration's step detector
(scheduling/calibration.py), which cuts old evidence when the worker's cost jumps. This
compares, in one world (the shipped resnet table x1.45, 10% jitter, a 4 ms reserve per batch
of which 0.8 ms occupies the worker, calibration on, default `slackfit`, SLO 50 ms, the bursty
CV^2 4 trace, 1 worker):

  before          every miss counts toward a raise (1%), no step detector (until 2026-11-29)
  fresh           raises on fresh evidence only (0.5%), no step detector
  7 of 8          fresh evidence and the step detector without its fast path for strong
                  steps (the default before the fast path, also 2026-11-29)
  default         fresh evidence and the step detector (what `superserve serve` runs)

in five scenarios: steady 2,000 req/s; the worker x4 for 0.3 s at 10 s (a stall); x2 for 1 s
at 10 s; a CPU hog time-slicing the worker from 10 s of 30 at 1,000 req/s; and the hog as the
live batch log showed it (x5-x7 spikes of ~0.5 s, at its start and twice after). Prints
attainment, attainment over the last 10 s, and mean served accuracy: the mean over `--seeds`
traces. Deterministic; ~30 s at 8 seeds on this machine.

    python benchmarks/transients_sim.py [--seeds 8] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from superserve.profiling import default_table_path
from superserve.profiling.table import ProfileTable
from superserve.scheduling import make_policy
from superserve.scheduling.calibration import CalibrationConfig
from superserve.scheduling.feedback import FeedbackConfig
from superserve.sim.simulator import SimConfig, simulate
from superserve.traces import load_trace

SLO_S = 0.050
VARIANTS = {  # name: (miss feedback, calibration)
    "before": (FeedbackConfig(fresh_only=False, high=0.01), CalibrationConfig(step_keep=0.0)),
    "fresh": (FeedbackConfig(), CalibrationConfig(step_keep=0.0)),
    "7 of 8": (FeedbackConfig(), CalibrationConfig(strong_need=0)),
    "default": (FeedbackConfig(), CalibrationConfig()),
}
SCENARIOS = {  # name: (rate, duration, SimConfig extras)
    "steady 2000": (2000, 20, {}),
    "stall x4 0.3s": (2000, 20, {"factor_steps": ((10.0, 5.8), (10.3, 1.45))}),
    "stall x2 1s": (2000, 20, {"factor_steps": ((10.0, 2.9), (11.0, 1.45))}),
    "hog 1000": (1000, 30, {"preempt_s": 0.004, "preempt_from_s": 10.0}),
    # what the batch log showed of a live hog: x5-x7 for ~0.5 s at its start and every few
    # seconds, x1.5 (the machine's own) between
    "spikes 1000": (1000, 30, {"factor_steps": ((10.0, 7.0), (10.6, 2.1), (14.0, 7.0),
                                                (14.5, 2.1), (19.6, 7.0), (19.8, 2.1))}),
}


def run(table: ProfileTable, variant: tuple[FeedbackConfig, CalibrationConfig], rate: float,
        duration: float, extra: dict, seed: int) -> tuple[float, float, float]:
    tr = load_trace(f"bursty:base={rate / 2},variant={rate / 2},cv2=4,duration={duration},"
                    f"seed={seed}")
    arr = np.asarray(tr.arrivals_s)
    cfg = SimConfig(slo_s=SLO_S, overhead_s=0.004, busy_overhead_s=0.0008, calibrate=True,
                    latency_factor=1.45, jitter=0.1, seed=seed, record_batches=True,
                    feedback=variant[0], calibration=variant[1], **extra)
    r = simulate(arr, table, make_policy("slackfit", table, slo_s=SLO_S), cfg)
    lat = r.finish_s - arr
    met = ~np.isnan(lat) & (np.nan_to_num(lat, nan=np.inf) <= SLO_S + 1e-12)
    last = arr >= duration - 10
    return r.slo_attainment, float(met[last].mean()), r.mean_serving_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    table = ProfileTable.load(default_table_path("resnet"))
    out: dict[str, dict[str, list[float]]] = {}
    for scen, (rate, dur, extra) in SCENARIOS.items():
        for name, variant in VARIANTS.items():
            vals = np.mean([run(table, variant, rate, dur, extra, s)
                            for s in range(args.seeds)], axis=0)
            out.setdefault(scen, {})[name] = [round(float(v), 4) for v in vals]
            att, last, acc = vals
            print(f"{scen:14s} {name:8s} attainment {att:.4f}  last 10 s {last:.4f}  "
                  f"accuracy {acc * 100:.2f}%", flush=True)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Profile wall time of a user's OFA-MobileNetV3 on a labelled JPEG folder (issue 13, item 4),
with a search budget that fits a busy 2-core machine.

`superserve profile --model ofa_mbv3 --weights W --data DIR --max-subnets 30 --out T.json` is
the same run (run_profile) with the default search, which is now sized by --max-subnets and
bounded by --time-budget (default 30 min; docs/profiling.md). Before that, its 80 + 4 x 50
candidates (each calibrated on 200 images and scored on the whole validation split) were
estimated at 4-6 hours on this machine under a load of 7-9. Here the search is smaller (--population candidates, no generations, --search-calib images each) and
the measured frontier is calibrated on --calib images; everything else is the CLI's path:
decode the folder (models/imagefolder, the server's preprocessing), split it, search, fit the
predictors, measure >= --max-subnets subnets, write T.json and T.norm.pt.

    python benchmarks/ofa_profile.py --weights /tmp/ofa_byo/W.pth \\
        --data /tmp/ofa_byo/images --out /tmp/ofa_byo/T.json [--max-subnets 30]

With random weights (benchmarks/ofa_serve.py prepare) and synthetic images, the accuracies
mean nothing; the figure is the wall time per phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="ofa_mbv3")
    ap.add_argument("--max-subnets", type=int, default=30)
    ap.add_argument("--population", type=int, default=24)
    ap.add_argument("--search-calib", type=int, default=32)
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--predictor-samples", type=int, default=12)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    from superserve.models.imagefolder import load_image_folder
    from superserve.models.registry import model_input_spec
    from superserve.profiling.profiler import ProfileConfig, run_profile
    from superserve.profiling.search import SearchConfig

    t0 = time.perf_counter()
    data = load_image_folder(a.data, model_input_spec(a.model))
    decode_s = time.perf_counter() - t0
    cfg = ProfileConfig(batch_sizes=tuple(a.batch_sizes), repeats=a.repeats, warmup=1,
                        min_repeats=a.repeats, time_budget_s=None,
                        search_calib_images=a.search_calib, calib_images=a.calib,
                        max_subnets=a.max_subnets, predictor_samples=a.predictor_samples,
                        search=replace(SearchConfig(), population=a.population, generations=0,
                                       children=0))
    est = {}
    t1 = time.perf_counter()
    table = run_profile(a.model, a.out, cfg, weights=a.weights, data=data, resume=False,
                        on_estimate=est.update)
    prov = table.provenance
    b1 = [s.latency_ms[table.batch_sizes[0]] for s in table.subnets]
    print(json.dumps({
        "table": a.out, "subnets": len(table), "images": sum(len(s[0]) for s in
                                                              (data.train, data.val, data.test)),
        "split": [len(data.train[0]), len(data.val[0]), len(data.test[0])],
        "decode_folder_s": round(decode_s, 1),
        "profile_wall_s": round(time.perf_counter() - t1, 1),
        "estimate_s": round(est.get("total_s", 0), 1),
        "phase_seconds": prov.get("phase_seconds"),
        "candidates_evaluated": prov.get("candidates_evaluated"),
        "batch1_latency_ms": [round(min(b1), 1), round(max(b1), 1)],
        "batch_sizes": list(table.batch_sizes),
        "config": {k: getattr(a, k) for k in ("population", "search_calib", "calib",
                                               "predictor_samples", "repeats")},
    }, indent=1), file=sys.stdout)


if __name__ == "__main__":
    main()

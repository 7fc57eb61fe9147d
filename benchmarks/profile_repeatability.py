"""Repeatability of profiling: re-measure served subnets several times, compare medians.

For each of `--subnets` subnets spread over the table and each batch size, the median latency
is measured `--rounds` times (each round: warm-up + `--repeats` timed runs, as the profiler
does). Reports the spread (max/min - 1) of the round medians and the deviation of their median
from the table's value. The issue's target: repeated profiling agrees within 10% at the median.

    .venv/bin/python benchmarks/profile_repeatability.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="resnet")
    p.add_argument("--subnets", type=int, default=6)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch

    from superserve.data import load_mnist
    from superserve.models import load_supernet
    from superserve.profiling import default_table_path, norm_path
    from superserve.profiling.profiler import measure
    from superserve.profiling.table import ProfileTable
    from superserve.subnetact import NormStore

    path = default_table_path(args.family)
    table = ProfileTable.load(path)
    torch.set_num_threads(table.threads)
    net = load_supernet(args.family)
    if net.uses_norm_stats:
        net.norm_store = NormStore.load(norm_path(path))
    x = torch.from_numpy(load_mnist().train[0][: table.max_batch])
    ids = sorted({round(i * (len(table) - 1) / (args.subnets - 1)) for i in range(args.subnets)})
    rows, worst_spread, worst_dev = [], 0.0, 0.0
    with torch.inference_mode():
        for i in ids:
            spec = net.space.spec_from_dict(table.subnets[i].spec)
            for b in table.batch_sizes:
                meds = [measure(lambda: net(x[:b], spec), args.repeats, 3)[0] * 1e3
                        for _ in range(args.rounds)]
                spread = max(meds) / min(meds) - 1
                dev = statistics.median(meds) / table.subnets[i].latency_ms[b] - 1
                worst_spread, worst_dev = max(worst_spread, spread), max(worst_dev, abs(dev))
                rows.append({"subnet": i, "batch": b, "medians_ms": [round(m, 3) for m in meds],
                             "spread": spread, "vs_table": dev})
    out = {"table": str(path), "threads": table.threads, "rounds": args.rounds,
           "max_spread_of_medians": worst_spread,
           "median_spread": statistics.median(r["spread"] for r in rows),
           "max_abs_deviation_from_table": worst_dev,
           "median_abs_deviation_from_table": statistics.median(abs(r["vs_table"]) for r in rows),
           "rows": rows if not args.json else len(rows)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

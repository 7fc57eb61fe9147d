"""`superserve experiment NAME --table FILE --out DIR [--quick] [--json]`.

Simulated: fig1c, fig8, fig9, fig10, fig11a, fig11c (superserve.experiments.simulated).
Live (servers started here): live-tradeoff, live-fault (superserve.experiments.live).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SIMULATED = ("fig1c", "fig8", "fig9", "fig10", "fig11a", "fig11c")
LIVE = ("live-tradeoff", "live-fault")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=SIMULATED + LIVE + ("all",))
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--quick", action="store_true", help="small grids, short traces")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the records as one JSON list")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from superserve.commands.simulate import load_table

    names = SIMULATED if args.name == "all" else (args.name,)
    records: list[dict] = []
    for name in names:
        out = args.out / name
        if name in LIVE:
            from superserve.experiments.live import run_live_experiment

            records += run_live_experiment(name, args, out)
            continue
        from superserve.experiments.simulated import Ctx, run_experiment

        bar = tqdm(desc=name, unit="run", file=sys.stderr, leave=False)
        ctx = Ctx(load_table(args.table), out, args.quick, slo_s=args.slo_ms / 1e3,
                  seed=args.seed, progress=lambda s: (bar.update(1), bar.set_postfix_str(s[:40])))
        recs = run_experiment(name, ctx)
        bar.close()
        records += recs
        if not args.json:
            _print(name, recs, out, ctx.scale)
    if args.json:
        keys = ("experiment", "cell", "policy", "slo_attainment", "mean_serving_accuracy")
        print(json.dumps([{k: r[k] for k in keys} for r in records]))
    return 0


def _print(name: str, recs: list[dict], out: Path, scale: float) -> None:
    print(f"== {name}  (paper rates x {scale:.4f}; CSV and PNG in {out})")
    print(f"{'cell':28s} {'policy':24s} {'attain':>8s} {'acc %':>7s}")
    for r in recs:
        print(f"{r['cell']:28s} {r['policy']:24s} {r['slo_attainment']:8.4f} "
              f"{100 * r['mean_serving_accuracy']:7.2f}")

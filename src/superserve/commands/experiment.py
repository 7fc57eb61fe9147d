"""`superserve experiment NAME --table FILE --out DIR [--quick] [--json]`.

NAME is any registered experiment (superserve.experiments.EXPERIMENTS): the simulated fig1c,
fig8, fig9, fig10, fig11a, fig11c, the live live-tradeoff and live-fault, or `all` (every
simulated one). Each writes CSV, PNG plots and a meta.json (rate scale and how it was
computed) under DIR/NAME.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from superserve.experiments import EXPERIMENTS

    p.add_argument("name", choices=[*EXPERIMENTS, "all"],
                   help="; ".join(f"{e.name}: {e.help}" for e in EXPERIMENTS.values()))
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--quick", action="store_true", help="small grids, short traces (< 1 min)")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--workers", type=int, default=8, help="simulated workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=["grpc", "http"], default="http",
                   help="what the load generator speaks (live runs; HTTP is the cheaper front "
                        "end here)")
    p.add_argument("--json", action="store_true", help="print the records as one JSON list")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="live-fault: worker processes (local) or Ray actors (ray; docs/ray.md)")


def run(args: argparse.Namespace) -> int:
    from superserve.experiments import EXPERIMENTS

    names = [n for n, e in EXPERIMENTS.items() if e.kind == "sim"] if args.name == "all" \
        else [args.name]
    records: list[dict] = []
    table = None  # loaded once: `all` runs every experiment on the same table
    for name in names:
        entry = EXPERIMENTS[name]
        module = importlib.import_module(entry.module)
        out = args.out / name
        if entry.kind == "live":
            records += module.run_live_experiment(name, args, out)
            continue
        if table is None:
            from superserve.commands.simulate import load_table

            table = load_table(args.table)
        recs, summary, scale = _run_sim(module, name, args, out, table)
        records += recs
        if not args.json:
            _print(name, recs, summary, out, scale)
    if args.json:
        keys = ("experiment", "cell", "policy", "slo_attainment", "mean_serving_accuracy")
        fault = ("backend", "requests", "answered", "lost", "kills")  # live-fault adds these
        print(json.dumps([{**{k: r.get(k) for k in keys},
                           **({k: r[k] for k in fault if k in r} if "backend" in r else {})}
                          for r in records]))
    return 0


def _run_sim(module, name: str, args: argparse.Namespace, out: Path, table):
    from tqdm import tqdm

    from superserve.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    bar = tqdm(desc=name, unit="run", file=sys.stderr, leave=False)

    def progress(s: str) -> None:
        bar.update(1)
        bar.set_postfix_str(s[:40])

    ctx = module.Ctx(table, out, args.quick, slo_s=args.slo_ms / 1e3,
                     workers=args.workers, seed=args.seed, progress=progress)
    try:
        recs = module.run_experiment(name, ctx)
    finally:
        bar.close()
    summary = json.loads((out / f"{name}.meta.json").read_text()).get("summary", {})
    return recs, summary, ctx.scale


def _print(name: str, recs: list[dict], summary: dict, out: Path, scale) -> None:
    print(f"== {name}  ({scale.how}; CSV and PNG in {out})")
    print(f"{'cell':28s} {'policy':24s} {'attain':>8s} {'acc %':>7s}")
    for r in recs:
        print(f"{r['cell']:28s} {r['policy']:24s} {r['slo_attainment']:8.4f} "
              f"{100 * r['mean_serving_accuracy']:7.2f}")
    for k, v in summary.items():
        print(f"{k}: {v}")

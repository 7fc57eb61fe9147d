"""`superserve profile --model CKPT|resnet|vit --out FILE [--batch-sizes ...] [--threads N]`
and `superserve profile show FILE [--json] [--plot PNG]`."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["show"], help="show an existing table")
    p.add_argument("file", nargs="?", help="the table to show")
    p.add_argument("--model", default="resnet",
                   help="checkpoint path, family name or pkg.module:factory")
    p.add_argument("--weights", default=None,
                   help="the family's weights: a published OFA checkpoint ({'state_dict': ...} "
                        "or bare) or a SuperServe checkpoint")
    p.add_argument("--data", default=None,
                   help="a labelled image folder (class sub-folders, or flat with "
                        "--image-labels): calibration, validation and test splits (default: "
                        "the family's training set)")
    p.add_argument("--labels", default=None,
                   help="with --data: class names, one per line, in output-index order")
    p.add_argument("--image-labels", default=None, metavar="FILE",
                   help="with --data: each image's class, '<image path under DIR> <class>' a "
                        "line (the ImageNet validation layout: a flat folder and val.txt), the "
                        "class an output index or a class name")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore the search journal an interrupted run left beside --out")
    p.add_argument("--out", default=None, help="table path (default: the shipped table)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the worker's)")
    p.add_argument("--max-subnets", type=int, default=None,
                   help="frontier points measured (default: ProfileConfig's)")
    p.add_argument("--generations", type=int, default=None,
                   help="search generations (default 4, cut short by --time-budget)")
    p.add_argument("--time-budget", type=float, default=30.0,
                   help="minutes the whole profile should take (default 30): the phases after "
                        "the search are fixed by --max-subnets and the data, and the search "
                        "gets what they leave (at least 24 candidates); 0: no bound")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per batch size")
    p.add_argument("--calib-images", type=int, default=None,
                   help="SubnetNorm calibration images of the served subnets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--monotone", action="store_true",
                   help="enforce P1/P2 by a monotone fit before saving")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default=None, help="with show: the frontier plot (PNG)")
    p.add_argument("--latency-only", action="store_true",
                   help="re-time an existing table on this machine (--table, default the "
                        "shipped one of --model): same subnets and accuracies, new latencies, "
                        "written to --out (default ./<family>.<host>.json; never the shipped "
                        "table)")
    p.add_argument("--keep-level", action="store_true",
                   help="with --latency-only: keep the source table's level and take only the "
                        "shape across batch sizes from this machine. Every latency is scaled "
                        "by one factor, the median old/new at the largest batch size, where a "
                        "forward is almost all arithmetic. Use it to correct a table timed on "
                        "a costlier code path without timing it on the original machine")
    p.add_argument("--speed", action="store_true",
                   help="only measure how much slower (>1) or faster this machine runs the "
                        "table's subnets (--table, default the shipped one of --model): the "
                        "start-up check's 9 (subnet, batch) pairs, a few seconds, nothing "
                        "written; run it where the worker will run (taskset -c N)")
    p.add_argument("--noise-s", type=float, default=3.0,
                   help="with --speed: then time a fixed unit of Python work back to back for "
                        "this long and report how steady this CPU is (stalls per second, the "
                        "longest, the speed's swing); 0: skip")
    p.add_argument("--table", default=None,
                   help="with --latency-only / --speed: the table to re-time / compare with")
    p.add_argument("--device", default="cpu",
                   help="where latencies are timed, the device the workers will serve on: cpu, "
                        "cuda or cuda:N (the table records it; default cpu)")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return show(args)
    if args.keep_level and not args.latency_only:
        from superserve.errors import ConfigError

        raise ConfigError("--keep-level re-times a table: it needs --latency-only")
    if args.latency_only:
        return latency_only(args)
    if args.speed:
        return speed(args)
    from dataclasses import replace

    from tqdm import tqdm

    from superserve.profiling import default_table_path
    from superserve.profiling.profiler import ProfileConfig, run_profile
    if args.time_budget < 0:
        from superserve.errors import ConfigError

        raise ConfigError(f"--time-budget must be >= 0 minutes, got {args.time_budget}")
    cfg = ProfileConfig(batch_sizes=tuple(args.batch_sizes), threads=args.threads, seed=args.seed,
                        device=args.device,
                        time_budget_s=args.time_budget * 60 if args.time_budget else None)
    for flag in ("max_subnets", "repeats", "calib_images"):
        if getattr(args, flag) is not None:
            cfg = replace(cfg, **{flag: getattr(args, flag)})
    if args.generations is not None:  # after max_subnets: the search is sized by it
        cfg = replace(cfg, search=replace(cfg.search_config(), generations=args.generations))
    if (args.weights or args.data) and not args.out:
        from superserve.errors import ConfigError

        raise ConfigError("--weights/--data profile a user's model: pass --out FILE")
    out = args.out or default_table_path(args.model if args.model in ("resnet", "vit") else "custom")
    data = None
    if args.data:
        from superserve.models import build_supernet
        from superserve.models.imagefolder import load_image_folder

        spec_in = build_supernet(args.model).input_spec
        with tqdm(desc="decode images", file=sys.stderr) as bar:
            def decoded(i: int, n: int) -> None:
                bar.total = n
                bar.update(i - bar.n)

            data = load_image_folder(args.data, spec_in, seed=args.seed, labels_file=args.labels,
                                     progress=decoded, image_labels=args.image_labels)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, i: int, n: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=n, desc=stage, file=sys.stderr)
        bar.total = n
        bar.update(i - bar.n)

    def estimate(e: dict) -> None:
        if "remaining_s" in e:  # after the search, at its measured pace
            print(f"\nsearch done after {e['elapsed_s'] / 60:.1f} min; about "
                  f"{e['remaining_s'] / 60:.1f} min to go", file=sys.stderr, flush=True)
            return
        cut = (f" of {e['search_candidates_unbounded']:.0f}, cut to fit --time-budget"
               if e["search_candidates"] < e["search_candidates_unbounded"] else "")
        print(f"estimated time: ~{e['total_s'] / 60:.1f} min (latency model "
              f"{e['latency_model_s'] / 60:.1f}, search {e['search_s'] / 60:.1f} for "
              f"{e['search_candidates']:.0f} candidates{cut}, calibrate + score "
              f"{e['final_calibrate_and_score_s'] / 60:.1f}, timing {e['timing_s'] / 60:.1f}, "
              f"load times {e['load_times_s'] / 60:.1f})", file=sys.stderr, flush=True)

    table = run_profile(args.model, out, cfg, progress, weights=args.weights, data=data,
                        resume=not args.no_resume, on_estimate=estimate)
    for b in bars.values():
        b.close()
    t = table.to_dict()  # the violations as measured, reported even when fitted away below
    if args.monotone:
        table = table.monotone()
        table.save(out)
    b1 = [s.latency_ms[table.batch_sizes[0]] for s in table.subnets]
    prov = table.provenance
    summary = {"table": str(out), "subnets": len(table),
               "batch1_latency_span": round(max(b1) / min(b1), 2),
               "accuracy_range": [table.acc[0], table.acc[-1]],
               "profile_seconds": prov.get("profile_seconds"),
               "estimate_seconds": (prov.get("estimate_seconds") or {}).get("total_s"),
               "search_stopped_by_time_budget": (prov.get("search") or {}).get(
                   "stopped_by_time_budget"),
               "phase_seconds": prov.get("phase_seconds"),
               **{k: prov.get(k) for k in ("candidates_evaluated", "pareto_points_score",
                                           "pareto_points_top1", "pareto_points_p_true",
                                           "pareto_points_predicted_score",
                                           "pareto_points_measured_after_calibration",
                                           "accuracy_predictor", "measured",
                                           "served_after_measurement")},
               "monotone_fit": args.monotone,
               "p1_violations_measured": len(t["p1_violations"]),
               "p2_violations_measured": len(t["p2_violations"])}
    print(json.dumps(summary, indent=None if args.json else 1))
    return 0


def latency_only(args: argparse.Namespace) -> int:
    import platform
    from pathlib import Path

    from tqdm import tqdm

    from superserve.profiling import default_table_path
    from superserve.profiling.retime import retime_table

    src = Path(args.table) if args.table else default_table_path(args.model)
    out = Path(args.out) if args.out else Path(f"{Path(src).stem}.{platform.node() or 'here'}"
                                               ".json")
    if out.resolve() == Path(src).resolve():
        from superserve.errors import ConfigError

        raise ConfigError(f"--out {out} is the table being re-timed; name another file")
    bar = tqdm(total=1, desc="re-timing (rounds over every subnet and batch size)",
               file=sys.stderr)

    def progress(stage: str, i: int, n: int) -> None:
        bar.total = n
        bar.update(i - bar.n)

    table = retime_table(src, args.model, out, threads=args.threads,
                         repeats=args.repeats or 20, device=args.device, progress=progress,
                         monotone=args.monotone, keep_level=args.keep_level)
    bar.close()
    r = table.provenance["retimed"]
    print(json.dumps({"table": str(out), "from": str(src), "subnets": len(table),
                      "machine": r["timed_on"],
                      "median_ratio_new_over_old": round(r["median_ratio_new_over_old"], 3),
                      "seconds": r["seconds"], "monotone_fit": args.monotone,
                      **({"level_factor": round(r["level"]["factor"], 4),
                          "level_kept_at_batch": r["level"]["kept_at_batch"]}
                         if "level" in r else {}),
                      "p1_violations": len(table.p1_violations()),
                      "p2_violations": len(table.p2_violations())},
                     indent=None if args.json else 1))
    return 0


def speed(args: argparse.Namespace) -> int:
    """`profile --speed`: this machine's latency / the table's, on the start-up check's pairs."""
    import os
    from pathlib import Path

    from superserve.errors import ConfigError
    from superserve.profiling import default_table_path
    from superserve.profiling.noise import measure_host_noise
    from superserve.profiling.retime import machine_description, speed_factor
    from superserve.profiling.table import ProfileTable
    from superserve.runtime.runners import probe_pairs

    src = Path(args.table) if args.table else default_table_path(args.model)
    table = ProfileTable.load(src)
    if not args.noise_s >= 0:  # NaN too
        raise ConfigError(f"--noise-s must be >= 0, got {args.noise_s}")
    factor, measured = speed_factor(src, args.model, probe_pairs(table), threads=args.threads,
                                    repeats=args.repeats or 7, device=args.device)
    noise = measure_host_noise(args.noise_s) if args.noise_s > 0 else None
    print(json.dumps({
        "table": str(src), "table_machine": table.provenance.get("machine", "unknown"),
        "machine": machine_description(),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "speed_factor": round(factor, 3),
        "probes": [{"subnet": i, "batch": b, "measured_ms": round(sec * 1e3, 3),
                    "profiled_ms": round(table.latency_s(i, b) * 1e3, 3)}
                   for i, b, sec in measured],
        **({} if noise is None else {"host_noise": noise.to_dict()}),
    }, indent=None if args.json else 1))
    return 0


def show(args: argparse.Namespace) -> int:
    from superserve.errors import ConfigError
    from superserve.profiling.table import ProfileTable

    if not args.file:
        raise ConfigError("profile show needs a table file")
    table = ProfileTable.load(args.file)
    d = table.to_dict()
    if args.plot:
        plot_frontier(table, args.plot)
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{table.family} on {table.device} x{table.threads} threads, {len(table)} subnets, "
          f"checkpoint {table.checkpoint_sha256[:12]}, P1 violations {len(d['p1_violations'])}, "
          f"P2 violations {len(d['p2_violations'])}")
    head = f"{'id':>3s} {'acc':>6s} {'val':>6s} {'test':>6s} {'score':>7s} {'MFLOPs':>8s} " + \
        " ".join(f"{'b' + str(b) + ' ms':>8s}" for b in table.batch_sizes)
    print(head)
    pct = lambda v: f"{100 * v:6.2f}" if v is not None else f"{'-':>6s}"
    for s in table.subnets:
        score = f"{s.score:7.4f}" if s.score is not None else f"{'-':>7s}"
        print(f"{s.id:3d} {pct(s.accuracy)} {pct(s.val_top1)} {pct(s.test_accuracy)} {score} "
              f"{s.flops / 1e6:8.2f} " + " ".join(f"{s.latency_ms[b]:8.2f}"
                                                  for b in table.batch_sizes))
    for kind in ("p1_violations", "p2_violations"):
        for v in d[kind][:10]:
            print(f"{kind[:2].upper()} violation: {json.dumps(v)}")
    return 0


def plot_frontier(table, path: str) -> None:
    """Accuracy vs latency per batch size, like the paper's Fig. 6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j, b in enumerate(table.batch_sizes):
        ax.plot([r[j] * 1e3 for r in table.lat_s], [100 * a for a in table.acc], "o-", ms=3,
                label=f"batch {b}")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{table.family}: {len(table)} Pareto subnets ({table.device}, "
                 f"{table.threads} thread(s))")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

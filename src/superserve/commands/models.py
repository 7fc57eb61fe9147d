"""`superserve models [--json] [--families F ...]`: the registered supernet families (built in,
entry points of installed plugins, or pkg.module:factory), their search spaces, input
contracts, shipped-checkpoint accuracy and batch-1 latency on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the latencies")
    p.add_argument("--families", nargs="+", default=None,
                   help="families to describe (default: every registered one); a family may "
                        "be given as pkg.module:factory")
    p.add_argument("--no-latency", action="store_true",
                   help="skip the latency measurement (OFA families at 224 px take seconds)")


def describe(family: str, threads: int, latency: bool = True) -> dict:
    import torch

    from superserve.bench.subnetact import _median_time
    from superserve.models import build_supernet, get_family, load_supernet

    torch.set_num_threads(threads)
    info = get_family(family)
    shipped = info.default_checkpoint is not None
    # a family without a shipped checkpoint is described from a randomly initialised supernet:
    # sizes, space and latency do not depend on the weights (accuracy does: reported as None)
    net = load_supernet(info.name) if shipped else build_supernet(info.name).eval()
    m = getattr(net, "metrics", {}) if shipped else {}
    lat: dict[str, float | None] = {"largest": None, "smallest": None}
    if latency:
        repeats = 100 if shipped else 5
        with torch.inference_mode():
            for name, spec in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
                if net.uses_norm_stats and not net.norm_store.has(spec):
                    net.store_shared_stats([spec])  # statistics' values do not change timings
                r = getattr(spec, "r", None) or net.input_spec.height
                x = torch.rand(1, net.input_spec.channels, r, r)
                lat[name] = _median_time(lambda x=x, spec=spec: net(x, spec), repeats,
                                         warmup=10 if shipped else 2) * 1e3
    ckpt = info.default_checkpoint
    return {
        "family": info.name, "description": info.description, "origin": info.origin,
        "checkpoint": ckpt, "weights_required": not shipped,
        "checkpoint_mb": Path(ckpt).stat().st_size / 2**20 if shipped else None,
        "params": sum(p.numel() for p in net.parameters()),
        "search_space_size": net.space.size(),
        "input": net.input_spec.to_dict(),
        "spec_example": net.space.smallest().to_dict(),
        "test_accuracy_largest": m.get("test_accuracy_largest"),
        "test_accuracy_smallest": m.get("test_accuracy_smallest"),
        "test_accuracy_smallest_without_subnetnorm": m.get("test_accuracy_smallest_shared_bn"),
        "latency_ms_largest_b1": lat["largest"], "latency_ms_smallest_b1": lat["smallest"],
        "latency_weights": "shipped checkpoint" if shipped else "random (timing only)",
        "threads": threads, "train_seconds": m.get("train_seconds"),
    }


def run(args: argparse.Namespace) -> int:
    from superserve.models import family_names

    families = args.families or family_names()
    models = [describe(f, args.threads, not args.no_latency) for f in families]
    if args.json:
        print(json.dumps({"models": models}))
        return 0
    num = lambda v, w, p: f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}s}"
    print(f"{'family':14s} {'params':>10s} {'subnets':>10s} {'input':>9s} {'acc large':>9s} "
          f"{'acc small':>9s} {'ms large':>8s} {'ms small':>8s}")
    for m in models:
        i = m["input"]
        print(f"{m['family']:14s} {m['params']:10d} {m['search_space_size']:10.3g} "
              f"{i['channels']}x{i['height']}x{i['width']:<3d} "
              f"{num(m['test_accuracy_largest'], 9, 4)} {num(m['test_accuracy_smallest'], 9, 4)} "
              f"{num(m['latency_ms_largest_b1'], 8, 2)} {num(m['latency_ms_smallest_b1'], 8, 2)}")
    return 0

"""`superserve models [--json]`: the shipped supernets, their accuracy and latency."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the latencies")
    p.add_argument("--families", nargs="+", default=["resnet", "vit"])


def describe(family: str, threads: int) -> dict:
    import torch

    from superserve.bench.subnetact import _median_time
    from superserve.models import checkpoint_path, load_supernet

    torch.set_num_threads(threads)
    net = load_supernet(family)
    m = net.metrics
    x = torch.rand(1, 1, net.config.image_size, net.config.image_size)
    lat = {}
    with torch.inference_mode():
        for name, spec in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
            lat[name] = _median_time(lambda: net(x, spec), 100, warmup=10) * 1e3
    return {
        "family": family, "checkpoint": str(checkpoint_path(family)),
        "checkpoint_mb": checkpoint_path(family).stat().st_size / 2**20,
        "params": sum(p.numel() for p in net.parameters()),
        "search_space_size": net.space.size(),
        "test_accuracy_largest": m.get("test_accuracy_largest"),
        "test_accuracy_smallest": m.get("test_accuracy_smallest"),
        "test_accuracy_smallest_without_subnetnorm": m.get("test_accuracy_smallest_shared_bn"),
        "latency_ms_largest_b1": lat["largest"], "latency_ms_smallest_b1": lat["smallest"],
        "threads": threads, "train_seconds": m.get("train_seconds"),
    }


def run(args: argparse.Namespace) -> int:
    models = [describe(f, args.threads) for f in args.families]
    if args.json:
        print(json.dumps({"models": models}))
        return 0
    print(f"{'family':8s} {'params':>9s} {'subnets':>12s} {'acc large':>9s} {'acc small':>9s} "
          f"{'ms large':>8s} {'ms small':>8s}")
    for m in models:
        print(f"{m['family']:8s} {m['params']:9d} {m['search_space_size']:12.3g} "
              f"{m['test_accuracy_largest']:9.4f} {m['test_accuracy_smallest'] or 0:9.4f} "
              f"{m['latency_ms_largest_b1']:8.2f} {m['latency_ms_smallest_b1']:8.2f}")
    return 0

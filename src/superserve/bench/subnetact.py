"""`superserve bench subnetact`: what SubNetAct buys over loading separate models.

- actuation_us_p50: extra time of a batch whose subnet differs from the previous batch's, over
  a batch of the same subnet that repeats (median of paired differences).
- load_extracted_ms_p50: torch.load of a materialized subnet from disk into a ready module
  (what a model-loading system such as INFaaS pays on every switch).
- latency_ratio_supernet_vs_materialized: median over random specs at batch 8 of
  median time supernet(x, spec) / median time materialized(x).
- memory: the supernet's weights + the SubnetNorm statistics of every served subnet, against 6
  materialized subnets spread evenly by FLOPs (the paper's comparison).
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MB = 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", default="resnet", choices=["resnet", "vit"])
    p.add_argument("--model", default=None, help="checkpoint path (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the worker's)")
    p.add_argument("--specs", type=int, default=24, help="random specs for the latency ratio")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", action="store_true")


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def spread_by_flops(net, n: int, pool: int = 3000, seed: int = 0) -> list:
    """n distinct subnets whose FLOPs step evenly from the smallest's to the largest's.

    Random samples crowd the middle of the FLOPs range, so the pool adds mutations of the
    largest and the smallest subnet; each evenly spaced FLOPs target takes the nearest
    candidate not taken yet."""
    space, rng = net.space, random.Random(seed)
    lo, hi = space.smallest(), space.largest()
    cands = {space.sample(rng) for _ in range(pool)} | {lo, hi}
    for prob in (0.05, 0.1, 0.2, 0.4):
        for _ in range(pool // 8):
            cands.add(space.mutate(hi, rng, prob))
            cands.add(space.mutate(lo, rng, prob))
    ranked = sorted(cands, key=lambda s: (net.flops(s), s.to_dict().__repr__()))
    flops = [net.flops(s) for s in ranked]
    f_lo, f_hi = flops[0], flops[-1]
    taken: set[int] = set()
    for i in range(min(n, len(ranked))):
        target = f_lo + i * (f_hi - f_lo) / max(1, n - 1)
        j = bisect.bisect_left(flops, target)
        # nearest untaken candidate on either side of the target
        left, right = j - 1, j
        while left in taken:
            left -= 1
        while right in taken:
            right += 1
        options = [k for k in (left, right) if 0 <= k < len(ranked)]
        taken.add(min(options, key=lambda k: abs(flops[k] - target)))
    return [ranked[k] for k in sorted(taken)]


def stats_nbytes(net, spec) -> int:
    """Bytes the NormStore keeps for `spec`: fp16 mean + var of every active BN channel."""
    if not net.uses_norm_stats:
        return 0
    ch = net.config.stem_channels
    for _, b, mid, out in net.layout(spec):
        ch += 2 * mid + out + (out if b == 0 else 0)
    return 2 * 2 * ch


def module_bytes(m) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from superserve.data import load_mnist
    from superserve.models import load_supernet
    from superserve.runtime.devices import widen_kernel_cache
    from superserve.subnetact import materialize

    widen_kernel_cache()  # as the worker's
    torch.set_num_threads(args.threads)
    net = load_supernet(args.model or args.family)
    data = load_mnist()
    served, source = _served_specs(net, args.family)
    calib_x = data.train[0]
    rng = random.Random(1)
    rand_specs = [net.space.sample(rng) for _ in range(args.specs)]
    # a model zoo covering the supernet's range: the paper's 6 extracted subnets
    six = spread_by_flops(net, 6)
    need = [s for s in served + rand_specs + six if net.uses_norm_stats and not net.norm_store.has(s)]
    net.calibrate(need, calib_x, n=256)  # statistics' values do not change timings
    x8 = torch.from_numpy(data.test[0][:8])

    with torch.inference_mode():
        # latency ratio supernet vs materialized, batch 8
        ratios = []
        for spec in rand_specs:
            m = materialize(net, spec)
            t_super = _median_time(lambda: net(x8, spec), args.repeats)
            t_mat = _median_time(lambda: m(x8), args.repeats)
            ratios.append(t_super / t_mat)
        # actuation: paired batch-1 forwards of the same subnet, one right after a batch of
        # that subnet, one right after a batch of another; which of the two runs first is
        # random, so neither inherits a warmer cache systematically
        x1 = x8[:1]
        diffs = []
        pairs = list(zip(served[::2], served[1::2]))[:10] or [(served[0], served[-1])]
        order = random.Random(2)

        def timed(prev, spec) -> float:
            net(x1, prev)
            t0 = time.perf_counter()
            net(x1, spec)
            return time.perf_counter() - t0

        for s1, s2 in pairs:
            for _ in range(3):
                net(x1, s1), net(x1, s2)
            for _ in range(args.repeats):
                if order.random() < 0.5:
                    same = timed(s2, s2)
                    switched = timed(s1, s2)
                else:
                    switched = timed(s1, s2)
                    same = timed(s2, s2)
                diffs.append(switched - same)
        # what a switch changes per call: the spec's statistics and block layout lookups
        lookups = []
        for s1, s2 in pairs:
            for spec in (s1, s2) * args.repeats:
                t0 = time.perf_counter()
                if net.uses_norm_stats:
                    net.norm_store.get(spec)
                    net.layout(spec)
                lookups.append(time.perf_counter() - t0)
        # loading a materialized subnet from disk
        loads = []
        with tempfile.TemporaryDirectory() as d:
            for i, spec in enumerate(six):
                path = Path(d) / f"{i}.pt"
                torch.save(materialize(net, spec), path)
                for _ in range(5):
                    t0 = time.perf_counter()
                    mod = torch.load(path, weights_only=False).eval()
                    mod(x8[:1])  # ready: one forward done
                    loads.append(time.perf_counter() - t0)
        mem_six = sum(module_bytes(materialize(net, s)) for s in six)
        six_served = [served[round(i * (len(served) - 1) / 5)] for i in range(6)]
        mem_six_served = sum(module_bytes(materialize(net, s)) for s in six_served)

    cache = net.norm_store.cache_nbytes() if net.uses_norm_stats else 0
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    stats_served = sum(stats_nbytes(net, s) for s in served)
    many = spread_by_flops(net, 500, pool=6000, seed=2)
    stats_500 = sum(stats_nbytes(net, s) for s in many)
    per_subnet = [stats_nbytes(net, s) / weights for s in served]
    return {
        "family": net.family, "threads": args.threads,
        "actuation_us_p50": max(0.0, statistics.median(diffs) * 1e6),
        "actuation_us_p50_raw": statistics.median(diffs) * 1e6,
        "actuation_lookup_us_p50": statistics.median(lookups) * 1e6,
        "load_extracted_ms_p50": statistics.median(loads) * 1e3,
        "latency_ratio_supernet_vs_materialized": statistics.median(ratios),
        "latency_ratio_p90": sorted(ratios)[int(0.9 * (len(ratios) - 1))],
        "served_subnets": len(served), "served_source": source,
        "memory_mb_supernet_weights": weights / MB,
        "memory_mb_supernet_with_stats": (weights + stats_served) / MB,
        "stats_fraction_per_subnet": statistics.mean(per_subnet),
        "stats_fraction_per_subnet_max": max(per_subnet),
        "memory_mb_6_extracted": mem_six / MB,
        "memory_ratio_6": mem_six / (weights + stats_served),
        "memory_mb_6_extracted_served_range": mem_six_served / MB,
        "memory_mb_supernet_with_500_stats": (weights + stats_500) / MB,
        "memory_ratio_6_with_500": mem_six / (weights + stats_500),
        # fp32 views the NormStore caches for the subnets this run touched (switch speed)
        "memory_mb_stats_cache_fp32": cache / MB,
    }


def _served_specs(net, family: str) -> tuple[list, str]:
    """The shipped table's subnets (and their statistics, from beside the table) when the
    table exists, else 30 subnets spread evenly by FLOPs."""
    from superserve.profiling import ProfileTable, default_table_path, norm_path
    from superserve.subnetact import NormStore

    path = default_table_path(family)
    if path.exists():
        table = ProfileTable.load(path)
        if net.uses_norm_stats and norm_path(path).exists():
            net.norm_store.update(NormStore.load(norm_path(path)))
        return [net.space.spec_from_dict(s.spec) for s in table.subnets], str(path)
    return spread_by_flops(net, 30), "30 subnets spread evenly by FLOPs"


def run(args: argparse.Namespace) -> int:
    result = run_bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:45s} {v:.4g}" if isinstance(v, float) else f"{k:45s} {v}")
    return 0

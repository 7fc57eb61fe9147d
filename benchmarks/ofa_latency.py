"""OFA families on SubNetAct vs the reference's extracted subnets (PyPI `ofa`, random weights).

Per family (ofa_resnet50, ofa_mbv3), at 224 px, one torch thread by default:

- latency: our supernet(x, spec) vs the reference's `set_active_subnet` + `get_active_subnet`
  module, for the smallest, the largest and --specs sampled subnets, batch 1 and 8; the two
  are timed interleaved (ours, theirs, ours, ...) so load from other processes hits both;
  medians, and the ratio ours / theirs per subnet (target: <= 1.15 at batch 8);
- conformance: max abs difference of the outputs over those subnets (same BN statistics);
- actuation: what switching subnets costs us (validate the spec + fetch its SubnetNorm
  statistics, cold) vs building an extracted subnet (get_active_subnet) and loading one
  saved to disk (torch.load);
- memory: the supernet plus SubnetNorm statistics of --served subnets vs 6 extracted subnets
  spread by FLOPs (parameters and buffers).

    python benchmarks/ofa_latency.py [--families ofa_resnet50 ofa_mbv3] [--specs 4]
        [--repeats 10] [--threads 1] [--json OUT]

`ofa` imports torchvision in its data loaders only; a stub stands in for it here.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time

from superserve.models.ofa_reference import reference_networks


def _reference(family: str):
    OFAMobileNetV3, OFAResNets = reference_networks()
    if family == "ofa_resnet50":
        return OFAResNets(n_classes=1000, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                          width_mult_list=[0.65, 0.8, 1.0])
    return OFAMobileNetV3(n_classes=1000, width_mult=1.2, ks_list=[3, 5, 7],
                          expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])


def _kw(spec) -> dict:
    d = spec.to_dict()
    d.pop("family"), d.pop("r")
    return d


def _extract(ref, spec):
    ref.set_active_subnet(**_kw(spec))
    return ref.get_active_subnet(preserve_weight=True).eval()


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def bench_family(family: str, args) -> dict:
    import torch

    from superserve.models import build_supernet
    from superserve.models.ofa_weights import IMAGENET_MEAN, IMAGENET_STD, load_ofa_state_dict

    torch.manual_seed(0)
    ref = _reference(family).eval()
    net = build_supernet(family).eval()
    load_ofa_state_dict(net, ref.state_dict())
    rng = random.Random(args.seed)
    r = net.config.resolutions[-1]
    specs = [net.space.smallest(), net.space.largest()]
    while len(specs) < args.specs + 2:
        s = net.space.sample(rng)
        if s not in specs:
            specs.append(s)
    specs = [type(s)(**{**_kw(s), "r": r}) for s in specs]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    rows, worst = [], 0.0
    with torch.inference_mode():
        for spec in specs:
            net.store_shared_stats([spec])
            sub = _extract(ref, spec)
            row = {"spec": spec.short(), "mflops": net.flops(spec) / 1e6, "params_m": net.params(spec) / 1e6}
            for b in args.batch_sizes:
                x = torch.rand(b, 3, r, r)
                xn = (x - mean) / std  # the reference takes normalised input
                worst = max(worst, float((net(x, spec) - sub(xn)).abs().max()))
                ours, theirs = [], []
                for _ in range(args.warmup):
                    net(x, spec), sub(xn)
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    net(x, spec)
                    t1 = time.perf_counter()
                    sub(xn)
                    t2 = time.perf_counter()
                    ours.append((t1 - t0) * 1e3)
                    theirs.append((t2 - t1) * 1e3)
                row[f"ours_ms_b{b}"] = statistics.median(ours)
                row[f"ref_ms_b{b}"] = statistics.median(theirs)
                row[f"ratio_b{b}"] = statistics.median(o / t for o, t in zip(ours, theirs))
            rows.append(row)
            print(json.dumps({"family": family, **{k: round(v, 3) if isinstance(v, float) else v
                                                   for k, v in row.items()}}), file=sys.stderr)

        # actuation: what changes between two batches of different subnets, for us
        act_us = []
        for spec in specs:
            net.norm_store._views.pop(spec, None)  # cold: unpack the stored statistics again
            t0 = time.perf_counter()
            net.space.validate(spec)
            net.norm_store.get(spec)
            act_us.append((time.perf_counter() - t0) * 1e6)
        extract_ms, load_ms = [], []
        for spec in specs[:3]:
            t0 = time.perf_counter()
            sub = _extract(ref, spec)
            extract_ms.append((time.perf_counter() - t0) * 1e3)
            buf = io.BytesIO()
            torch.save(sub, buf)
            t0 = time.perf_counter()
            buf.seek(0)
            torch.load(buf, weights_only=False)
            load_ms.append((time.perf_counter() - t0) * 1e3)

        # memory: the supernet + statistics of --served subnets vs 6 extracted subnets
        served = list(specs)
        low = net.config.resolutions[0]  # statistics' size does not depend on r: cheap passes
        while len(served) < args.served:
            s = net.space.sample(rng)
            s = type(s)(**{**_kw(s), "r": low})
            if s not in served:
                served.append(s)
        net.store_shared_stats([s for s in served if not net.norm_store.has(s)])
        pool = sorted(served, key=net.flops)
        six = [pool[round(i * (len(pool) - 1) / 5)] for i in range(6)]
        six_bytes = sum(_nbytes(_extract(ref, s)) for s in six)
    super_bytes = _nbytes(net)
    stats_bytes = net.norm_store.nbytes(None)
    b_hi = max(args.batch_sizes)
    b_lo = min(args.batch_sizes)
    return {
        "family": family, "resolution": r, "threads": args.threads, "subnets_timed": len(specs),
        "max_abs_diff_vs_reference": worst,
        **{f"ours_ms_b{b}_range": [min(x[f"ours_ms_b{b}"] for x in rows),
                                   max(x[f"ours_ms_b{b}"] for x in rows)] for b in args.batch_sizes},
        **{f"ref_ms_b{b}_range": [min(x[f"ref_ms_b{b}"] for x in rows),
                                  max(x[f"ref_ms_b{b}"] for x in rows)] for b in args.batch_sizes},
        f"ratio_b{b_hi}_median": statistics.median(x[f"ratio_b{b_hi}"] for x in rows),
        f"ratio_b{b_hi}_max": max(x[f"ratio_b{b_hi}"] for x in rows),
        f"ratio_b{b_lo}_median": statistics.median(x[f"ratio_b{b_lo}"] for x in rows),
        "actuation_us_median": statistics.median(act_us),
        "extract_subnet_ms_median": statistics.median(extract_ms),
        "load_extracted_ms_median": statistics.median(load_ms),
        "memory_mb_supernet": super_bytes / 2**20,
        "served_subnets_with_stats": len(net.norm_store),
        "memory_mb_stats": stats_bytes / 2**20,
        "memory_mb_supernet_with_stats": (super_bytes + stats_bytes) / 2**20,
        "memory_mb_6_extracted": six_bytes / 2**20,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["ofa_resnet50", "ofa_mbv3"])
    p.add_argument("--specs", type=int, default=4, help="sampled subnets besides both ends")
    p.add_argument("--served", type=int, default=30, help="subnets with statistics (memory)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args(argv)
    import os

    import torch

    torch.set_num_threads(args.threads)
    out = {"torch": torch.__version__, "cpu_count": os.cpu_count(),
           "families": [bench_family(f, args) for f in args.families]}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU per forward of a subnet: the module path (`forward_ctx`) against the family's serving
plan (`SupernetMixin.serving_plan`, what `supernet(x, spec)` runs without autograd), on the
shipped table's subnets.

Interleaved (module, plan, module, plan, ...) so that a host whose speed drifts treats both
alike; CPU time of the process (`time.process_time_ns`), median over the calls after a
warm-up. Cells: the fastest, a middle and the slowest subnet at batch 1, 8 and 32, and the
serving pattern: a random subnet and a batch of 1, 2 or 4 on every call (each call then finds
the caches cold, as a worker switching subnets does). Both paths are checked to give the same
logits, bit for bit, on every subnet of the table first.

    python benchmarks/serving_plan.py [--model resnet|vit] [--calls 300] [--cpu 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any

import torch

from superserve.runtime.devices import widen_kernel_cache


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet", help="a family with a shipped table")
    p.add_argument("--calls", type=int, default=300, help="timed calls per path and cell")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per path and cell")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: as started)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.calls < 1 or args.warmup < 0:
        p.error("--calls must be >= 1 and --warmup >= 0")
    return args


def load(model: str) -> tuple[Any, list[Any], Any]:
    from superserve.models import load_supernet
    from superserve.server.components import resolve_table
    from superserve.subnetact import NormStore

    table, _, norm = resolve_table(model, None)  # the table `superserve serve` would use
    net = load_supernet(model, map_location="cpu")
    if getattr(net, "uses_norm_stats", True) and norm.exists():
        net.norm_store = NormStore.load(norm)
    specs = [net.space.spec_from_dict(dict(s.spec)) for s in table.subnets]
    return net.eval(), specs, table


def module_path(net: Any, x: torch.Tensor, spec: Any) -> torch.Tensor:
    from superserve.subnetact.norm import NormContext, NormMode

    stats = net.norm_store.get(spec) if getattr(net, "uses_norm_stats", True) else None
    return net.forward_ctx(x, spec, NormContext(NormMode.EVAL, stats))


def timed(fn: Any) -> int:
    t0 = time.process_time_ns()
    fn()
    return time.process_time_ns() - t0


def median_ms(ns: list[int]) -> float:
    return sorted(ns)[len(ns) // 2] / 1e6


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    widen_kernel_cache()  # as the worker: every subnet's kernels at every size stay built
    torch.set_num_threads(1)
    net, specs, table = load(args.model)
    shape = tuple(net.input_spec.shape)
    mismatched = []
    with torch.inference_mode():
        for i, spec in enumerate(specs):
            x = torch.rand(3, *shape)
            if not torch.equal(module_path(net, x, spec), net(x, spec)):
                mismatched.append(i)
        stats = net.norm_store.get(specs[0]) if getattr(net, "uses_norm_stats", True) else None
        has_plan = net.serving_plan(specs[0], stats) is not None
        by_speed = sorted(range(len(specs)), key=lambda i: table.lat_s[i][0])
        picks = [by_speed[0], by_speed[len(specs) // 2], by_speed[-1]]
        cells = []
        for i in picks:
            for b in (1, 8, 32):
                x = torch.rand(b, *shape)
                n = max(args.calls // (4 if b >= 32 else 1), 10)
                for _ in range(args.warmup):
                    module_path(net, x, specs[i])
                    net(x, specs[i])
                mod, plan = [], []
                for _ in range(n):
                    mod.append(timed(lambda x=x, i=i: module_path(net, x, specs[i])))
                    plan.append(timed(lambda x=x, i=i: net(x, specs[i])))
                cells.append({"subnet": i, "batch": b, "calls": n, "module_ms": median_ms(mod),
                              "plan_ms": median_ms(plan)})
                print(f"subnet {i:3d} batch {b:3d}: module {cells[-1]['module_ms']:8.3f} ms  "
                      f"plan {cells[-1]['plan_ms']:8.3f} ms  "
                      f"({100 * (cells[-1]['plan_ms'] / cells[-1]['module_ms'] - 1):+.0f}%)",
                      file=sys.stderr, flush=True)
        rng = random.Random(args.seed)
        mod, plan = [], []
        for _ in range(args.calls * 2):
            spec = specs[rng.randrange(len(specs))]
            x = torch.rand(rng.choice((1, 1, 2, 4)), *shape)
            mod.append(timed(lambda x=x, spec=spec: module_path(net, x, spec)))
            spec = specs[rng.randrange(len(specs))]
            plan.append(timed(lambda x=x, spec=spec: net(x, spec)))
    pattern = {"calls": len(mod), "module_mean_ms": sum(mod) / len(mod) / 1e6,
               "plan_mean_ms": sum(plan) / len(plan) / 1e6}
    return {"model": args.model, "has_plan": has_plan, "subnets": len(specs),
            "not_bit_identical": mismatched, "cells": cells, "serving_pattern": pattern}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    p = out["serving_pattern"]
    print(f"{args.model}: serving plan {'yes' if out['has_plan'] else 'none (module path)'}; "
          f"logits bit-identical on {out['subnets'] - len(out['not_bit_identical'])} of "
          f"{out['subnets']} subnets")
    print(f"serving pattern (random subnet, batch 1-4, {p['calls']} calls each): module "
          f"{p['module_mean_ms']:.3f} ms, plan {p['plan_mean_ms']:.3f} ms of CPU per forward "
          f"({100 * (p['plan_mean_ms'] / p['module_mean_ms'] - 1):+.0f}%)")
    if args.json:
        print(json.dumps(out))
    return 1 if out["not_bit_identical"] else 0


if __name__ == "__main__":
    sys.exit(main())

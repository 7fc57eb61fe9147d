"""`superserve bench scheduler`: SlackFit's decision time on a 1,000-request queue.

Each decision builds the QueueView exactly as the router and the simulator do and calls
`decide`; the queue's head deadlines sweep the whole slack range so every bucket is hit.
Warm-up first; percentiles over all timed decisions.
"""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", default=None, help="ProfileTable (default: the shipped resnet)")
    p.add_argument("--policy", default="slackfit")
    p.add_argument("--queue", type=int, default=1000, help="queue length")
    p.add_argument("--decisions", type=int, default=20000)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from superserve.commands.simulate import load_table
    from superserve.scheduling import EDFQueue, QueueView, make_policy

    table = load_table(args.table)
    policy = make_policy(args.policy, table)
    rng = np.random.default_rng(0)
    hi = 2 * max(max(r) for r in table.lat_s)
    q: EDFQueue[int] = EDFQueue()
    for i, d in enumerate(rng.uniform(0, hi, args.queue)):
        q.push(float(d), i)
    slacks = rng.uniform(0, hi, args.decisions).tolist()
    times = []
    for k, s in enumerate(slacks[:2000] + slacks):
        t0 = time.perf_counter()
        view = QueueView(len(q), q.head_deadline_s(), 0, None, 100.0, 0.0)
        policy.decide(view, q.head_deadline_s() - s)
        dt = time.perf_counter() - t0
        if k >= 2000:  # the first 2,000 are warm-up
            times.append(dt)
    us = np.array(times) * 1e6
    out = {"policy": policy.name, "queue_length": len(q), "decisions": len(us),
           "decision_us_p50": float(np.percentile(us, 50)),
           "decision_us_p99": float(np.percentile(us, 99)),
           "decision_us_mean": float(us.mean()), "subnets": len(table)}
    print(json.dumps(out) if args.json else "\n".join(f"{k:18s} {v}" for k, v in out.items()))
    return 0

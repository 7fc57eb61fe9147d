"""`superserve bench router`: what the router itself costs, with workers that do no compute.

Real worker processes (the `noop` kind: they answer at once) sit behind the real router and
policy (SlackFit on the ProfileTable) in one asyncio loop; an open-loop generator in the same
loop submits single-image requests at a fixed rate, straight into the router (no HTTP).

    added latency = time from submit to the client's future resolving, minus the compute the
                    worker reported (about zero here): queueing behind other in-flight
                    dispatches, the policy, pickling, the pipe round trip, the event loop.

The peak is the highest rate of a doubling ramp at which the router still completes at least
99% of the requests within the SLO and the generator keeps up with the schedule. Everything
shares this machine's cores (2 here): the generator's CPU time is charged to the router.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s of the main run")
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--table", default=None, help="ProfileTable (default: shipped resnet)")
    parser.add_argument("--policy", default="slackfit")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--max-rate", type=float, default=64000.0,
                        help="stop the peak-rate ramp here")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-rate ramp")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _table(path: str | None):
    from superserve.errors import ConfigError
    from superserve.server.components import resolve_table

    try:
        return resolve_table("resnet", path, check_family=False)[0:2]
    except ConfigError:
        if path is not None:
            raise
        from superserve.profiling.table import ProfileTable, SubnetProfile

        log.warning("no shipped resnet table; using a synthetic 3-subnet table")
        bs = (1, 2, 4, 8, 16, 32)
        subnets = [SubnetProfile(id=i, spec={"level": i}, accuracy=0.9 + 0.03 * i,
                                 latency_ms={b: (1 + i) * (1.0 + 0.3 * b) for b in bs})
                   for i in range(3)]
        return ProfileTable.build("resnet", subnets, bs), "synthetic"


async def _one_rate(router: Any, rate: float, duration_s: float, slo_s: float) -> dict[str, Any]:
    from superserve.types import Outcome

    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration_s))
    img = np.zeros((1, 1, 28, 28), dtype=np.float32)
    lat: list[float] = []
    outcomes: dict[str, int] = {}
    met = 0
    pending: list[asyncio.Future[Any]] = []
    max_lag = 0.0

    def done(fut: asyncio.Future[Any], t0: float) -> None:
        nonlocal met
        r = fut.result()
        outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
        if r.outcome is Outcome.COMPLETED:
            lat.append(loop.time() - t0)
            met += r.deadline_met

    start = loop.time()
    sent = 0
    while sent < n:  # open loop in 1 ms ticks: submit everything that is due
        now = loop.time()
        due = min(n, int((now - start) * rate) + 1)
        if due > sent:
            max_lag = max(max_lag, now - (start + (due - 1) / rate))
        while sent < due:
            t0 = loop.time()
            f = router.submit(img, slo_s)
            f.add_done_callback(lambda fut, t0=t0: done(fut, t0))
            pending.append(f)
            sent += 1
        await asyncio.sleep(0.001)
    send_s = loop.time() - start
    await asyncio.wait_for(asyncio.gather(*pending), timeout=30)
    await asyncio.sleep(0)  # let the last done-callbacks run
    a = np.array(lat) * 1e3
    return {"rate_offered": rate, "rate_sent": n / send_s, "requests": n, "outcomes": outcomes,
            "slo_attainment": met / n,
            "added_ms_p50": float(np.percentile(a, 50)) if a.size else None,
            "added_ms_p99": float(np.percentile(a, 99)) if a.size else None,
            "added_ms_mean": float(a.mean()) if a.size else None,
            "max_send_lag_ms": max_lag * 1e3}


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from superserve.runtime.clock import LoopClock
    from superserve.runtime.pool import LocalProcessPool
    from superserve.runtime.router import Router, RouterConfig
    from superserve.runtime.worker import WorkerConfig
    from superserve.server.components import load_policy

    table, table_path = _table(args.table)
    policy = load_policy(args.policy, table, slo_s=args.slo_ms / 1e3, workers=args.workers)
    pool = LocalProcessPool(WorkerConfig(kind="noop"), n_workers=args.workers)
    router = Router(policy, pool, LoopClock(), RouterConfig(max_queue=1_000_000))
    router.start()
    slo_s = args.slo_ms / 1e3
    try:
        end = time.monotonic() + 60
        while router.ready_workers < args.workers:
            if time.monotonic() > end:
                raise TimeoutError("noop workers did not start within 60 s")
            await asyncio.sleep(0.01)
        await _one_rate(router, min(args.rate, 200.0), 1.0, slo_s)  # warm-up
        main = await _one_rate(router, args.rate, args.duration_s, slo_s)
        ramp = []
        peak = None
        if not args.no_peak:
            rate = 1000.0
            while rate <= args.max_rate:
                r = await _one_rate(router, rate, min(args.duration_s, 3.0), slo_s)
                ramp.append(r)
                ok = r["slo_attainment"] >= 0.99 and r["rate_sent"] >= 0.98 * rate
                if not ok:
                    break
                peak = rate
                rate *= 2
        return {"bench": "router", "workers": args.workers, "worker_kind": "noop",
                "policy": args.policy, "table": str(table_path), "slo_ms": args.slo_ms,
                "at_rate": main, "peak_sustained_rps": peak, "ramp": ramp,
                "batches": router.stats.batches}
    finally:
        await pool.close()


def run(args: argparse.Namespace) -> int:
    res = asyncio.run(_bench(args))
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    m = res["at_rate"]
    print(f"router overhead at {m['rate_offered']:.0f} req/s ({res['workers']} noop worker(s), "
          f"{res['policy']}): added p50 {m['added_ms_p50']:.3f} ms, p99 "
          f"{m['added_ms_p99']:.3f} ms, SLO attainment {m['slo_attainment']:.4f}")
    for r in res["ramp"]:
        print(f"  {r['rate_offered']:>8.0f} req/s offered, {r['rate_sent']:>8.0f} sent: "
              f"p50 {r['added_ms_p50']:.3f} ms p99 {r['added_ms_p99']:.3f} ms "
              f"attainment {r['slo_attainment']:.4f}")
    print(f"highest sustained rate: {res['peak_sustained_rps']} req/s")
    return 0

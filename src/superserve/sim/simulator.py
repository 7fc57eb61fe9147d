"""Discrete-event simulator of the router + N workers, using the live policy objects.

Deterministic: the same trace, table, policy, config and seed give identical results (the only
randomness, latency jitter, comes from a seeded numpy Generator).

Why it is fast: one SLO per run makes every deadline arrival + SLO, so the EDF order is the
arrival order and the queue is an index range [head, tail) over the sorted arrivals. Arrivals,
deadline drops and in-SLO counts are advanced in bulk with bisect; the per-batch work is one
policy decision plus O(log n). Requests of a failed worker's batch go back to a small side
queue (their deadlines are the earliest, so they are served first).

The protocol with the policy is the one in scheduling/base.py, identical in the live router.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable
from superserve.scheduling.base import Policy, QueueView

__all__ = ["SimConfig", "SimResult", "simulate"]


@dataclass(frozen=True)
class SimConfig:
    slo_s: float = 0.05  # latency SLO of every request
    workers: int = 1
    overhead_s: float = 0.0  # per-batch overhead beyond the profiled latency (dispatch, I/O)
    jitter: float = 0.0  # relative std-dev of a batch's service time (normal, clipped at -50%)
    actuation_s: float = 0.0  # paid when a worker's subnet changes (0 for SubNetAct)
    failures: tuple[tuple[float, int], ...] = ()  # (time_s, worker id): that worker dies
    restart_s: float | None = None  # a failed worker is back after this long (None: never)
    rate_window_s: float = 1.0  # arrival-rate window for QueueView.arrival_rate_qps
    seed: int = 0
    record_batches: bool = False  # keep (t, subnet, batch, worker) per dispatch (plots)

    def __post_init__(self) -> None:
        if not self.slo_s > 0:
            raise ConfigError(f"slo_s must be > 0, got {self.slo_s!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers!r}")
        if self.jitter < 0 or self.actuation_s < 0 or self.overhead_s < 0:
            raise ConfigError("jitter, actuation_s and overhead_s must be >= 0")
        for t, w in self.failures:
            if not 0 <= w < self.workers:
                raise ConfigError(f"failure of worker {w}: workers are 0..{self.workers - 1}")


@dataclass
class SimResult:
    requests: int
    completed_in_slo: int
    completed_late: int
    dropped: int
    slo_attainment: float
    mean_serving_accuracy: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    wall_s: float
    requests_per_wall_s: float
    batches: int
    mean_batch_size: float
    lost_batches: int = 0  # batches lost to worker failures (their requests re-queued)
    batch_log: list[tuple[float, int, int, int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "batch_log"}
        return d


def simulate(arrivals_s: Sequence[float] | np.ndarray, table: ProfileTable, policy: Policy,
             cfg: SimConfig) -> SimResult:
    t_wall = time.perf_counter()
    arr = np.asarray(arrivals_s, dtype=float)
    if len(arr) and np.any(np.diff(arr) < 0):
        arr = np.sort(arr)
    n = len(arr)
    arrl: list[float] = arr.tolist()
    slo, overhead = cfg.slo_s, cfg.overhead_s
    fastest = getattr(policy, "min_latency_s", table.fastest_s)
    acc = table.acc
    finish = np.full(n, np.nan)  # completion time per request (nan: dropped)
    served_acc = np.zeros(n)  # profiled accuracy of the subnet that served it
    rng = np.random.default_rng(cfg.seed)
    jitter = cfg.jitter

    head = 0  # first request not yet dispatched or dropped (main range)
    requeue: list[int] = []  # re-queued request indices, sorted (earliest deadline first)
    free = list(range(cfg.workers - 1, -1, -1))  # stack of free worker ids
    alive = [True] * cfg.workers
    worker_subnet: list[int | None] = [None] * cfg.workers
    in_flight: dict[int, tuple[float, list[int] | tuple[int, int], int]] = {}
    busy: list[tuple[float, int, int]] = []  # heap (t_done, seq, worker)
    seq = 0
    events: list[tuple[float, int, str, int]] = []  # failures / restarts
    for t, w in cfg.failures:
        heapq.heappush(events, (t, len(events), "fail", w))
    batches = lost = batch_items = 0
    log: list[tuple[float, int, int, int]] = []
    now = 0.0
    window = cfg.rate_window_s
    decide = policy.decide

    while True:
        tail = bisect.bisect_right(arrl, now)  # requests arrived by now
        # ---- dispatch to free workers while there is work
        while free and (requeue or head < tail):
            # the shared drop rule, in bulk on the main range: deadline - now - overhead <
            # fastest  <=>  arrival < now + overhead + fastest - slo
            cut = now + overhead + fastest - slo
            while requeue and arrl[requeue[0]] < cut:
                requeue.pop(0)
            if head < tail and arrl[head] < cut:
                k = min(bisect.bisect_left(arrl, cut, head, tail), tail)
                head = k
            qlen = len(requeue) + (tail - head)
            if qlen == 0:
                break
            first = requeue[0] if requeue else head
            w = free[-1]
            rate = (tail - bisect.bisect_left(arrl, now - window, 0, tail)) / window
            plan = decide(QueueView(qlen, arrl[first] + slo, w, worker_subnet[w], rate,
                                    overhead), now)
            if plan is None:
                break
            free.pop()
            b = min(plan.batch_size, qlen)
            if requeue:
                take = requeue[:b]
                del requeue[:b]
                rest = b - len(take)
                members: list[int] | tuple[int, int] = take + list(range(head, head + rest))
                head += rest
            else:
                members = (head, head + b)
                head += b
            service = table.latency_s(plan.subnet, b) + overhead + plan.load_s
            if worker_subnet[w] is not None and worker_subnet[w] != plan.subnet:
                service += cfg.actuation_s
            if jitter:
                service *= max(0.5, 1.0 + jitter * rng.standard_normal())
            worker_subnet[w] = plan.subnet
            done = now + service
            in_flight[w] = (done, members, plan.subnet)
            heapq.heappush(busy, (done, seq, w))
            seq += 1
            batches += 1
            batch_items += b
            if cfg.record_batches:
                log.append((now, plan.subnet, b, w))
        # ---- next event: a completion, a failure/restart, or (with a free worker) an arrival
        t_done = busy[0][0] if busy else math.inf
        t_event = events[0][0] if events else math.inf
        t_arr = arrl[tail] if (free and tail < n) else math.inf
        nxt = min(t_done, t_event, t_arr)
        if nxt == math.inf:
            break
        now = nxt
        if t_done <= nxt and busy:
            _, _, w = heapq.heappop(busy)
            entry = in_flight.pop(w, None)
            if entry is not None and alive[w]:
                done, members, subnet = entry
                if isinstance(members, tuple):
                    finish[members[0]:members[1]] = done
                    served_acc[members[0]:members[1]] = acc[subnet]
                else:
                    finish[members] = done
                    served_acc[members] = acc[subnet]
                free.append(w)
        elif t_event <= nxt:
            _, _, kind, w = heapq.heappop(events)
            if kind == "fail" and alive[w]:
                alive[w] = False
                if w in free:
                    free.remove(w)
                entry = in_flight.pop(w, None)
                if entry is not None:  # its batch is lost; the requests go back to the queue
                    lost += 1
                    _, members, _ = entry
                    ids = list(range(*members)) if isinstance(members, tuple) else members
                    requeue = sorted(requeue + ids)
                    busy = [e for e in busy if e[2] != w]
                    heapq.heapify(busy)
                worker_subnet[w] = None
                if cfg.restart_s is not None:
                    heapq.heappush(events, (now + cfg.restart_s, seq, "restart", w))
                    seq += 1
            elif kind == "restart" and not alive[w]:
                alive[w] = True
                free.append(w)
    # requests never dispatched (all workers dead) count as dropped below
    latency = finish - arr
    met = latency <= slo + 1e-12
    completed = ~np.isnan(finish)
    in_slo = int(np.count_nonzero(met & completed))
    lat_ms = latency[completed] * 1e3
    wall = time.perf_counter() - t_wall
    return SimResult(
        requests=n, completed_in_slo=in_slo,
        completed_late=int(np.count_nonzero(completed)) - in_slo,
        dropped=int(n - np.count_nonzero(completed)),
        slo_attainment=in_slo / n if n else 0.0,
        mean_serving_accuracy=float(served_acc[met & completed].mean()) if in_slo else 0.0,
        latency_ms_p50=float(np.percentile(lat_ms, 50)) if lat_ms.size else None,
        latency_ms_p99=float(np.percentile(lat_ms, 99)) if lat_ms.size else None,
        wall_s=wall, requests_per_wall_s=n / wall if wall > 0 else math.inf,
        batches=batches, mean_batch_size=batch_items / batches if batches else 0.0,
        lost_batches=lost, batch_log=log)

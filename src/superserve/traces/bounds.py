"""What a trace asks of a server, whatever its policy: the best SLO attainment a server that
answers at most `rate` requests a second can reach on it, and the rate a target needs.

The bound serves the trace in arrival order at exactly one request every 1/rate seconds
(work-conserving, no per-batch cost) and admits a request only when it would finish within
its SLO; with one SLO for all and identical requests that greedy rule meets the most
requests a server of that rate can meet (an exchange argument: any schedule's met set, in
arrival order, finishes no earlier). A batching server whose best throughput is `rate`
answers no request sooner, so it is an upper bound on any policy's attainment there: when
it is below a target at the rate the machine can sustain, no scheduler reaches the target.

Pure numpy-free Python over the arrival times (the 20,000-request Azure code trace: ~4 ms a
rate on this project's 2-core CI machine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["attainment_bound", "rate_needed"]


def attainment_bound(arrivals_s: Sequence[float], rate_qps: float, slo_s: float) -> float:
    """The largest fraction of the requests (sorted arrival times) that a server answering
    `rate_qps` requests a second can answer within `slo_s` of their arrival."""
    if not rate_qps > 0 or not slo_s > 0:
        raise ValueError(f"need rate_qps > 0 and slo_s > 0, got {rate_qps!r}, {slo_s!r}")
    n = len(arrivals_s)
    if n == 0:
        return 1.0
    each = 1.0 / rate_qps
    if each > slo_s:
        return 0.0
    free = -math.inf  # when the server finishes what it has admitted
    met = 0
    slack = slo_s * (1.0 + 1e-9)  # exactly at the SLO counts, despite float sums
    for t in arrivals_s:
        done = max(t, free) + each
        if done <= t + slack:
            free = done
            met += 1
    return met / n


def rate_needed(arrivals_s: Sequence[float], slo_s: float, target: float,
                rel_tol: float = 0.005) -> float:
    """The smallest service rate (requests / s, within `rel_tol`) at which the bound reaches
    `target` attainment: below it no policy can, on any machine that serves that many."""
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target!r}")
    n = len(arrivals_s)
    if n == 0:
        return 0.0
    lo = 1.0 / slo_s  # one request per SLO: any less meets nothing that has to wait
    if attainment_bound(arrivals_s, lo, slo_s) >= target:
        return lo
    hi = lo
    while attainment_bound(arrivals_s, hi, slo_s) < target:
        hi *= 2.0
        if hi > 1e12:  # requests closer together than any rate can separate
            return math.inf
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if attainment_bound(arrivals_s, mid, slo_s) >= target:
            hi = mid
        else:
            lo = mid
    return hi

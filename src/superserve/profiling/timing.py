"""Latency measurement and the batch-1 latency predictor used during the search.

Timing on a shared 2-core CPU is noisy in bursts (another process wakes up for a second). So
`measure_interleaved` times many subnets round-robin: a burst slows one round of every subnet
instead of all the runs of one, and the medians keep their order. That order is what decides
which subnets stay on the measured frontier.

On a GPU a forward returns once its kernels are queued: `sync` (torch.cuda.synchronize of the
device) runs inside the timed region after every call, so a time is queue-to-finish, what a
worker that hands back host logits pays.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LatencyModel", "measure", "measure_interleaved", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def measure(fn: Callable[[], Any], repeats: int, warmup: int,
            clock: Callable[[], float] = time.perf_counter,
            sync: Callable[[], Any] | None = None) -> tuple[float, float]:
    """(median, p99) seconds of `fn` after `warmup` untimed calls."""
    return measure_interleaved([fn], repeats, warmup, clock, sync)[0]


def measure_interleaved(fns: Sequence[Callable[[], Any]], repeats: int | Sequence[int],
                        warmup: int | Sequence[int],
                        clock: Callable[[], float] = time.perf_counter,
                        sync: Callable[[], Any] | None = None,
                        on_round: Callable[[int, int], Any] | None = None
                        ) -> list[tuple[float, float]]:
    """(median, p99) seconds of each fn, timed round-robin: untimed warm-up rounds, then timed
    rounds, each calling every fn due in it once. `repeats` and `warmup`: one count for all, or
    one per fn. With per-fn counts there are max(repeats) timed rounds and fn i is timed in
    `repeats[i]` of them spread evenly over the run (so a host that drifts during it moves
    every fn alike), and warmed in the first `warmup[i]` warm-up rounds. `sync`: waits for the
    device after every call (inside the timed region); None on the CPU. `on_round(done,
    rounds)` after each timed round (progress)."""
    n = len(fns)
    reps = [repeats] * n if isinstance(repeats, int) else list(repeats)
    warm = [warmup] * n if isinstance(warmup, int) else list(warmup)
    if len(reps) != n or len(warm) != n:
        raise ValueError(f"{n} fns but {len(reps)} repeat and {len(warm)} warm-up counts")
    if any(r < 1 for r in reps):
        raise ValueError(f"repeats must be >= 1, got {min(reps) if reps else repeats}")
    done = sync or (lambda: None)
    for k in range(max(warm, default=0)):
        for fn, w in zip(fns, warm):
            if k < w:
                fn()
                done()
    rounds = max(reps, default=0)
    # fn i runs in rounds floor(j * rounds / reps[i]), j < reps[i]: evenly spread
    due = [{(j * rounds) // r for j in range(r)} for r in reps]
    times: list[list[float]] = [[] for _ in fns]
    for k in range(rounds):
        for i, fn in enumerate(fns):
            if k in due[i]:
                t0 = clock()
                fn()
                done()
                times[i].append(clock() - t0)
        if on_round is not None:
            on_round(k + 1, rounds)
    out = []
    for ts in times:
        ts.sort()
        out.append((statistics.median(ts), percentile(ts, 0.99)))
    return out


@dataclass(frozen=True)
class LatencyModel:
    """latency_s(batch 1) ~ c0 + c1 * layers + c2 * MFLOPs, least squares on measured subnets.

    At batch 1 a small CPU model is dominated by per-layer dispatch overhead, which FLOPs alone
    miss; the FLOPs term carries the rest. Used only to rank candidates during the search;
    the served subnets are measured for real."""

    coef: tuple[float, float, float]
    median_rel_error: float

    @classmethod
    def fit(cls, features: Sequence[tuple[float, float]], latencies_s: Sequence[float]
            ) -> LatencyModel:
        import numpy as np

        if len(features) < 3:
            raise ValueError(f"a latency model needs >= 3 measured subnets, got {len(features)}")
        a = np.array([[1.0, lay, mf] for lay, mf in features])
        y = np.array(latencies_s, dtype=float)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        err = float(np.median(np.abs(a @ coef - y) / y))
        return cls(tuple(float(c) for c in coef), err)  # type: ignore[arg-type]

    def predict(self, layers: float, mflops: float) -> float:
        c0, c1, c2 = self.coef
        # never <= 0: the search divides nothing by it, but thin_front takes its log
        return max(c0 + c1 * layers + c2 * mflops, 1e-7)

    def to_dict(self) -> dict[str, Any]:
        return {"coef": list(self.coef), "features": ["1", "layers", "MFLOPs"],
                "median_rel_error": self.median_rel_error}

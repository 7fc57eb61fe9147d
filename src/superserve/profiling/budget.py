"""What a profile will cost, measured before it starts, and the time budget that bounds it.

Why: the work of a profile is images pushed through subnets, and its phases push very
different numbers (docs/profiling.md): the search calibrates and scores every candidate; the
measured frontier is calibrated on the calibration split and scored on the whole validation and
test splits; timing runs every batch size a number of times with the worker's threads. A
supernet at ImageNet size costs tens to hundreds of milliseconds per image on a CPU, so a search
sized for 28x28 digits takes hours. Two things keep it in hand:

- `CostModel.measure` times the operations themselves (calibrate, score, a timed forward at the
  worker's threads) on a few subnets, the minimum of two warm runs (a shared machine has
  bursts; the estimate wants the cost, not the burst) plus what a subnet's first pass costs
  more (every search candidate is a new subnet), and prices each phase from them. The
  measured frontier spans the smallest to the largest subnet evenly in log latency, so its
  per-image cost is the log-uniform mean of those two ends; search candidates are priced at
  sampled subnets.
- `ProfileConfig.time_budget_s` bounds the whole profile: the phases after the search are fixed
  by `max_subnets` and the data, and the search gets what they leave, never fewer than
  `min_search_candidates` (the accuracy predictor needs them). The search stops before a
  candidate that would overrun (`search_may_continue`), with the measured cost per candidate so
  far, not the estimate, and the later phases re-priced for where the search's frontier
  actually lies (`frontier_positions`: a frontier of cheap subnets is cheap to measure) and
  scaled by the same slowdown (others' load on a shared machine slows every phase).

The chosen subnets are always calibrated, scored on the whole held-out splits and timed for
real: the budget bounds only how many candidates the search looks at.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["CostModel", "after_search_seconds", "estimate_seconds", "frontier_positions",
           "repeats_for", "search_may_continue", "warmup_for"]


def repeats_for(batch: int, repeats: int, min_repeats: int) -> int:
    """Timed runs at batch size `batch`: `repeats` at batch 1, fewer (repeats / sqrt(batch),
    at least `min_repeats`) at larger batches, which run longer and vary less relative to
    their length."""
    return max(min(min_repeats, repeats), round(repeats / math.sqrt(batch)))


def warmup_for(batch: int, warmup: int) -> int:
    """Untimed rounds at batch size `batch`: `warmup` up to batch 4, then one (a large batch's
    first call already amortises the allocator and kernel selection)."""
    return warmup if batch <= 4 else min(warmup, 1)


def _log_mean(a: float, b: float) -> float:
    """Mean of a quantity spread evenly in log scale between a and b."""
    lo, hi = sorted((max(a, 1e-9), max(b, 1e-9)))
    return lo if hi / lo < 1.0001 else (hi - lo) / math.log(hi / lo)


@dataclass(frozen=True)
class CostModel:
    """Seconds per image of each operation, measured (`measure`) or given (tests)."""

    calibrate_s: tuple[float, float]  # per image: (search candidates, measured frontier)
    score_s: tuple[float, float]  # per image, scoring at the eval threads: (search, frontier)
    timed_b1_s: float  # one batch-1 forward at the worker's threads (frontier mean)
    timed_image_s: float  # per image of a batch at the worker's threads (frontier mean)
    first_call_s: tuple[float, float] = (0.0, 0.0)  # a subnet's first pass costs more (its
    # kernels are chosen, its buffers allocated): extra seconds, (search, frontier)
    # the two ends' own (calibrate, score, timed batch 1, timed per image, first call): a
    # frontier known to sit elsewhere between them is priced by interpolation (`at`)
    ends: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def at(self, position: float) -> CostModel:
        """The costs of a subnet at `position` in [0, 1] between the smallest and the largest
        (in log batch-1 latency), interpolated in log; self when the ends are unknown."""
        if self.ends is None:
            return self
        t = min(1.0, max(0.0, position))
        lo, hi = self.ends
        v = [math.exp((1 - t) * math.log(max(a, 1e-9)) + t * math.log(max(b, 1e-9)))
             for a, b in zip(lo, hi)]
        return CostModel((self.calibrate_s[0], v[0]), (self.score_s[0], v[1]), v[2], v[3],
                         (self.first_call_s[0], v[4]), None)

    @classmethod
    def measure(cls, net, eval_threads: int, threads: int, images: int = 16,
                seed: int = 0, sync: Callable[[], Any] | None = None,
                samples: int = 3) -> CostModel:
        from superserve.profiling.passes import scores as _scores

        space, spec_in = net.space, net.input_spec
        dev = next(net.parameters()).device
        rng = random.Random(seed)
        ends = [space.smallest(), space.largest()]
        sampled = [s for s in dict.fromkeys(space.sample(rng) for _ in range(samples))
                   if s not in ends]
        x = torch.rand(images, *spec_in.shape)
        y = torch.zeros(images, dtype=torch.long)
        done = sync or (lambda: None)
        before = torch.get_num_threads()

        def timed(fn: Callable[[], Any]) -> float:
            t0 = time.perf_counter()
            fn()
            done()
            return time.perf_counter() - t0

        def best_of_two(fn: Callable[[], Any]) -> float:
            return min(timed(fn), timed(fn))

        rates: dict[Any, tuple[float, ...]] = {}
        try:
            for spec in ends + sampled:
                torch.set_num_threads(eval_threads)
                # first call as a search candidate pays it, then warm
                cold = timed(lambda s=spec: net.calibrate([s], x, n=images, seed=seed))
                cal = best_of_two(lambda s=spec: net.calibrate([s], x, n=images, seed=seed))
                score = best_of_two(lambda s=spec: _scores(net, s, x, y))
                torch.set_num_threads(threads)
                xb = x[:8].to(dev)
                with torch.inference_mode():
                    net(x[:1].to(dev), spec)
                    b1 = best_of_two(lambda s=spec: net(x[:1].to(dev), s))
                    b8 = best_of_two(lambda s=spec, xb=xb: net(xb, s))
                rates[spec] = (cal / images, score / images, b1, b8 / 8, max(0.0, cold - cal))
        finally:
            torch.set_num_threads(before)
        small, large = rates[ends[0]], rates[ends[1]]
        front = [_log_mean(small[i], large[i]) for i in range(5)]
        pool = sampled or ends
        search = [sum(rates[s][i] for s in pool) / len(pool) for i in range(5)]
        return cls((search[0], front[0]), (search[1], front[1]), front[2], front[3],
                   (search[4], front[4]), (tuple(small), tuple(large)))

    def search_candidate_s(self, calib_images: int, score_images: int) -> float:
        return (self.first_call_s[0] + calib_images * self.calibrate_s[0]
                + score_images * self.score_s[0])

    def batch_s(self, batch: int) -> float:
        """One timed forward of `batch` images (the frontier's mean subnet)."""
        return max(self.timed_b1_s, batch * self.timed_image_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def after_search_seconds(cost: CostModel, cfg, n_train: int, n_val: int, n_test: int,
                         positions: Sequence[float]) -> dict[str, float]:
    """Seconds of the phases after the search when the measured frontier is the subnets at
    `positions` (each in [0, 1] between the smallest and the largest, in log latency)."""
    final = timing = load = 0.0
    for p in positions:
        c = cost.at(p)
        final += (c.first_call_s[1] + min(cfg.calib_images, n_train) * c.calibrate_s[1]
                  + (n_val + n_test) * c.score_s[1])
        timing += sum((repeats_for(b, cfg.repeats, cfg.min_repeats) + warmup_for(b, cfg.warmup))
                      * c.batch_s(b) for b in cfg.batch_sizes)
        load += 3 * c.timed_b1_s + 0.2  # torch.save/load of each subnet
    return {"final_calibrate_and_score_s": final, "timing_s": timing, "load_times_s": load,
            "after_search_s": final + timing + load}


def frontier_positions(cands: Sequence[Any], smallest_s: float, largest_s: float,
                       n: int) -> list[float]:
    """Where the measured frontier will sit, from the search's candidates so far (each with
    `score` and a predicted `cost`): both ends (0 and 1) and `n` points spread evenly in log
    cost over the span of the current Pareto front, as positions in [0, 1] between the
    smallest subnet's predicted latency and the largest's. The count is the most the frontier
    can hold (thinning to `max_subnets` can merge points)."""
    from superserve.profiling.search import pareto_front

    span = math.log(max(largest_s, 1e-9) / max(smallest_s, 1e-9))
    front = pareto_front(list(cands))
    if not front or span <= 0:
        return [k / (n + 1) for k in range(n + 2)]
    pos = [math.log(max(c.cost, 1e-9) / smallest_s) / span for c in front]
    lo, hi = min(pos), max(pos)
    return [0.0, 1.0] + [lo + (hi - lo) * k / max(n - 1, 1) for k in range(n)]


def estimate_seconds(cost: CostModel, cfg, n_train: int, n_val: int, n_test: int
                     ) -> dict[str, float]:
    """Each phase's seconds for `cfg` (a ProfileConfig) on splits of these sizes, and the
    search's share of `cfg.time_budget_s`. Before the search the frontier is taken as
    `max_subnets` + 2 subnets spread evenly in log latency from the smallest to the largest
    (the profiler re-prices it from the search's own frontier as the search goes)."""
    search_cfg = cfg.search_config()
    probes = cfg.predictor_samples + 2
    latency = probes * (8 * cost.calibrate_s[0] + (cfg.probe_repeats + 2) * cost.timed_b1_s)
    per_cand = cost.search_candidate_s(min(cfg.search_calib_images, n_train),
                                       min(cfg.search_val_images, n_val))
    full = search_cfg.population + 2 + search_cfg.generations * search_cfg.children
    measured = cfg.max_subnets + 2  # the thinned frontier plus both ends
    after = after_search_seconds(cost, cfg, n_train, n_val, n_test,
                                 [k / (measured - 1) for k in range(measured)])
    final, timing, load = (after["final_calibrate_and_score_s"], after["timing_s"],
                           after["load_times_s"])
    fixed = latency + final + timing + load
    if cfg.time_budget_s is None:
        candidates = full
    else:
        fits = int(max(0.0, cfg.time_budget_s - fixed) / max(per_cand, 1e-9))
        candidates = min(full, max(cfg.min_search_candidates, fits))
    search = candidates * per_cand
    return {"search_s": search, "search_candidates": float(candidates),
            "search_candidates_unbounded": float(full), "search_candidate_s": per_cand,
            "latency_model_s": latency, "final_calibrate_and_score_s": final,
            "timing_s": timing, "load_times_s": load, "after_search_s": final + timing + load,
            "total_s": search + fixed,
            "seconds_per_image": (cost.score_s[0] + cost.score_s[1]) / 2}


def search_may_continue(budget_s: float | None, min_candidates: int, started_s: float,
                        after_search_s: float | Callable[[], float],
                        expected_candidate_s: float | None = None,
                        clock: Callable[[], float] = time.perf_counter
                        ) -> Callable[[int], bool]:
    """evolve's `may_continue(evaluated)`: True while fewer than `min_candidates` are
    evaluated, or while one more candidate at the mean cost so far still leaves the remaining
    phases' time inside the budget counted from `started_s` (the profile's start).

    The remaining phases' time is `after_search_s` (seconds, or a function giving the estimate
    for the frontier found so far), scaled by how much slower or faster the search's candidates
    ran than `expected_candidate_s` (when given; within 0.5x to 4x): on a shared machine, load
    that slows the search slows what follows it too."""
    search_started = clock()

    def may_continue(evaluated: int) -> bool:
        if budget_s is None or evaluated < min_candidates:
            return True
        now = clock()
        per = (now - search_started) / max(evaluated, 1)
        after = after_search_s() if callable(after_search_s) else after_search_s
        if expected_candidate_s:
            after *= min(4.0, max(0.5, per / expected_candidate_s))
        return now + per + after <= started_s + budget_s

    return may_continue


def phase_summary(est: dict[str, float], actual: dict[str, float]) -> dict[str, Any]:
    """Estimate vs measured seconds per phase (the profile's provenance)."""
    pairs: Sequence[tuple[str, str]] = (
        ("latency_model_s", "latency_model"), ("search_s", "search"),
        ("final_calibrate_and_score_s", "final_calibrate_and_score"), ("timing_s", "profile"),
        ("load_times_s", "load_times"))
    return {b: {"estimate_s": round(est[a], 1), "actual_s": round(actual.get(b, 0.0), 1)}
            for a, b in pairs}

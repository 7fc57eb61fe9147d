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
  far, not the estimate, and the later phases' estimate scaled by the same slowdown (others'
  load on a shared machine slows every phase).

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

__all__ = ["CostModel", "estimate_seconds", "repeats_for", "search_may_continue",
           "warmup_for"]


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

    @classmethod
    def measure(cls, net, eval_threads: int, threads: int, images: int = 16,
                seed: int = 0, sync: Callable[[], Any] | None = None,
                samples: int = 3) -> CostModel:
        from superserve.profiling.profiler import _scores

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
                    b8 = best_of_two(lambda s=spec: net(xb, s))
                rates[spec] = (cal / images, score / images, b1, b8 / 8, max(0.0, cold - cal))
        finally:
            torch.set_num_threads(before)
        small, large = rates[ends[0]], rates[ends[1]]
        front = [_log_mean(small[i], large[i]) for i in range(5)]
        pool = sampled or ends
        search = [sum(rates[s][i] for s in pool) / len(pool) for i in range(5)]
        return cls((search[0], front[0]), (search[1], front[1]), front[2], front[3],
                   (search[4], front[4]))

    def search_candidate_s(self, calib_images: int, score_images: int) -> float:
        return (self.first_call_s[0] + calib_images * self.calibrate_s[0]
                + score_images * self.score_s[0])

    def batch_s(self, batch: int) -> float:
        """One timed forward of `batch` images (the frontier's mean subnet)."""
        return max(self.timed_b1_s, batch * self.timed_image_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_seconds(cost: CostModel, cfg, n_train: int, n_val: int, n_test: int
                     ) -> dict[str, float]:
    """Each phase's seconds for `cfg` (a ProfileConfig) on splits of these sizes, and the
    search's share of `cfg.time_budget_s`."""
    search_cfg = cfg.search_config()
    probes = cfg.predictor_samples + 2
    latency = probes * (8 * cost.calibrate_s[0] + (cfg.probe_repeats + 2) * cost.timed_b1_s)
    per_cand = cost.search_candidate_s(min(cfg.search_calib_images, n_train),
                                       min(cfg.search_val_images, n_val))
    full = search_cfg.population + 2 + search_cfg.generations * search_cfg.children
    measured = cfg.max_subnets + 2  # the thinned frontier plus both ends
    final = measured * (cost.first_call_s[1] + min(cfg.calib_images, n_train) * cost.calibrate_s[1]
                        + (n_val + n_test) * cost.score_s[1])
    rounds = sum((repeats_for(b, cfg.repeats, cfg.min_repeats) + warmup_for(b, cfg.warmup))
                 * cost.batch_s(b) for b in cfg.batch_sizes)
    timing = measured * rounds
    load = measured * 3 * cost.timed_b1_s + 0.2 * measured  # torch.save/load of each subnet
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
                        after_search_s: float, expected_candidate_s: float | None = None,
                        clock: Callable[[], float] = time.perf_counter
                        ) -> Callable[[int], bool]:
    """evolve's `may_continue(evaluated)`: True while fewer than `min_candidates` are
    evaluated, or while one more candidate at the mean cost so far still leaves the remaining
    phases' time inside the budget counted from `started_s` (the profile's start).

    The remaining phases' time is `after_search_s` (the estimate), scaled by how much slower or
    faster the search's candidates ran than `expected_candidate_s` (when given; within 0.5x to
    4x): on a shared machine, load that slows the search slows what follows it too."""
    search_started = clock()

    def may_continue(evaluated: int) -> bool:
        if budget_s is None or evaluated < min_candidates:
            return True
        now = clock()
        per = (now - search_started) / max(evaluated, 1)
        after = after_search_s
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

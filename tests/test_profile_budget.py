"""The profile's time budget and estimate (profiling/budget.py), with hand-set costs and a fake
clock: the default search is sized by max_subnets, the search gets what the fixed phases leave
of the budget (never fewer than the minimum), it stops before a candidate that would overrun,
and the estimate prices each phase from per-image costs."""

from __future__ import annotations

import random

import pytest

from superserve.errors import ConfigError
from superserve.profiling.budget import (
    CostModel,
    estimate_seconds,
    repeats_for,
    search_may_continue,
    warmup_for,
)
from superserve.profiling.profiler import ProfileConfig
from superserve.profiling.search import Candidate, SearchConfig, evolve

COST = CostModel(calibrate_s=(0.1, 0.2), score_s=(0.05, 0.1), timed_b1_s=0.04,
                 timed_image_s=0.02)


def test_fewer_timed_runs_at_larger_batches():
    assert [repeats_for(b, 15, 5) for b in (1, 2, 4, 8, 16, 32)] == [15, 11, 8, 5, 5, 5]
    assert repeats_for(32, 3, 5) == 3  # never more than asked
    assert [warmup_for(b, 3) for b in (1, 4, 8)] == [3, 3, 1]


def test_default_search_scales_with_max_subnets():
    assert ProfileConfig(max_subnets=30).search_config() == SearchConfig(
        population=60, generations=4, children=30, seed=0)
    assert ProfileConfig(max_subnets=4).search_config().population == 24
    given = SearchConfig(population=5)
    assert ProfileConfig(search=given).search_config() is given
    with pytest.raises(ConfigError, match="time_budget_s"):
        ProfileConfig(time_budget_s=0)
    with pytest.raises(ConfigError, match="min_search_candidates"):
        ProfileConfig(min_search_candidates=3)


def test_estimate_prices_each_phase_and_cuts_the_search_to_the_budget():
    cfg = ProfileConfig(max_subnets=30, batch_sizes=(1, 8), time_budget_s=None)
    e = estimate_seconds(COST, cfg, 200, 200, 100)
    per = 64 * 0.1 + 128 * 0.05  # search calibration + the search split
    assert e["search_candidate_s"] == pytest.approx(per)
    assert e["search_candidates"] == e["search_candidates_unbounded"] == 60 + 2 + 4 * 30
    assert e["final_calibrate_and_score_s"] == pytest.approx(32 * (200 * 0.2 + 300 * 0.1))
    timing = 32 * ((15 + 3) * 0.04 + (5 + 1) * 8 * 0.02)
    assert e["timing_s"] == pytest.approx(timing)
    assert e["total_s"] == pytest.approx(e["latency_model_s"] + e["search_s"]
                                         + e["after_search_s"])
    fixed = e["latency_model_s"] + e["after_search_s"]
    tight = estimate_seconds(COST, ProfileConfig(max_subnets=30, batch_sizes=(1, 8),
                                                 time_budget_s=fixed + 40 * per), 200, 200, 100)
    assert tight["search_candidates"] == 40
    assert tight["total_s"] == pytest.approx(fixed + 40 * per)
    over = estimate_seconds(COST, ProfileConfig(max_subnets=30, batch_sizes=(1, 8),
                                                time_budget_s=60), 200, 200, 100)
    assert over["search_candidates"] == 24  # the minimum, whatever the budget


def test_search_stops_before_a_candidate_that_would_overrun():
    now = [0.0]
    may = search_may_continue(budget_s=100.0, min_candidates=3, started_s=0.0,
                              after_search_s=40.0, clock=lambda: now[0])

    class Line:  # integers; larger is better and costlier
        def sample(self, rng):
            return rng.randrange(1000)

        def mutate(self, s, rng, prob):
            return s + rng.randrange(1, 5)

        def crossover(self, a, b, rng):
            return (a + b) // 2

        def largest(self):
            return 1000

        def smallest(self):
            return 0

    def evaluate(spec):
        now[0] += 10.0  # every candidate costs 10 s
        return float(spec), float(spec) + 1

    got = evolve(Line(), evaluate, SearchConfig(population=20, generations=2, children=5),
                 may_continue=may)
    # 100 s budget, 40 s after the search: candidates while now + 10 + 40 <= 100
    assert len(got) == 6 and now[0] == 60.0  # 60 s of search + 40 s after: the budget
    assert all(isinstance(c, Candidate) for c in got)
    now[0] = 0.0
    slow = search_may_continue(budget_s=100.0, min_candidates=3, started_s=0.0,
                               after_search_s=20.0, expected_candidate_s=5.0,
                               clock=lambda: now[0])
    got = evolve(Line(), evaluate, SearchConfig(population=20, generations=2, children=5),
                 may_continue=slow)
    # candidates took 2x the estimate: the 20 s after the search are taken as 40 s
    assert len(got) == 6 and now[0] == 60.0
    few = search_may_continue(1.0, 8, 0.0, 1e9, clock=lambda: 1e9)
    assert all(few(n) for n in range(8)) and not few(8)  # the minimum comes first
    assert search_may_continue(None, 8, 0.0, 0.0)(10 ** 6)
    rng = random.Random(0)
    assert evolve(Line(), lambda s: (float(s), float(s) + 1 + rng.random()),
                  SearchConfig(population=3, generations=0)) != []


def test_a_frontier_of_cheap_subnets_is_priced_cheap():
    from superserve.profiling.budget import after_search_seconds, frontier_positions

    ends = CostModel((0.1, 0.2), (0.05, 0.1), 0.04, 0.02,
                     ends=((0.1, 0.05, 0.01, 0.005, 0.0), (1.0, 0.5, 0.1, 0.05, 0.0)))
    assert ends.at(0.0).calibrate_s[1] == pytest.approx(0.1)
    assert ends.at(1.0).score_s[1] == pytest.approx(0.5)
    assert ends.at(0.5).timed_b1_s == pytest.approx(0.1 ** 0.5 * 0.01 ** 0.5)  # log midpoint
    assert COST.at(0.3) is COST  # ends unknown: the mean costs
    # a front from 10 to 20 ms between ends at 10 and 1000 ms: positions 0 to ~0.15
    front = [Candidate(i, float(i), 10.0 + i) for i in range(11)]
    where = frontier_positions(front, 10.0, 1000.0, 5)
    assert where[:2] == [0.0, 1.0] and len(where) == 7
    assert max(where[2:]) == pytest.approx(0.1505, abs=1e-3) and min(where[2:]) == 0.0
    cfg = ProfileConfig(max_subnets=5, batch_sizes=(1,))
    cheap = after_search_seconds(ends, cfg, 100, 100, 50, where)["after_search_s"]
    spread = after_search_seconds(ends, cfg, 100, 100, 50,
                                  [k / 6 for k in range(7)])["after_search_s"]
    assert cheap < 0.6 * spread


def test_profile_cli_refuses_a_negative_budget(capsys):
    from superserve.cli import main

    assert main(["profile", "--time-budget", "-1", "--out", "x.json"]) == 2
    assert "--time-budget must be >= 0" in capsys.readouterr().err

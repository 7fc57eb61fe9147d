"""Profiling building blocks with hand-built inputs: the score, the timing harness, the
latency predictor, configs, and table matching."""

import pytest
import torch

from superserve.errors import ConfigError, TableError
from superserve.profiling.scoring import calibrated_nll, scores_from_logits
from superserve.profiling.search import SearchConfig
from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.profiling.timing import LatencyModel, measure, measure_interleaved, percentile


def test_calibrated_score_ignores_confidence_but_p_true_does_not():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (400,), generator=g)
    logits = torch.randn(400, 10, generator=g)
    logits[torch.arange(400), y] += 2.0
    a, b = scores_from_logits(logits, y), scores_from_logits(logits * 0.3, y)
    assert a.score == pytest.approx(b.score, rel=1e-4)  # rescaled logits: same ranking
    assert a.top1 == b.top1
    assert a.p_true > b.p_true + 0.1  # p(true) rewards confidence alone


def test_calibrated_score_prefers_the_better_ranker_even_when_less_confident():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (500,), generator=g)
    noise = torch.randn(500, 10, generator=g)
    good, bad = noise.clone(), noise.clone()
    good[torch.arange(500), y] += 3.0
    bad[torch.arange(500), y] += 1.5
    s_good, s_bad = scores_from_logits(good * 0.5, y), scores_from_logits(bad * 3.0, y)
    assert s_good.score > s_bad.score
    assert s_good.p_true < s_bad.p_true  # the naive measure ranks them the wrong way round
    assert calibrated_nll(good, y) == pytest.approx(-s_good.score, rel=1e-4)


class FakeClock:
    """Each call of fn i advances time by cost[i] (+ a burst on chosen calls)."""

    def __init__(self):
        self.t = 0.0
        self.calls = []

    def __call__(self):
        return self.t


def test_measure_interleaved_medians_and_order():
    clock = FakeClock()
    costs = [1.0, 2.0, 3.0]

    def make(i):
        def fn():
            clock.calls.append(i)
            # one burst of noise during round 2 hits the fn running then, once
            clock.t += costs[i] + (50.0 if len(clock.calls) == 13 else 0.0)  # fn 0, round 4
        return fn

    res = measure_interleaved([make(i) for i in range(3)], repeats=5, warmup=1, clock=clock)
    assert [m for m, _ in res] == [1.0, 2.0, 3.0]  # the burst does not move a median
    assert res[0][1] == 51.0 and res[1][1] == 2.0  # p99 sees the burst and res[2][1] == 3.0
    assert clock.calls == [0, 1, 2] * 6  # round-robin: warm-up round, then 5 timed rounds


def test_measure_single_and_percentile():
    clock = FakeClock()
    seq = iter([1.0, 1.0, 5.0, 2.0, 3.0])

    def fn():
        clock.t += next(seq)

    med, p99 = measure(fn, repeats=4, warmup=1, clock=clock)
    assert med == pytest.approx(2.5) and p99 == 5.0
    assert percentile([1, 2, 3, 4], 0.5) in (2, 3)
    with pytest.raises(ValueError):
        measure_interleaved([fn], repeats=0, warmup=0)


def test_latency_model_recovers_a_linear_cost():
    feats = [(l, f) for l in (4, 8, 12, 16) for f in (2.0, 30.0, 100.0)]
    lat = [1e-4 + 6e-5 * l + 2e-5 * f for l, f in feats]
    m = LatencyModel.fit(feats, lat)
    assert m.coef == pytest.approx((1e-4, 6e-5, 2e-5), rel=1e-6)
    assert m.median_rel_error < 1e-9
    assert m.predict(10, 50.0) == pytest.approx(1e-4 + 6e-4 + 1e-3)
    with pytest.raises(ValueError, match=">= 3"):
        LatencyModel.fit(feats[:2], lat[:2])


@pytest.mark.parametrize("kw,field", [({"batch_sizes": (2, 1)}, "batch_sizes"),
                                      ({"repeats": 0}, "repeats"),
                                      ({"max_subnets": 1}, "max_subnets"),
                                      ({"warmup": -1}, "warmup")])
def test_profile_config_validation_names_the_field(kw, field):
    from superserve.profiling.profiler import ProfileConfig

    with pytest.raises(ConfigError, match=field):
        ProfileConfig(**kw)


def test_search_config_validation():
    with pytest.raises(ConfigError, match="mutate_prob"):
        SearchConfig(mutate_prob=1.5)
    with pytest.raises(ConfigError, match="children"):
        SearchConfig(children=-1)


def test_table_mismatch_names_each_field():
    t = ProfileTable.build("resnet", [SubnetProfile(0, {"i": 0}, 0.9, {1: 1.0})], (1,),
                           device="cpu", threads=1, checkpoint_sha256="abc")
    assert t.mismatches(checkpoint_sha256="abc", device="cpu", threads=1) == []
    bad = t.mismatches(checkpoint_sha256="def", threads=2)
    assert len(bad) == 2 and "checkpoint_sha256='abc'" in bad[0] and "threads=1" in bad[1]
    with pytest.raises(TableError, match="device='cpu' \\(expected 'cuda'\\)"):
        t.require_match(device="cuda")
    t.require_match(family="resnet")


def _toy_specs(n, seed=0):
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        depth = rng.randint(1, 4)
        out.append({"family": "toy", "depth": depth,
                    "widths": [rng.choice([0.25, 0.5, 0.75, 1.0]) for _ in range(depth)]})
    return out


def test_spec_encoder_pads_inactive_positions_by_the_largest_spec():
    from superserve.profiling.predictor import SpecEncoder

    enc = SpecEncoder({"family": "toy", "depth": 4, "widths": [1.0, 1.0, 1.0, 1.0]})
    raw = enc.raw({"depth": 2, "widths": [0.5, 1.0]})
    # (value, active) per position: depth, then 4 width slots (2 active, 2 padded)
    assert raw.tolist() == [2, 1, 0.5, 1, 1.0, 1, 0, 0, 0, 0]
    x = enc.encode([{"depth": 2, "widths": [0.5, 1.0]}], [10.0], [1000.0])
    assert x.shape == (1, 10 + 5) and x[0, 0] == 0.5  # depth scaled by the largest (4)


def test_accuracy_predictor_learns_a_known_score_and_ranks_unseen_specs():
    import numpy as np

    from superserve.profiling.predictor import AccuracyPredictor, SpecEncoder, spearman

    enc = SpecEncoder({"family": "toy", "depth": 4, "widths": [1.0] * 4})

    def truth(s):  # diminishing returns in total width, a bonus for depth
        return -1.0 / (1.0 + sum(s["widths"])) + 0.02 * s["depth"]

    def feats(specs):
        size = [sum(s["widths"]) * 10 for s in specs]
        return enc.encode(specs, size, [v * 100 for v in size])

    train, test = _toy_specs(200, 0), _toy_specs(100, 1)
    rng = np.random.default_rng(0)
    y = [truth(s) + rng.normal(0, 0.005) for s in train]
    pred = AccuracyPredictor.fit(feats(train), y)
    assert pred.samples == 200 and pred.cv_spearman > 0.9 and pred.cv_mae < 0.02
    got = pred.predict(feats(test))
    assert spearman(got, [truth(s) for s in test]) > 0.95
    d = pred.to_dict()
    assert {"alpha", "cv_mae", "cv_spearman", "samples"} <= set(d)


def test_accuracy_predictor_needs_enough_samples():
    import numpy as np

    from superserve.profiling.predictor import AccuracyPredictor

    with pytest.raises(ValueError, match="needs >= 8"):
        AccuracyPredictor.fit(np.zeros((4, 3)), [0.0] * 4)


def test_spearman_handles_ties_and_constant_input():
    from superserve.profiling.predictor import spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def test_measure_interleaved_per_fn_counts_spread_evenly_over_the_rounds():
    """Per-fn repeat counts: max(repeats) rounds, each fn timed in its own count of them,
    spread over the whole run (a drifting host moves every fn alike), warmed up front."""
    calls: list[tuple[str, int]] = []
    rounds: list[tuple[int, int]] = []
    done_rounds = {"n": 0}  # timed rounds completed when a call is made

    def make(name):
        return lambda: calls.append((name, done_rounds["n"]))

    def on_round(done, total):
        rounds.append((done, total))
        done_rounds["n"] = done

    res = measure_interleaved([make("a"), make("b")], [4, 2], [2, 1], on_round=on_round)
    assert len(res) == 2 and all(med > 0 for med, _ in res)
    assert [n for n, _ in calls[:3]] == ["a", "b", "a"]  # warm-up: a twice, b once
    timed = calls[3:]
    assert [r for n, r in timed if n == "a"] == [0, 1, 2, 3]
    assert [r for n, r in timed if n == "b"] == [0, 2]  # spread over the run, not rounds 0-1
    assert rounds == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(ValueError):
        measure_interleaved([make("a")], [1, 2], 0)

"""The simulated experiments: rate scaling, the tradeoff-frontier arithmetic behind the
paper's headline numbers, the registry, and a quick end-to-end run through the CLI."""

from __future__ import annotations

import json

import pytest

from superserve.cli import build_parser, main
from superserve.experiments import EXPERIMENTS, register
from superserve.experiments.simulated import capacity_qps, frontier_gains, rate_scale
from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.sim.synthetic import synthetic_table


def table3():
    rows = [([1, 2, 3], 0.90), ([2, 4, 6], 0.95), ([4, 8, 12], 0.99)]
    subnets = [SubnetProfile(i, {"i": i}, a, dict(zip((1, 2, 4), r)))
               for i, (r, a) in enumerate(rows)]
    return ProfileTable.build("t", subnets, (1, 2, 4))


def test_rate_scale_is_8_worker_capacity_of_the_most_accurate_subnet_over_2000():
    t = table3()
    # SLO 10 ms: half is 5 ms; id2 fits only batch 1 (4 ms): 250 q/s per worker
    assert capacity_qps(t, 2, 0.010) == pytest.approx(250)
    s = rate_scale(t, 0.010, workers=8)
    assert (s.factor, s.subnet) == (pytest.approx(1.0), 2)
    # SLO 30 ms: batch 4 in 12 ms -> 333 q/s per worker
    assert rate_scale(t, 0.030).factor == pytest.approx(8 * 4 / 0.012 / 2000)
    assert "2000 q/s" in s.how and "subnet 2" in s.how


def rec(policy, att, acc):
    return {"policy": policy, "slo_attainment": att, "mean_serving_accuracy": acc}


def test_frontier_gains_interpolate_the_baseline_frontier():
    recs = [rec("slackfit", 0.99, 0.96),
            rec("clipper:0", 1.00, 0.90), rec("clipper:1", 0.98, 0.94),
            rec("clipper:2", 0.50, 0.98), rec("infaas", 0.90, 0.90)]  # infaas is dominated
    g = frontier_gains(recs)
    # at attainment 0.99 the frontier is halfway from (1.00, 90%) to (0.98, 94%): 92%
    assert g["accuracy_gain_pts"] == pytest.approx(4.0)
    # at accuracy 96% it is halfway from (94%, 0.98) to (98%, 0.50): 0.74
    assert g["attainment_ratio"] == pytest.approx(0.99 / 0.74)
    assert g["dominated_by"] == []
    assert [p["accuracy"] for p in g["frontier"]] == [0.90, 0.94, 0.98]


def test_frontier_gains_when_slackfit_is_beyond_or_behind_every_baseline():
    best = frontier_gains([rec("slackfit", 1.0, 0.99), rec("clipper:0", 0.9, 0.95)])
    assert best["attainment_ratio"] is None  # no baseline is as accurate
    assert best["accuracy_gain_pts"] is None  # nor reaches its attainment
    worse = frontier_gains([rec("slackfit", 0.8, 0.90), rec("clipper:0", 0.9, 0.95)])
    assert worse["dominated_by"] == ["clipper:0"]
    assert worse["accuracy_gain_pts"] == pytest.approx(-5.0)


@pytest.fixture
def small_table(tmp_path):
    path = tmp_path / "table.json"
    synthetic_table(n=10).save(path)
    return path


def test_fig11c_quick_end_to_end(small_table, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment", "fig11c", "--table", str(small_table), "--out", str(out),
                 "--quick", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert {r["policy"] for r in recs} == {"slackfit", "maxbatch", "maxacc"}
    assert all(set(r) == {"experiment", "cell", "policy", "slo_attainment",
                          "mean_serving_accuracy"} for r in recs)
    d = out / "fig11c"
    assert (d / "fig11c.csv").read_text().count("\n") == len(recs) + 1
    assert (d / "fig11c_policies.png").stat().st_size > 1000
    meta = json.loads((d / "fig11c.meta.json").read_text())
    assert meta["rate_scale"] > 0 and "paper rates x" in meta["scale_how"]
    assert set(meta["summary"]) == {r["cell"] for r in recs}


def test_fig1c_quick_shows_misses_growing_with_actuation_delay(small_table, tmp_path, capsys):
    assert main(["experiment", "fig1c", "--table", str(small_table), "--out", str(tmp_path),
                 "--quick", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    att = [r["slo_attainment"] for r in recs]
    assert att[0] > 0.99 and att[-1] < att[0]


def test_registry_is_extensible():
    assert {"fig1c", "fig8", "fig9", "fig10", "fig11a", "fig11c"} <= set(EXPERIMENTS)
    assert EXPERIMENTS["live-fault"].kind == "live"
    try:
        register("fig-extra", "sim", "superserve.experiments.simulated", "a later experiment")
        args = build_parser().parse_args(["experiment", "fig-extra"])
        assert args.name == "fig-extra"
    finally:
        EXPERIMENTS.pop("fig-extra", None)
    with pytest.raises(ValueError, match="kind='gpu'"):
        register("x", "gpu", "m")

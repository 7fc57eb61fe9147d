"""`superserve models --json` and `superserve bench subnetact --json` on the shipped checkpoints:
the keys the issue defines, and values that are consistent with each other (not timings)."""

import json

import pytest

from superserve.cli import main
from superserve.models import checkpoint_path


@pytest.mark.skipif(not checkpoint_path("resnet").is_file(), reason="no shipped checkpoint")
def test_models_json_describes_each_family(capsys):
    assert main(["models", "--json", "--families", "resnet"]) == 0
    out = json.loads(capsys.readouterr().out)
    (m,) = out["models"]
    for key in ("family", "checkpoint", "params", "search_space_size", "test_accuracy_largest",
                "test_accuracy_smallest", "latency_ms_largest_b1", "latency_ms_smallest_b1"):
        assert key in m, key
    assert m["family"] == "resnet" and m["search_space_size"] > 1000
    assert m["test_accuracy_largest"] > m["test_accuracy_smallest"] > 0.1
    assert m["latency_ms_largest_b1"] > m["latency_ms_smallest_b1"] > 0
    assert m["checkpoint_mb"] <= 10


@pytest.mark.skipif(not checkpoint_path("resnet").is_file(), reason="no shipped checkpoint")
def test_bench_subnetact_json(capsys):
    assert main(["bench", "subnetact", "--json", "--family", "resnet", "--specs", "2",
                 "--repeats", "2"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("actuation_us_p50", "load_extracted_ms_p50", "latency_ratio_supernet_vs_materialized",
                "served_subnets", "memory_mb_supernet_with_stats", "stats_fraction_per_subnet",
                "memory_mb_6_extracted", "memory_ratio_6"):
        assert key in r, key
    assert r["served_subnets"] >= 6
    assert r["memory_ratio_6"] == pytest.approx(
        r["memory_mb_6_extracted"] / r["memory_mb_supernet_with_stats"])
    # statistics of 500 subnets cost more than those of the served set, and fp16 stays small
    assert r["memory_mb_supernet_with_500_stats"] > r["memory_mb_supernet_with_stats"]
    assert 0 < r["stats_fraction_per_subnet"] < 0.05


def test_spread_by_flops_steps_evenly_from_smallest_to_largest():
    from superserve.bench.subnetact import spread_by_flops
    from superserve.models import build_supernet
    from superserve.models.configs import default_train_config

    net = build_supernet("resnet", default_train_config("resnet", quick=True).model)
    specs = spread_by_flops(net, 6, pool=400)
    flops = [net.flops(s) for s in specs]
    assert len(set(specs)) == 6 and flops == sorted(flops)
    assert specs[0] == net.space.smallest() and specs[-1] == net.space.largest()
    step = (flops[-1] - flops[0]) / 5
    for i, f in enumerate(flops):  # each within a step of its evenly spaced target
        assert abs(f - (flops[0] + i * step)) < step

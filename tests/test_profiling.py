"""Offline phase: the search finds a known frontier; the profiler builds a valid table."""

import random

import pytest

from superserve.profiling.search import Candidate, SearchConfig, evolve, pareto_front, thin_front


class GridSpace:
    """Specs (x, y) in 0..49 with cost 1 + x + y and score x + 3y: for each cost the best spec
    has y as large as possible, so the true frontier is (0, y) then (x, 49)."""

    def sample(self, rng):
        return (rng.randrange(50), rng.randrange(50))

    def mutate(self, s, rng, prob):
        return tuple(max(0, min(49, v + rng.randint(-2, 2))) for v in s)

    def crossover(self, a, b, rng):
        return (a[0], b[1]) if rng.random() < 0.5 else (b[0], a[1])

    def largest(self):
        return (49, 49)

    def smallest(self):
        return (0, 0)


def grid_eval(s):
    return s[0] + 3 * s[1], 1.0 + s[0] + s[1]


def area_under_front(front):
    """Area under the front's best-score-so-far step function over cost 1..99."""
    best, area, i = 0.0, 0.0, 0
    for cost in range(1, 100):
        while i < len(front) and front[i].cost <= cost:
            best = max(best, front[i].score)
            i += 1
        area += best
    return area


def test_pareto_front_and_thinning():
    cands = [Candidate(s, *grid_eval(s)) for s in [(x, y) for x in range(10) for y in range(10)]]
    front = pareto_front(cands)
    assert [c.spec for c in front] == [(0, y) for y in range(10)] + [(x, 9) for x in range(1, 10)]
    thin = thin_front(front, 5)
    assert len(thin) == 5 and thin[0].spec == (0, 0) and thin[-1].spec == (9, 9)


def test_thinning_a_clustered_front_still_gives_n_distinct_points():
    # most of the front sits at the dear end: evenly spaced targets in log cost fall on the
    # same few points there, and each must still take a different one
    front = ([Candidate(("cheap", i), score=i, cost=1.0 + 0.01 * i) for i in range(3)]
             + [Candidate(("dear", i), score=10 + i, cost=100.0 + i) for i in range(40)])
    for n in (2, 5, 10, 30, 43):
        thin = thin_front(front, n)
        assert len(thin) == n == len({c.spec for c in thin})
        assert thin[0] is front[0] and thin[-1] is front[-1]
        assert [c.cost for c in thin] == sorted(c.cost for c in thin)
    assert thin_front(front, 100) == front and thin_front(front, 0) == []


def test_evolution_beats_random_sampling_on_a_known_frontier():
    cfg = SearchConfig(population=30, generations=5, children=30, seed=1)
    evolved = evolve(GridSpace(), grid_eval, cfg)
    rng = random.Random(1)
    sampled = [Candidate(s, *grid_eval(s)) for s in {GridSpace().sample(rng)
                                                     for _ in range(len(evolved))}]
    true_front = {(0, y) for y in range(50)} | {(x, 49) for x in range(50)}
    found = {c.spec for c in evolved} & true_front
    assert area_under_front(pareto_front(evolved)) > area_under_front(pareto_front(sampled))
    assert len(found) >= 20  # random sampling of the same budget expects ~7


QUICK_RESNET = {"image_size": 8, "stem_channels": 8, "stage_channels": (8, 16),
                "stage_strides": (1, 2), "depth_choices": (1, 2)}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """An untrained 8x8 resnet supernet checkpoint: the pipeline, not the accuracy, is tested."""
    import torch

    from superserve.models import build_supernet
    from superserve.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = build_supernet("resnet", QUICK_RESNET)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, net, {"dataset": "digits8"}, {})
    return path


def tiny_config(**kw):
    from superserve.profiling.profiler import ProfileConfig

    return ProfileConfig(batch_sizes=(1, 2, 4), repeats=3, warmup=1, calib_images=300,
                         search_calib_images=100, predictor_samples=6, max_subnets=10,
                         search=SearchConfig(population=12, generations=1, children=8),
                         predictor_search=SearchConfig(population=100, generations=2,
                                                       children=50), **kw)


def test_profiler_end_to_end_on_tiny_model(tiny_ckpt, tmp_path, capsys):
    import json

    from superserve.cli import main
    from superserve.models import file_sha256
    from superserve.profiling import norm_path
    from superserve.profiling.profiler import run_profile
    from superserve.profiling.table import ProfileTable
    from superserve.subnetact import NormStore

    out = tmp_path / "t.json"
    table = run_profile(str(tiny_ckpt), out, tiny_config())
    loaded = ProfileTable.load(out)
    assert loaded == table and loaded.checkpoint_sha256 == file_sha256(tiny_ckpt)
    assert 1 <= len(table) <= 10 and table.batch_sizes == (1, 2, 4) and table.threads == 1
    accs = [s.accuracy for s in table.subnets]
    assert len(set(accs)) == len(accs)  # the predicted frontier: accuracy strictly rises
    fitted = table.monotone()  # measured latencies fitted to P1/P2
    assert fitted.p1_violations() == [] and fitted.p2_violations() == []
    by_acc = sorted(fitted.subnets, key=lambda s: s.accuracy)
    assert [s.latency_ms[1] for s in by_acc] == sorted(s.latency_ms[1] for s in by_acc)
    assert all(s.test_accuracy is not None and s.load_ms > 0 and s.flops > 0 and s.params > 0
               for s in table.subnets)
    prov = table.provenance
    assert prov["candidates_evaluated"] >= 12 and prov["served_after_measurement"] == len(table)
    assert {"pareto_points_score", "pareto_points_top1", "pareto_points_p_true",
            "pareto_points_predicted_score"} <= set(prov)
    assert prov["accuracy_predictor"]["samples"] == prov["candidates_evaluated"]
    store = NormStore.load(norm_path(out))
    assert len(store) == len(table)  # statistics of exactly the served subnets
    capsys.readouterr()
    assert main(["profile", "show", str(out), "--json", "--plot", str(tmp_path / "f.png")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {"subnets", "batch_sizes", "device", "threads", "checkpoint_sha256", "schema_version",
            "p1_violations", "p2_violations"} <= set(shown)
    assert {"id", "spec", "accuracy", "test_accuracy", "latency_ms", "flops"} <= set(
        shown["subnets"][0])
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert main(["profile", "show", str(out)]) == 0
    assert "P1 violations" in capsys.readouterr().out


def test_ensure_table_profiles_once_then_reuses_the_cache(tiny_ckpt, tmp_path, monkeypatch):
    import superserve.profiling.profiler as profiler
    from superserve.profiling import ensure_table

    table, path = ensure_table(str(tiny_ckpt), threads=1, cache_dir=tmp_path,
                               config=tiny_config())
    assert path.parent == tmp_path and path.is_file()

    def no_profiling(*a, **k):
        raise AssertionError("profiled again although a matching table is cached")

    monkeypatch.setattr(profiler, "run_profile", no_profiling)
    again, path2 = ensure_table(str(tiny_ckpt), threads=1, cache_dir=tmp_path)
    assert path2 == path and again == table
    # another thread count does not match the cached table: it must profile
    with pytest.raises(AssertionError, match="profiled again"):
        ensure_table(str(tiny_ckpt), threads=2, cache_dir=tmp_path)


def test_ensure_table_rejects_devices_it_cannot_profile(tiny_ckpt, tmp_path):
    from superserve.errors import ConfigError
    from superserve.profiling import ensure_table

    with pytest.raises(ConfigError, match="device='cuda'"):
        ensure_table(str(tiny_ckpt), threads=1, device="cuda", cache_dir=tmp_path)

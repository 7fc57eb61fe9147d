"""Offline phase: the search finds a known frontier; the profiler builds a valid table."""

import random

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
    assert len(thin) <= 5 and thin[0].spec == (0, 0) and thin[-1].spec == (9, 9)


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


def test_profiler_end_to_end_on_quick_model(tmp_path):
    from superserve.cli import main
    from superserve.models import file_sha256
    from superserve.profiling import norm_path
    from superserve.profiling.profiler import ProfileConfig, run_profile
    from superserve.profiling.table import ProfileTable
    from superserve.subnetact import NormStore

    ckpt = tmp_path / "q.pt"
    assert main(["train", "--family", "resnet", "--quick", "--out", str(ckpt)]) == 0
    cfg = ProfileConfig(batch_sizes=(1, 2, 4), repeats=3, warmup=1, calib_images=300,
                        search_calib_images=100, predictor_samples=6, max_subnets=10,
                        search=SearchConfig(population=12, generations=1, children=8))
    out = tmp_path / "t.json"
    table = run_profile(str(ckpt), out, cfg)
    loaded = ProfileTable.load(out)
    assert loaded == table and loaded.checkpoint_sha256 == file_sha256(ckpt)
    assert 2 <= len(table) <= 10 and table.batch_sizes == (1, 2, 4)
    scores = [s.score for s in table.subnets]
    assert scores == sorted(scores)  # the measured frontier: score rises with latency
    assert all(s.test_accuracy is not None and s.load_ms > 0 and s.flops > 0 for s in table.subnets)
    store = NormStore.load(norm_path(out))
    assert len(store) == len(table)
    assert main(["profile", "show", str(out), "--plot", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 1000

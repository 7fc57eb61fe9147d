"""A front end behind on its core: the simulator's FIFO front-end stage (`SimConfig.frontend_s`),
what the router tells the policy about it (`QueueView.head_queued_s`, `entry_share`), and
SlackFit's front-end rule (`slackfit:front=F`), which plans like the fastest fixed subnet while
requests reach the router with under F of their SLO left."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import RecordingPolicy
from superserve.errors import ConfigError
from superserve.profiling import default_table_path
from superserve.profiling.table import ProfileTable
from superserve.runtime.clock import ManualClock
from superserve.runtime.fake import FakePool
from superserve.runtime.router import Router, RouterConfig
from superserve.scheduling import make_policy
from superserve.scheduling.base import QueueView
from superserve.scheduling.feedback import FRONT_END_SHARE
from superserve.scheduling.policies import SlackFit
from superserve.sim.simulator import SimConfig, frontend_entries, simulate
from superserve.traces import load_trace

SLO = 0.050
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def shipped():
    return ProfileTable.load(default_table_path("resnet"))


def test_frontend_entries_are_the_fifo_recursion():
    rng = np.random.default_rng(3)
    arr = np.sort(np.concatenate([rng.uniform(0, 1, 300), np.full(50, 0.4)]))
    service = 0.004
    want, last = [], -np.inf
    for a in arr:
        last = max(a, last) + service
        want.append(last)
    got = frontend_entries(arr, service)
    assert np.allclose(got, want, rtol=0, atol=1e-12)
    assert np.all(got >= arr + service - 1e-12) and np.all(np.diff(got) >= service - 1e-12)


def test_a_front_end_delays_entries_not_deadlines(shipped):
    """20 requests at once through a front end of 5 ms each: the k-th reaches the queue at
    5(k + 1) ms, but each is due 50 ms after it arrived, so from the 10th on none can be
    met; without a front end every one is."""
    arr = np.zeros(20)
    policy = make_policy("clipper:0", shipped)
    base = SimConfig(slo_s=SLO, batch_wait=None, feedback=None)
    assert simulate(arr, shipped, policy, base).slo_attainment == 1.0
    late = simulate(arr, shipped, policy, SimConfig(slo_s=SLO, batch_wait=None, feedback=None,
                                                    frontend_s=0.005))
    assert late.slo_attainment <= 9 / 20
    assert late.completed_in_slo >= 8  # the first ones entered in time and were answered
    with pytest.raises(ConfigError, match="frontend_s"):
        SimConfig(frontend_s=-0.001)


def _view(**kw):
    base = {"length": 1, "head_deadline_s": SLO, "arrival_rate_qps": 50.0, "head_slo_s": SLO}
    return QueueView(**(base | kw))


def test_slackfit_plans_like_the_fastest_subnet_while_the_front_end_is_behind(shipped):
    policy = make_policy("slackfit", shipped, slo_s=SLO)
    fastest = policy.lookup.fastest
    assert policy.front_end_share == FRONT_END_SHARE
    calm = policy.decide(_view(), 0.0)
    assert calm.subnet != fastest  # a light load with the whole SLO: an accurate subnet
    assert policy.decide(_view(entry_share=0.9), 0.0) == calm
    behind = policy.decide(_view(entry_share=FRONT_END_SHARE - 0.01), 0.0)
    assert behind.subnet == fastest and behind.batch_size == 1
    # ... the largest batch of it that the head's slack fits, the queue allowing
    long = policy.decide(_view(length=40, entry_share=0.2), 0.0)
    assert long.subnet == fastest and long.batch_size >= 16
    off = make_policy("slackfit:front=0", shipped, slo_s=SLO)
    assert off.front_end_share is None
    assert off.decide(_view(entry_share=0.1), 0.0) == calm


def test_the_front_end_rule_is_validated(shipped):
    for bad in ("1", "1.5", "-0.1", "x"):
        with pytest.raises(ConfigError, match="front"):
            make_policy(f"slackfit:front={bad}", shipped, slo_s=SLO)
    assert make_policy("slackfit:front=0.3", shipped, slo_s=SLO).front_end_share == 0.3
    with pytest.raises(ConfigError, match="front_end_share"):
        SlackFit(shipped, front_end_share=1.0)


def test_the_rate_guard_reads_the_queue_since_the_head_entered(shipped):
    """The images behind the head came since it entered the router's queue: a head that
    waited 40 ms in a front end makes its age there, not since its first byte, the window."""
    policy = make_policy("slackfit", shipped, slo_s=SLO)
    now = 0.045  # the head arrived at 0, due at 50 ms
    arrived = _view(length=41)
    entered = _view(length=41, head_queued_s=0.025)
    assert policy._need_qps(arrived, 1.0, now) == pytest.approx(40 / 0.045)
    assert policy._need_qps(entered, 1.0, now) == pytest.approx(40 / 0.020)


def _router(table):
    """A router on a manual clock over one fake worker, with a policy that keeps its views."""
    clock = ManualClock()
    pool = FakePool(table, clock, n_workers=1, restart_s=0.010)
    policy = RecordingPolicy(table)
    router = Router(policy, pool, clock, RouterConfig(batch_wait=None))
    router.start()
    clock.run_until(0.0)
    return clock, pool, router, policy.views


def test_the_router_tells_the_policy_how_late_requests_reach_it(table):
    views = []

    async def body():
        clock, _pool, router, seen = _router(table)
        views.append(seen)
        clock.advance(0.030)
        # its first byte came 30 ms ago: it enters with 0.4 of a 50 ms SLO left
        router.submit(np.zeros((1, 1, 28, 28), np.float32), slo_s=SLO, arrival_s=0.0)
        clock.advance(0.100)
    asyncio.run(body())
    (v,) = views[0]
    assert v.entry_share == pytest.approx(0.4)
    assert v.head_queued_s == pytest.approx(0.030)
    assert v.head_deadline_s == pytest.approx(SLO)


def test_a_request_refused_as_hopeless_still_says_how_late_requests_come(table):
    """A request that reached the router too late to be met is refused at once, but it is the
    newest news of the front end: the next plan sees its share."""
    views = []

    async def body():
        clock, pool, router, seen = _router(table)
        views.append(seen)
        busy = router.submit(np.zeros((16, 1, 28, 28), np.float32), slo_s=1.0)
        assert pool.busy(0)
        queued = router.submit(np.zeros((1, 1, 28, 28), np.float32), slo_s=1.0)
        late = router.submit(np.zeros((1, 1, 28, 28), np.float32), slo_s=SLO,
                             arrival_s=-(SLO - 0.0001))
        assert late.done()  # refused: 0.1 ms left
        clock.advance(1.0)
        assert busy.result().deadline_met and queued.result().deadline_met
        assert router.entry_share == pytest.approx(0.0001 / SLO)
        assert router.front_end_behind is False  # GreedyPolicy has no front-end rule
    asyncio.run(body())
    first, second = views[0][0], views[0][-1]
    assert first.entry_share == pytest.approx(1.0)
    assert second.entry_share == pytest.approx(0.0001 / SLO)


def test_the_router_says_when_slackfits_front_end_rule_binds(shipped):
    """`Router.front_end_behind` (the gauge superserve_calibration_front_end_behind): true
    while the newest request reached the router with under SlackFit's share of its SLO."""
    img = np.zeros((1, 1, 28, 28), np.float32)

    async def body():
        clock = ManualClock()
        pool = FakePool(shipped, clock, n_workers=1, restart_s=0.010)
        router = Router(make_policy("slackfit", shipped, slo_s=SLO), pool, clock,
                        RouterConfig(batch_wait=None))
        router.start()
        clock.run_until(0.0)
        assert router.entry_share == 1.0 and not router.front_end_behind
        clock.advance(0.030)
        late = router.submit(img, slo_s=SLO, arrival_s=0.0)  # 0.4 of its SLO left
        assert router.front_end_behind
        on_time = router.submit(img, slo_s=SLO)
        assert not router.front_end_behind
        clock.advance(0.2)
        assert late.result().deadline_met and on_time.result().deadline_met
    asyncio.run(body())


def test_on_a_trace_whose_front_end_falls_behind_the_rule_meets_more(shipped):
    """The Azure code trace at 1,000 req/s through a front end of 0.3 ms a request (its
    bursts reach the queue over ~100 ms, the later ones with little of their SLO left):
    SlackFit with the rule meets more than without it."""
    arr = np.asarray(load_trace("azure-llm:name=code,rate=1000,duration=10").arrivals_s)
    cfg = SimConfig(slo_s=SLO, overhead_s=0.004, busy_overhead_s=0.0008, calibrate=True,
                    latency_factor=1.45, frontend_s=0.0003)
    on = simulate(arr, shipped, make_policy("slackfit", shipped, slo_s=SLO), cfg)
    off = simulate(arr, shipped, make_policy("slackfit:front=0", shipped, slo_s=SLO), cfg)
    assert on.slo_attainment > off.slo_attainment + 0.005
    # and without a front end the rule never fires: the same run, batch for batch
    cfg0 = SimConfig(slo_s=SLO, overhead_s=0.004, busy_overhead_s=0.0008, calibrate=True,
                     latency_factor=1.45)
    a = simulate(arr, shipped, make_policy("slackfit", shipped, slo_s=SLO), cfg0)
    b = simulate(arr, shipped, make_policy("slackfit:front=0", shipped, slo_s=SLO), cfg0)
    assert (a.slo_attainment, a.mean_serving_accuracy, a.batches) == \
        (b.slo_attainment, b.mean_serving_accuracy, b.batches)


def test_the_benchmark_writes_its_matrix_and_plot(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("frontend_sim", BENCH / "frontend_sim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["frontend_sim.py", "--cells", "azure-code@1000:0,0.3",
                                      "--seeds", "1", "--duration", "3", "--out", str(tmp_path)])
    assert mod.main() == 0
    out = json.loads((tmp_path / "frontend.json").read_text())
    assert [r["frontend_ms"] for r in out["rows"]] == [0.0, 0.3]
    for row in out["rows"]:
        assert [p["spec"] for p in row["policies"]] == list(mod.DEFAULT_POLICIES)
        for p in row["policies"]:
            assert 0.0 <= p["slo_attainment"] <= 1.0 and 0.9 < p["accuracy"] < 1.0
    # no front end: nobody enters late; behind: some do
    assert all(p["late_entries_met"] is None for p in out["rows"][0]["policies"])
    assert all(p["late_entries_met"] is not None for p in out["rows"][1]["policies"])
    assert (tmp_path / "frontend.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        monkeypatch.setattr(sys, "argv", ["frontend_sim.py", "--cells", "azure@1:0"])
        mod.main()

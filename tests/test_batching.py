"""The batch wait (scheduling/batching.py): the pure rule, the router on a virtual clock, the
simulator, and the fast JSON path that keeps per-request CPU low beside it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from conftest import BATCHES, make_test_policy
from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.runtime.clock import ManualClock
from superserve.runtime.fake import FakePool
from superserve.runtime.router import Router, RouterConfig
from superserve.scheduling.batching import BatchWaitConfig, hold_until
from superserve.types import Outcome

IMG = np.zeros((1, 1, 28, 28), dtype=np.float32)
CFG = BatchWaitConfig(wait_s=0.002)


# ---------------------------------------------------------------- the pure rule
def test_holds_while_company_is_due_and_never_past_the_wait():
    # 2,000 req/s: ~4 more arrive within the 2 ms after the head's arrival
    assert hold_until(CFG, now=10.0005, head_arrival_s=10.0, head_slo_s=0.05, queued=1,
                      rate_qps=2000.0, largest_batch=32) == pytest.approx(10.002)
    # the wait counts from the head's arrival, not from now: past it, go
    assert hold_until(CFG, 10.0021, 10.0, 0.05, 1, 2000.0, 32) is None


def test_a_trickle_of_requests_is_never_held():
    # 100 req/s: 0.15 arrivals expected in the 1.5 ms left, fewer than one
    assert hold_until(CFG, 10.0005, 10.0, 0.05, 1, 100.0, 32) is None
    # the expectation is over what is left of the wait: at 1,000 req/s 1.5 ms holds ...
    assert hold_until(CFG, 10.0005, 10.0, 0.05, 1, 1000.0, 32) is not None
    # ... 0.5 ms does not
    assert hold_until(CFG, 10.0015, 10.0, 0.05, 1, 1000.0, 32) is None


def test_a_full_queue_goes_at_once():
    assert hold_until(CFG, 10.0, 10.0, 0.05, 32, 1e6, 32) is None
    assert hold_until(CFG, 10.0, 10.0, 0.05, 31, 1e6, 32) is not None
    small = BatchWaitConfig(wait_s=0.002, max_images=4)
    assert hold_until(small, 10.0, 10.0, 0.05, 4, 1e6, 32) is None


def test_the_wait_is_a_small_fraction_of_a_tight_slo():
    # SLO 10 ms: at most 5% of it, 0.5 ms, not 2 ms
    assert hold_until(CFG, 10.0, 10.0, 0.010, 1, 1e5, 32) == pytest.approx(10.0005)
    off = BatchWaitConfig(wait_s=0.0)
    assert hold_until(off, 10.0, 10.0, 0.05, 1, 1e6, 32) is None


@pytest.mark.parametrize("kw", [{"wait_s": -0.001}, {"wait_s": float("inf")},
                                {"slo_fraction": 1.5}, {"min_expected": 0.0},
                                {"max_images": 0}])
def test_config_validation(kw):
    with pytest.raises(ConfigError, match="batch wait"):
        BatchWaitConfig(**kw)


# ---------------------------------------------------------------- the router
@pytest.fixture()
def fast():
    """A worker that answers in tens of microseconds (a small model, or the no-compute
    worker): idle between requests even at thousands of requests a second."""
    rows = [(0.90, 0.02, 0.002), (0.95, 0.04, 0.004), (0.99, 0.08, 0.008)]
    subnets = [SubnetProfile(id=i, spec={"family": "fake", "level": i}, accuracy=acc,
                             latency_ms={b: base + per * b for b in BATCHES})
               for i, (acc, base, per) in enumerate(rows)]
    return ProfileTable.build("resnet", subnets, BATCHES, device="cpu", threads=1)


def _router(table, batch_wait):
    clock = ManualClock()
    pool = FakePool(table, clock, n_workers=1, restart_s=0.010)
    router = Router(make_test_policy(table), pool, clock,
                    RouterConfig(calibrate=False, feedback=None, batch_wait=batch_wait))
    router.start()
    clock.run_until(0.0)
    return clock, pool, router


def _drive(table, batch_wait, gap_s, n=3000):
    """n requests `gap_s` apart to an idle, fast worker; (batches, results). The holds
    are counted, and exported as `superserve_batch_holds_total`."""
    from superserve.server.metrics import ServerMetrics

    async def body():
        clock, pool, router = _router(table, batch_wait)
        metrics = ServerMetrics(lambda: 0, lambda: 1, router)
        futs = []
        for k in range(n):
            clock.run_until(1.0 + k * gap_s)
            futs.append(router.submit(IMG, slo_s=0.050))
        clock.advance(1.0)
        assert router.open_requests == 0
        held = router.stats.holds
        assert (held > 0) == (batch_wait is not None and gap_s < 0.001)
        assert f"superserve_batch_holds_total {float(held)}".encode() in metrics.render()
        return len(pool.submitted), [f.result() for f in futs]
    return asyncio.run(body())


def test_router_fills_batches_under_a_steady_stream(fast):
    """4,000 req/s for 0.75 s to a worker that is idle between requests: without the wait every
    request goes alone; with it, batches gather ~2 ms of arrivals, every request is still
    served on time, and none waits more than the wait beyond its own service."""
    alone, res0 = _drive(fast, None, 0.00025)
    held, res1 = _drive(fast, BatchWaitConfig(wait_s=0.002), 0.00025)
    assert all(r.outcome is Outcome.COMPLETED and r.deadline_met for r in res0 + res1)
    assert held < alone / 3
    assert max(r.queue_s for r in res1) <= 0.002 + 1e-9


def test_router_does_not_hold_a_trickle(fast):
    """50 req/s: no company is due within the wait, so every request goes at once, as
    without the wait."""
    batches, res = _drive(fast, BatchWaitConfig(wait_s=0.002), 0.020, n=40)
    assert batches == 40
    assert all(r.queue_s == 0.0 for r in res)


def test_a_timer_that_fires_early_still_ends_the_hold(fast):
    """A loop timer may fire up to its resolution early (uvloop: 1 ms): the hold it ends
    is over, and the batch goes then, not after another hold."""
    async def body():
        clock, pool, router = _router(fast, BatchWaitConfig(wait_s=0.002))
        for k in range(2000):  # a rate estimate of ~1,600 req/s
            clock.run_until(1.0 + k * 0.00025)
            router.submit(IMG, slo_s=0.050)
        clock.advance(0.005)  # all served, the worker idle
        assert router.open_requests == 0
        sent = len(pool.submitted)
        fut = router.submit(IMG, slo_s=0.050)  # held: company is due
        clock.advance(0.0)
        assert len(pool.submitted) == sent
        router._on_hold()  # the timer fires now, before the hold's end
        assert len(pool.submitted) == sent + 1
        clock.advance(0.1)
        assert fut.result().outcome is Outcome.COMPLETED
    asyncio.run(body())


def test_simulator_holds_as_the_router_does(fast):
    """The simulator applies the same rule: fewer, fuller batches under a steady stream to a
    fast worker, and every request still on time."""
    from superserve.sim.simulator import SimConfig, simulate

    arrivals = 1.0 + np.arange(6000) * 0.00025  # 4,000 req/s for 1.5 s
    base = simulate(arrivals, fast, make_test_policy(fast), SimConfig(slo_s=0.05,
                                                                      batch_wait=None))
    held = simulate(arrivals, fast, make_test_policy(fast), SimConfig(slo_s=0.05))
    assert base.slo_attainment == held.slo_attainment == 1.0
    assert held.batches < base.batches / 3
    assert held.mean_batch_size > 3.0


def test_simulator_hold_survives_a_worker_failure(fast):
    """The only worker fails while it holds a batch (it holds ~1.9 ms of every 2 here) and
    is back 10 ms later: batches are still dispatched in time order, every request ends
    served or dropped, and nearly all on time."""
    from superserve.sim.simulator import SimConfig, simulate

    arrivals = 1.0 + np.arange(6000) * 0.00025
    cfg = SimConfig(slo_s=0.05, failures=((1.3001, 0),), restart_s=0.01, record_batches=True)
    r = simulate(arrivals, fast, make_test_policy(fast), cfg)
    assert r.requests == 6000 and r.completed_in_slo + r.completed_late + r.dropped == 6000
    served = ~np.isnan(r.finish_s)
    assert np.all(r.finish_s[served] >= arrivals[served])
    assert [t for t, *_ in r.batch_log] == sorted(t for t, *_ in r.batch_log)
    assert r.slo_attainment > 0.95

"""Router behaviour on a virtual clock with the profile-driven fake pool: no processes, no
sockets, no sleeps."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from conftest import GreedyPolicy, RecordingPolicy, make_test_policy
from superserve.errors import (
    ConfigError,
    DeadlineExceededError,
    OverloadedError,
    ShuttingDownError,
    WorkerFailedError,
)
from superserve.runtime.clock import ManualClock
from superserve.runtime.fake import FakePool
from superserve.runtime.router import Router, RouterConfig
from superserve.scheduling.calibration import CalibrationConfig
from superserve.types import Outcome

IMG = np.zeros((1, 1, 28, 28), dtype=np.float32)


def make(table, n_workers=1, policy=None, **cfg):
    clock = ManualClock()
    pool = FakePool(table, clock, n_workers=n_workers, restart_s=0.010)
    router = Router(policy or GreedyPolicy(table), pool, clock, RouterConfig(**cfg))
    router.start()
    clock.run_until(0.0)  # workers announce ready
    return clock, pool, router


def run(coro_fn):
    return asyncio.run(coro_fn())


def assert_all_terminal(router, futures):
    assert all(f.done() for f in futures)
    assert router.open_requests == 0
    assert sum(router.stats.terminal.values()) == router.stats.submitted == len(futures)


def test_config_validation_names_field():
    with pytest.raises(ConfigError, match="max_queue"):
        RouterConfig(max_queue=0)
    with pytest.raises(ConfigError, match="overhead_s"):
        RouterConfig(overhead_s=-1.0)


def test_single_request_completes_with_subnet_parameters(table):
    async def body():
        clock, pool, router = make(table)
        fut = router.submit(IMG, slo_s=0.050)
        assert not fut.done()
        clock.advance(0.050)
        r = fut.result()
        assert r.outcome is Outcome.COMPLETED and r.error is None and r.deadline_met
        # plenty of slack: the most accurate subnet, which the fake encodes in the argmax
        assert r.subnet_id == 2 and r.subnet_accuracy == pytest.approx(0.99)
        assert int(np.argmax(r.logits[0])) == 2 and r.batch_size == 1
        assert r.service_s == pytest.approx(table.latency_s(2, 1))
        assert r.queue_s == pytest.approx(0.0)
    run(body)


def test_multi_image_request_is_answered_when_all_images_are_done(table):
    async def body():
        clock, pool, router = make(table, n_workers=2)
        imgs = np.zeros((5, 1, 28, 28), dtype=np.float32)
        fut = router.submit(imgs, slo_s=0.100)
        clock.advance(0.100)
        r = fut.result()
        assert r.outcome is Outcome.COMPLETED and r.logits.shape == (5, 10)
        assert sum(len(t.images) for _, t in pool.submitted) == 5
    run(body)


def test_the_view_says_how_many_queued_images_came_with_the_head(table):
    """A request's images arrive together: the router tells the policy how many of them head
    the queue (`QueueView.head_images`), so SlackFit's rate guard does not read one large
    request as a rate."""
    policy = RecordingPolicy(table)
    views = policy.views

    async def body():
        clock, _pool, router = make(table, policy=policy, batch_wait=None)
        router.submit(np.zeros((5, 1, 28, 28), dtype=np.float32), slo_s=0.100)
        router.submit(np.zeros((3, 1, 28, 28), dtype=np.float32), slo_s=0.100)
        clock.advance(0.100)
    run(body)
    first = views[0]
    assert (first.length, first.head_images) == (5, 5)  # the first went out at once
    assert all(1 <= v.head_images <= v.length for v in views)


def test_expired_request_answered_by_timer_while_worker_busy(table):
    async def body():
        clock, pool, router = make(table)
        long = router.submit(np.zeros((16, 1, 28, 28), np.float32), slo_s=1.0)
        assert pool.busy(0)  # the worker is busy for latency(2, 16) = 20 ms
        short = router.submit(IMG, slo_s=0.005)
        drop_at = 0.005 - router.drop_overhead_s - table.fastest_latency_s() * router.drop_scale
        clock.run_until(drop_at - 1e-6)
        assert not short.done()
        clock.run_until(drop_at + 1e-6)
        assert pool.busy(0)  # answered by the router's timer, not by a free worker
        r = short.result()
        assert r.outcome is Outcome.DROPPED_DEADLINE
        assert isinstance(r.error, DeadlineExceededError) and "deadline" in str(r.error)
        clock.advance(1.0)
        assert long.result().outcome is Outcome.COMPLETED
        assert_all_terminal(router, [long, short])
    run(body)


def test_slo_below_fastest_subnet_is_dropped_at_once(table):
    async def body():
        clock, pool, router = make(table)
        r = router.submit(IMG, slo_s=0.0005).result()
        assert r.outcome is Outcome.DROPPED_DEADLINE and "cannot be met" in str(r.error)
        assert pool.submitted == []  # no compute spent on it
    run(body)


def test_overload_is_rejected_with_retry_after(table):
    async def body():
        clock, pool, router = make(table, max_queue=4, retry_after_s=2.0)
        futs = [router.submit(IMG, slo_s=1.0) for _ in range(6)]  # 1 runs, 4 wait, 1 refused
        refused = [f.result() for f in futs if f.done()]
        assert len(refused) == 1 and refused[0].outcome is Outcome.REJECTED
        assert isinstance(refused[0].error, OverloadedError)
        assert refused[0].error.retry_after_s == 2.0 and "max_queue=4" in str(refused[0].error)
        clock.advance(1.0)
        assert_all_terminal(router, futs)
        assert router.stats.terminal[Outcome.COMPLETED] == 5
    run(body)


def test_killed_worker_batch_is_requeued_and_served_after_restart(table):
    async def body():
        clock, pool, router = make(table)
        futs = [router.submit(IMG, slo_s=0.200) for _ in range(3)]
        clock.advance(0.001)
        pool.kill(0)
        assert router.stats.requeued >= 1 and router.ready_workers == 0
        clock.advance(0.5)  # restart after 10 ms, then serve everything
        assert_all_terminal(router, futs)
        assert all(f.result().outcome is Outcome.COMPLETED for f in futs)
    run(body)


def test_killed_worker_past_deadline_fails_explicitly(table):
    async def body():
        # the table's exact timings, a 1 ms reserve
        clock, pool, router = make(table, calibrate=False, overhead_s=0.001)
        fut = router.submit(np.zeros((16, 1, 28, 28), np.float32), slo_s=0.0215)
        assert pool.busy(0)  # 16 images on the accurate subnet: until t = 20 ms
        clock.run_until(0.0195)  # too little slack left for even the fastest subnet
        pool.kill(0)
        r = fut.result()
        assert r.outcome is Outcome.FAILED and isinstance(r.error, WorkerFailedError)
        assert "died" in str(r.error)
        clock.advance(1.0)
        assert_all_terminal(router, [fut])
    run(body)


def test_failed_batch_fails_each_of_its_requests(table):
    async def body():
        clock, pool, router = make(table, max_batch_attempts=1)  # no retry (test_lifecycle)
        pool.fail_next = "boom"
        fut = router.submit(IMG, slo_s=0.100)
        clock.advance(0.1)
        r = fut.result()
        assert r.outcome is Outcome.FAILED and "boom" in str(r.error)
        ok = router.submit(IMG, slo_s=0.100)  # the worker is free again
        clock.advance(0.1)
        assert ok.result().outcome is Outcome.COMPLETED
    run(body)


def test_subnet_shrinks_and_batch_grows_under_load(table):
    """Low load: the most accurate subnet at batch 1. A burst: slack shrinks, the router's
    policy picks a smaller subnet with a bigger batch."""
    async def body():
        clock, pool, router = make(table, policy=make_test_policy(table))
        quiet = []
        for i in range(5):
            quiet.append(router.submit(IMG, slo_s=0.030))
            clock.advance(0.050)
        burst = [router.submit(IMG, slo_s=0.030) for _ in range(60)]
        clock.advance(1.0)
        q = [f.result() for f in quiet]
        b = [f.result() for f in burst if f.result().outcome is Outcome.COMPLETED]
        assert all(r.subnet_id == len(table) - 1 and r.batch_size == 1 for r in q)
        assert b and min(r.subnet_accuracy for r in b) < q[0].subnet_accuracy
        assert max(r.batch_size for r in b) > 1
        assert_all_terminal(router, quiet + burst)
    run(body)


def test_drain_refuses_new_requests_and_serves_queued(table):
    async def body():
        clock, pool, router = make(table)
        queued = [router.submit(IMG, slo_s=1.0) for _ in range(3)]
        router.begin_drain()
        late = router.submit(IMG, slo_s=1.0).result()
        assert late.outcome is Outcome.REJECTED and isinstance(late.error, ShuttingDownError)
        clock.advance(1.0)
        assert all(f.result().outcome is Outcome.COMPLETED for f in queued)
    run(body)


def test_drain_timeout_answers_leftovers(table):
    async def body():
        clock, pool, router = make(table)
        stuck = router.submit(IMG, slo_s=10.0)  # virtual time never advances: never served
        refused = await router.drain(timeout_s=0.01)
        assert refused == 1 and stuck.result().outcome is Outcome.REJECTED
    run(body)


def test_random_workload_every_request_terminal_once(table):
    async def body():
        rng = np.random.default_rng(0)
        clock, pool, router = make(table, n_workers=2, max_queue=32)
        futs = []
        for step in range(400):
            for _ in range(rng.poisson(1.5)):
                n = int(rng.integers(1, 4))
                futs.append(router.submit(np.zeros((n, 1, 28, 28), np.float32),
                                          slo_s=float(rng.uniform(0.001, 0.05))))
            if step % 97 == 50:
                pool.kill(int(rng.integers(0, 2)))
            clock.advance(0.002)
        clock.advance(5.0)
        assert_all_terminal(router, futs)
        assert router.queue_depth == 0
    run(body)


@pytest.mark.parametrize("spec", ["slackfit", "slackfit:buckets=4", "maxbatch", "maxacc",
                                  "clipper:1", "infaas"])
def test_every_shared_policy_drives_the_router(table, spec):
    async def body():
        rng = np.random.default_rng(1)
        clock, pool, router = make(table, n_workers=2, policy=make_test_policy(table, spec))
        futs = []
        for step in range(300):
            for _ in range(rng.poisson(2.0)):
                futs.append(router.submit(IMG, slo_s=0.030))
            clock.advance(0.001)
        clock.advance(5.0)
        assert_all_terminal(router, futs)
        assert router.stats.terminal[Outcome.COMPLETED] > 0
    run(body)


@pytest.mark.parametrize("calibrate", [False, True])
@pytest.mark.parametrize("spec", ["slackfit", "slackfit:early_drop=1"])
def test_router_on_virtual_clock_matches_the_simulator(table, spec, calibrate):
    """Same trace, table, policy and workers, no overhead: the live router (fake pool,
    virtual clock) and the discrete-event simulator reach the same SLO attainment and
    serving accuracy (early drop included: both apply base.drop_slack_s the same way; and
    with calibration: both feed the same LatencyModel with every batch as it ends)."""
    from superserve.sim.simulator import SimConfig, simulate
    from superserve.traces.generators import bursty

    arrivals = bursty(1500.0, 1500.0, 4.0, 3.0, np.random.default_rng(0))
    sim = simulate(arrivals, table, make_test_policy(table, spec),
                   SimConfig(slo_s=0.030, workers=1, calibrate=calibrate))

    async def body():
        clock, pool, router = make(table, policy=make_test_policy(table, spec), overhead_s=0.0,
                                   max_queue=100_000, calibrate=calibrate,
                                   admission_check=False)
        futs = []
        for t in arrivals:
            clock.run_until(float(t))
            futs.append(router.submit(IMG, slo_s=0.030))
        clock.advance(5.0)
        return [f.result() for f in futs]

    results = run(body)
    met = [r for r in results if r.deadline_met]
    attainment = len(met) / len(results)
    accuracy = float(np.mean([r.subnet_accuracy for r in met]))
    assert 0.2 < sim.slo_attainment < 1.0  # a regime where the policy matters
    assert attainment == pytest.approx(sim.slo_attainment, abs=0.02)
    assert accuracy == pytest.approx(sim.mean_serving_accuracy, abs=0.01)


def test_calibration_learns_that_batches_run_slower_than_profiled(table):
    """Workers 1.5x slower than the table: SlackFit fills the slack to the edge, so planning
    with the table finishes many requests late; the online model learns the real cost
    (a scale, not an additive guess) and keeps them in time."""
    from superserve.traces.generators import bursty

    arrivals = bursty(150.0, 150.0, 4.0, 4.0, np.random.default_rng(0))

    async def attainment(calibrate):
        clock = ManualClock()
        pool = FakePool(table, clock, n_workers=1, latency_scale=1.5)
        router = Router(make_test_policy(table), pool, clock,
                        RouterConfig(calibrate=calibrate, max_queue=100_000))
        router.start()
        futs = []
        for t in arrivals:
            clock.run_until(float(t))
            futs.append(router.submit(IMG, slo_s=0.030))
        clock.advance(5.0)
        assert_all_terminal(router, futs)
        late = sum(f.result().outcome is Outcome.COMPLETED and not f.result().deadline_met
                   for f in futs)
        return sum(f.result().deadline_met for f in futs) / len(futs), late, router

    fixed, late_fixed, _ = run(lambda: attainment(False))
    learned, late_learned, router = run(lambda: attainment(True))
    m = router.calibration
    assert m.mean_s(m.last_observed_s / 1.5) == pytest.approx(m.last_observed_s, rel=0.05)
    assert 1.3 <= router.latency_scale <= 1.5 * 1.2  # a fit plus a small tail margin
    assert late_learned < late_fixed / 10 and learned > fixed


def test_calibration_follows_a_step_change_up_and_down(table):
    """A co-tenant slows the worker 2x for a while and leaves: the planned scale follows
    both ways, and accuracy (not the SLO) gives way while it is there."""
    async def body():
        clock = ManualClock()
        pool = FakePool(table, clock, n_workers=1)
        router = Router(make_test_policy(table), pool, clock, RouterConfig(max_queue=100_000))
        router.start()
        scales, futs = [], []
        for factor in (1.0, 2.0, 1.0):
            pool.latency_scale = factor
            for _ in range(1000):  # 10 s at 100 req/s
                clock.advance(0.01)
                futs.append(router.submit(IMG, slo_s=0.006))
            m, last = router.calibration, router.calibration.last_observed_s
            scales.append((m.mean_s(m.last_observed_s / factor), last))
        clock.advance(1.0)
        assert_all_terminal(router, futs)
        return scales, [f.result() for f in futs]

    preds, results = run(body)
    for (predicted, real), factor in zip(preds, (1.0, 2.0, 1.0)):
        assert predicted == pytest.approx(real, rel=0.05)  # at the batches it now runs
    phase = [results[k * 1000 + 500:(k + 1) * 1000] for k in range(3)]  # after settling
    for p in phase:
        assert sum(r.deadline_met for r in p) / len(p) >= 0.99
    acc = [np.mean([r.subnet_accuracy for r in p]) for p in phase]
    assert acc[1] < acc[0] and acc[2] == pytest.approx(acc[0])


def test_calibration_survives_a_worker_loss(table):
    async def body():
        clock, pool, router = make(table, n_workers=2)
        futs = []
        for step in range(400):
            futs.append(router.submit(IMG, slo_s=0.030))
            clock.advance(0.002)
            if step in (100, 250):
                pool.kill(0)
        clock.advance(2.0)
        assert_all_terminal(router, futs)
        assert router.stats.terminal[Outcome.COMPLETED] >= 390
        m = router.calibration
        assert m.samples > 100
        assert m.mean_s(m.last_observed_s) == pytest.approx(m.last_observed_s, rel=0.05)
    run(body)


def test_deadline_counts_from_the_first_byte(table):
    """A request whose first byte came 40 ms ago with a 30 ms SLO is dropped at once; one
    that came 10 ms ago has 20 ms left."""
    async def body():
        clock, pool, router = make(table)
        clock.run_until(1.0)
        late = router.submit(IMG, slo_s=0.030, arrival_s=0.960).result()
        assert late.outcome is Outcome.DROPPED_DEADLINE and "40 ms have passed" in str(late.error)
        fut = router.submit(IMG, slo_s=0.030, arrival_s=0.990)
        assert fut.done() is False
        clock.advance(0.05)
        r = fut.result()
        assert r.arrival_s == 0.990 and r.deadline_s == pytest.approx(1.020)
        assert r.outcome is Outcome.COMPLETED and r.deadline_met
    run(body)


class _ProbedPool(FakePool):
    """A fake pool whose workers report a start-up probe `factor` x the table."""

    def __init__(self, table, clock, factor):
        super().__init__(table, clock, latency_scale=factor)
        self.factor = factor

    def info(self, wid):
        return {"probe": [(i, b, self.table.latency_s(i, b) * self.factor)
                          for i in range(len(self.table)) for b in (1, 8)]}


@pytest.mark.parametrize("factor,applied", [(2.0, True), (0.5, True), (1.1, False)])
def test_start_up_check_starts_from_the_measured_factor(table, caplog, factor, applied):
    async def body():
        clock = ManualClock()
        router = Router(make_test_policy(table), _ProbedPool(table, clock, factor), clock)
        router.start()
        with caplog.at_level("WARNING"):
            clock.run_until(0.0)
        return router

    router = run(body)
    assert router.probe_factor == pytest.approx(factor)
    assert router.calibration.scale == pytest.approx(factor if applied else 1.0, rel=0.1)
    assert ("start-up check" in caplog.text) is applied


def test_admission_refuses_what_the_queue_ahead_makes_hopeless(table):
    async def body():
        clock, pool, router = make(table, max_queue=10_000)
        futs = [router.submit(IMG, slo_s=1.0) for _ in range(2000)]
        futs.append(router.submit(IMG, slo_s=0.020))  # not even the fastest subnet clears it
        r = futs[-1].result()
        assert r.outcome is Outcome.REJECTED and isinstance(r.error, OverloadedError)
        assert "queued ahead" in str(r.error)
        clock.advance(30.0)
        assert_all_terminal(router, futs)
    run(body)


def test_admission_counts_the_policys_own_subnet(table):
    """Clipper+ on its slowest subnet at twice what that subnet serves, for 0.3 s: admission
    counts the queue ahead at that subnet's cost (not the table's fastest, which let the whole
    queue in, and ~80% of it then ended 504 in the queue). Much of the excess is refused at
    once (429) instead of waiting in the queue to be dropped (504)."""
    async def body():
        clock, _pool, router = make(table, policy=make_test_policy(table, "clipper:2"),
                                   max_queue=10_000)
        gap = table.latency_s(2, table.batch_sizes[-1]) / table.batch_sizes[-1] / 2.0
        futs = []
        for _ in range(round(0.3 / gap)):
            futs.append(router.submit(IMG, slo_s=0.050))
            clock.advance(gap)
        clock.advance(1.0)
        assert_all_terminal(router, futs)
        return [f.result() for f in futs]

    rs = run(body)
    by = {o: sum(r.outcome is o for r in rs) for o in Outcome}
    met = sum(r.outcome is Outcome.COMPLETED and r.deadline_met for r in rs)
    assert by[Outcome.REJECTED] > 0.3 * len(rs)  # the excess, refused at once
    assert all("queued ahead" in str(r.error) for r in rs if r.outcome is Outcome.REJECTED)
    assert by[Outcome.DROPPED_DEADLINE] < 0.5 * len(rs)  # was ~0.8
    assert met > 0


def test_early_drop_answers_heads_that_would_starve_the_queue(table):
    """A long queue whose head has slack for a tiny batch only: with early drop the head is
    answered DROPPED_DEADLINE as soon as a worker is free, with a message that says why, and
    the queue behind it is served; the paper's rule serves the head."""
    from superserve.scheduling.registry import make_policy

    def scenario(spec):
        async def body():
            clock = ManualClock()
            pool = FakePool(table, clock, n_workers=1)
            policy = make_policy(spec, table)
            router = Router(policy, pool, clock, RouterConfig(overhead_s=0.0, max_queue=10_000,
                                                              calibrate=False))
            router.start()  # the worker announces itself when the clock first runs
            n = 4 * table.max_batch
            need = SlackFitLike.need(table)
            head = router.submit(IMG, slo_s=(table.fastest_s + need) / 2)
            rest = [router.submit(IMG, slo_s=5.0) for _ in range(n)]
            clock.run_until(0.0)
            clock.advance(10.0)
            return policy, head.result(), [f.result() for f in rest]
        return run(body)

    policy, head, rest = scenario("slackfit:early_drop=1")
    assert policy.drop_slack_s(4 * table.max_batch, 0.0) == SlackFitLike.need(table)
    assert head.outcome is Outcome.DROPPED_DEADLINE
    assert isinstance(head.error, DeadlineExceededError) and "dropped early" in str(head.error)
    assert all(r.outcome is Outcome.COMPLETED for r in rest)
    policy, head, rest = scenario("slackfit:early_drop=0")  # the paper's rule serves it
    assert policy.drop_slack_s(4 * table.max_batch, 0.0) == table.fastest_s
    assert head.outcome is Outcome.COMPLETED


class SlackFitLike:
    @staticmethod
    def need(table):
        """What early drop asks of a head with a long queue behind it: the fastest subnet's
        latency at the largest profiled batch <= max batch / 4."""
        j = max(k for k, b in enumerate(table.batch_sizes) if b <= table.max_batch / 4)
        return min(row[j] for row in table.lat_s)


def test_response_writing_tail_is_learned_and_forgotten(table):
    """Slow response writing (a busy loop) is reserved per batch once 16 responses show it,
    and forgotten when it stops being seen (no lock-in when everything is then refused)."""
    async def body():
        clock, pool, router = make(table)
        base = router.overhead_s
        for k in range(40):
            fut = router.submit(IMG, slo_s=1.0)
            clock.advance(0.05)
            r = fut.result()
            router.response_written(r, r.end_s + 0.030)  # 30 ms to write it
            if k == 10:
                assert router.overhead_s == pytest.approx(base, abs=0.002)  # too few yet
        assert router.response_tail_s == pytest.approx(0.030, abs=0.002)
        assert router.overhead_s > base + 0.025
        clock.advance(5.0)
        router.submit(IMG, slo_s=0.005)  # a submit notices the silence
        assert router.response_tail_s == 0.0
        clock.advance(1.0)
    run(body)


def test_the_drop_rule_judges_by_the_typical_cost_not_the_plans_reserve(table):
    """A 15 ms response-writing tail goes into every batch's plan, not into the drop rule: a
    request left less slack than the plan but more than the fastest subnet typically takes is
    served (on time), and one left less than that is answered at once."""
    async def body():
        clock, _pool, router = make(table)
        for _ in range(40):
            fut = router.submit(IMG, slo_s=1.0)
            clock.advance(0.05)
            r = fut.result()
            router.response_written(r, r.end_s + 0.015)
        assert router.response_tail_s == pytest.approx(0.015, abs=0.002)
        typical = router.min_latency_s * router.drop_scale + router.drop_overhead_s
        planned = router.min_latency_s * router.latency_scale + router.overhead_s
        assert planned > typical + 0.012
        slo = (typical + planned) / 2
        served = router.submit(IMG, slo_s=slo)
        hopeless = router.submit(IMG, slo_s=0.8 * typical)
        assert hopeless.done() and hopeless.result().outcome is Outcome.DROPPED_DEADLINE
        assert "cannot be met" in str(hopeless.result().error)
        clock.advance(0.05)
        r = served.result()
        assert r.outcome is Outcome.COMPLETED and r.deadline_met
        assert r.subnet_id == 0  # the slack is below every plan: the fastest subnet, alone
    run(body)


def test_a_burst_after_small_batches_is_planned_with_the_tail_of_its_size(table):
    """The response tail is kept per position in the batch: after batches of one only (a
    paced warm-up), a burst's large batch is planned with the first position's tail plus the
    prior per response written before its last one; batches of several responses then
    measure that cost, and the plan follows it."""
    prior = CalibrationConfig().response_per_image_prior_s

    async def body():
        clock, _, router = make(table)
        assert router.batch_overhead_s(32) == router.overhead_s  # nothing written yet
        for _ in range(40):  # batches of one, each written 0.5 ms after it resolved
            fut = router.submit(IMG, slo_s=1.0)
            clock.advance(0.02)
            r = fut.result()
            assert (r.batch_size, r.batch_position) == (1, 1)
            router.response_written(r, r.end_s + 0.0005)
        assert router.response_tail_s == pytest.approx(0.0005)
        assert router.response_per_image_s == prior

        def burst(per: float) -> list:
            """One `_burst`; returns its batches' planned reserve beyond one response."""
            extra = []

            def watch() -> None:
                fl = next(iter(router._inflight.values()), None)
                if fl is not None and len(fl.jobs) > 1:
                    extra.append(fl.planned_s - router.table.latency_s(fl.subnet, len(fl.jobs))
                                 * router.latency_scale - router.overhead_s)

            _burst(clock, router, per, watch=watch, steps=40)
            return extra

        extra = burst(0.0003)
        # the queue behind the first request (31) fills the largest batch: planned with the
        # prior per response written before its last
        ahead = min(31, table.max_batch) - 1
        assert ahead >= 7
        assert extra and extra[0] == pytest.approx(ahead * prior, rel=0.01)
        for _ in range(20):  # batches of several responses: the cost per response measured
            burst(0.0003)
        assert router.response_per_image_s == pytest.approx(0.0003, rel=1e-6)
        assert router.response_tail_s == pytest.approx(0.0005, abs=1e-4)
        extra = burst(0.0003)
        assert extra and extra[0] == pytest.approx(ahead * 0.0003, rel=0.05)
    run(body)


def _burst(clock, router, per, base=0.0005, watch=None, steps=200):
    """32 requests at once, run in 5 ms steps (`watch()` before each); each batch's k-th
    response is then written base + per (k-1) after it resolved."""
    futs = [router.submit(IMG, slo_s=1.0) for _ in range(32)]
    for _ in range(steps):
        if watch is not None:
            watch()
        clock.advance(0.005)
        if all(f.done() for f in futs):
            break
    for r in sorted((f.result() for f in futs), key=lambda r: (r.batch_id, r.batch_position)):
        router.response_written(r, r.end_s + base + per * (r.batch_position - 1))


def _learn_response_tail(clock, router, per, base=0.0005, rounds=20):
    """Bursts (`_burst`) until the router has measured that cost per response."""
    for _ in range(rounds):
        _burst(clock, router, per, base)


@pytest.mark.parametrize("spec", ["slackfit", "clipper:0"])
def test_a_batch_smaller_than_the_queue_is_planned_with_its_own_response_tail(table, spec):
    """The first plan reserves the tail of the largest batch the queue can fill; when only a
    smaller batch fits that, the batch is planned again with its own (shorter) tail. Live,
    JSON 2,000 req/s, the tail of 32 responses alone held SlackFit at batches of one."""
    async def body():
        clock, _, router = make(table, policy=make_test_policy(table, spec))
        _learn_response_tail(clock, router, per=0.001)
        assert router.response_per_image_s == pytest.approx(0.001, rel=1e-6)
        full = router.batch_overhead_s(table.max_batch)
        assert full > router.batch_overhead_s(1) + 0.010
        busy = router.submit(IMG, slo_s=1.0)  # the worker is busy with it ...
        while not router._inflight:  # (a high arrival rate may hold it a moment first)
            clock.advance(0.0001)
        # ... while 40 requests queue whose slack fits no batch on the tail of 32
        futs = [router.submit(IMG, slo_s=full) for _ in range(40)]
        while not busy.done():
            clock.advance(0.0002)
        fl = next(iter(router._inflight.values()))
        n = len(fl.jobs)
        assert n > 1  # not a batch of one
        # planned with its own tail, and on that plan it meets its head's deadline
        own = (router.table.latency_s(fl.subnet, n) * router.latency_scale
               + router.batch_overhead_s(n))
        assert fl.planned_s == pytest.approx(own)
        assert fl.dispatched_s + fl.planned_s <= fl.jobs[0].request.result.deadline_s
        for _ in range(400):
            clock.advance(0.005)
            if all(f.done() for f in futs):
                break
        assert all(f.done() for f in futs) and router.open_requests == 0
    run(body)


def test_early_drop_judges_a_head_with_the_tail_of_the_batch_it_keeps_it_for(table):
    """Early drop keeps a head only if it fits a batch of a quarter of the queue on the
    fastest subnet; with a response tail of 1 ms a response, that batch's own tail counts:
    a head whose slack fits it on the tail of one response, but not of that many, is
    dropped early (kept, it would get a batch of one or two: the spiral it exists to stop)."""
    async def body():
        policy = make_test_policy(table, "slackfit:early_drop=1")
        clock, _, router = make(table, policy=policy)
        _learn_response_tail(clock, router, per=0.001)
        busy = router.submit(IMG, slo_s=1.0)
        while not router._inflight:
            clock.advance(0.0001)
        fl = next(iter(router._inflight.values()))
        free_at = fl.dispatched_s + table.latency_s(fl.subnet, len(fl.jobs))
        keep = policy.early_drop_batch(40)
        assert keep > 1
        need = policy.drop_slack_s(40, 0.0) * router.latency_scale
        lo = router.batch_overhead_s(1) + need  # enough on the tail of one response
        hi = router.batch_overhead_s(keep) + need  # enough on its own
        assert hi - lo > 0.002
        now = clock.now()
        head = router.submit(IMG, slo_s=free_at + (lo + hi) / 2 - now)
        rest = [router.submit(IMG, slo_s=1.0) for _ in range(39)]
        while not busy.done():
            clock.advance(0.0001)
        r = head.result()
        assert r.outcome is Outcome.DROPPED_DEADLINE and "dropped early" in str(r.error)
        for _ in range(400):
            clock.advance(0.005)
            if all(f.done() for f in rest):
                break
        assert all(f.result().outcome is Outcome.COMPLETED for f in rest)
        assert router.open_requests == 0
    run(body)


def test_on_done_answers_a_batch_as_it_ends_and_a_refusal_after_submit(table):
    """`on_done` runs at the end of the batch_done that completed the request (after the
    worker's next batch went out; not behind other callbacks waiting on the loop), and for
    a request refused at once, on a later loop turn (never inside the caller's `submit`)."""
    async def body():
        clock, _, router = make(table)
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, int, bool]] = []

        def hook(tag):
            def on_done(fut):
                # the worker already has its next batch when the first answer goes out
                seen.append((tag, len(router._inflight), fut.done()))
            return on_done

        a = router.submit(IMG, slo_s=1.0, on_done=hook("a"))  # dispatched at once
        b = router.submit(IMG, slo_s=1.0, on_done=hook("b"))  # queued behind it
        bad = router.submit(IMG, slo_s=0.0, on_done=hook("refused"))
        assert seen == []  # a refusal is not answered inside submit
        await asyncio.sleep(0)
        assert seen == [("refused", 1, True)]
        order = []
        loop.call_soon(lambda: order.append("other callback"))
        clock.advance(table.lat_s[-1][0] * 1.01 + 0.001)  # a's batch ends (GreedyPolicy: b=1)
        order.append("after")
        assert seen[1] == ("a", 1, True) and order == ["after"]  # b's batch already out
        clock.advance(1.0)
        assert [t for t, _, _ in seen] == ["refused", "a", "b"]
        assert a.result().outcome is Outcome.COMPLETED and b.result().outcome is Outcome.COMPLETED
        assert bad.result().outcome is not Outcome.COMPLETED
        await asyncio.sleep(0)
        assert order == ["after", "other callback"]
    run(body)


def test_an_answer_that_never_went_out_counts_as_a_miss(table):
    """The front end could not deliver a completed answer (written at inf): the server's
    SLO metric counts it as a miss, and it teaches the response-writing reserve nothing."""
    from superserve.server.metrics import ServerMetrics

    async def body():
        clock, pool, router = make(table)
        metrics = ServerMetrics(lambda: 0, lambda: 1, router)
        router.listener = metrics
        futs = [router.submit(IMG, slo_s=1.0) for _ in range(2)]
        clock.advance(0.1)
        ok, lost = (f.result() for f in futs)
        router.response_written(ok, ok.end_s + 0.001)
        router.response_written(lost, float("inf"))
        assert ok.met_on_client_clock and not lost.met_on_client_clock
        assert (metrics._met, metrics._total) == (1, 2)
        assert b"superserve_request_edge_latency_seconds_count 1.0" in metrics.render()
    run(body)


def test_batch_log_writes_one_csv_line_per_finished_batch(table, tmp_path):
    """--batch-log: a header, then per batch its worker, subnet, size and times (ms)."""
    import csv

    from superserve.runtime.router import BATCH_LOG_FIELDS

    path = tmp_path / "batches.csv"

    async def body():
        clock, _pool, router = make(table, policy=make_test_policy(table), batch_log=str(path))
        futs = [router.submit(IMG, slo_s=0.050) for _ in range(5)]
        clock.advance(0.2)
        router.close()
        return router, [f.result() for f in futs]

    router, results = run(body)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == BATCH_LOG_FIELDS
    assert len(rows) == router.stats.batches >= 1
    assert sum(int(r["batch"]) for r in rows) == 5
    # the SlackFit rule that planned each batch, counted in the stats too
    from collections import Counter

    from superserve.scheduling.policies import SLACKFIT_RULES

    assert dict(Counter(r["rule"] for r in rows)) == router.stats.plans
    assert set(router.stats.plans) <= set(SLACKFIT_RULES)
    for r in rows:
        assert float(r["observed_ms"]) > 0 and float(r["profiled_ms"]) > 0
        assert float(r["planned_ms"]) >= float(r["profiled_ms"]) * 0.5
        assert int(r["late"]) == 0
        assert float(r["plan_scale"]) > 0 and float(r["reserve_ms"]) >= 0
        assert float(r["response_tail_ms"]) >= 0
    assert all(res.deadline_met for res in results)


def test_a_one_rule_policy_counts_its_batches_under_its_name(table):
    """`stats.plans` (superserve_plans_total{rule}): a policy whose plans name no rule counts
    every batch under its own name."""
    async def body():
        clock, _pool, router = make(table)
        futs = [router.submit(IMG, slo_s=0.050) for _ in range(5)]
        clock.advance(0.2)
        router.close()
        return router, [f.result() for f in futs]

    router, _results = run(body)
    assert router.stats.batches >= 1
    assert router.stats.plans == {router.policy.name: router.stats.batches}

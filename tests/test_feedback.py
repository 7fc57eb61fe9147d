"""The miss feedback on SlackFit's rate guard (scheduling/feedback.py), on a fake clock, and
in the router: what raises it, what relaxes it, and where it is bounded."""

from __future__ import annotations

import pytest

from superserve.errors import ConfigError
from superserve.scheduling.feedback import FeedbackConfig, MissFeedback


def feed(fb, t0, seconds, rate, miss_every=0):
    """`rate` requests a second for `seconds` from t0; every `miss_every`-th one misses."""
    n = int(seconds * rate)
    for k in range(n):
        fb.observe(t0 + k / rate, bool(miss_every) and k % miss_every == 0)
    return t0 + seconds


def test_no_misses_no_boost():
    fb = MissFeedback()
    feed(fb, 0.0, 5.0, 1000)
    assert fb.boost == 1.0
    assert fb.miss_fraction(5.0) == 0.0


def test_misses_raise_the_boost_within_seconds_and_it_relaxes_after():
    fb = MissFeedback()
    t = feed(fb, 0.0, 2.0, 1000, miss_every=20)  # 5% missing
    assert fb.boost >= 1.25 ** 3  # at least three raises in two seconds
    assert fb.miss_fraction(t) == pytest.approx(0.05, abs=0.01)
    t = feed(fb, t, 30.0, 1000, miss_every=20)
    assert fb.boost == FeedbackConfig().max_boost  # bounded
    feed(fb, t, 20.0, 1000)  # the co-tenant left: nothing misses
    assert fb.boost == 1.0


def test_a_miss_fraction_between_the_bounds_holds_the_boost():
    fb = MissFeedback(FeedbackConfig(high=0.05, low=0.001))
    t = feed(fb, 0.0, 2.0, 1000, miss_every=5)  # 20%: up
    assert fb.boost > 1.0
    t = feed(fb, t + 0.001, 5.0, 1000, miss_every=50)  # 2%, once the 20% has faded ...
    held = fb.boost
    feed(fb, t + 0.001, 5.0, 1000, miss_every=50)  # ... is between low and high: it holds
    assert fb.boost == held > 1.0


def test_too_few_requests_relax_instead_of_raising():
    fb = MissFeedback()
    for k in range(10):  # one request a second, every one missing: no evidence of a trend
        fb.observe(float(k), True)
    assert fb.boost == 1.0


def test_reclassify_turns_an_on_time_request_into_a_miss():
    fb = MissFeedback()
    for k in range(100):
        fb.observe(k * 1e-3, False)
    fb.reclassify(0.1)
    assert fb.miss_fraction(0.1) == pytest.approx(1 / 100, rel=0.1)


def test_bulk_add_equals_single_observations():
    a, b = MissFeedback(), MissFeedback()
    a.add(0.5, 40, 4)
    for k in range(40):
        b.observe(0.5, k < 4)
    assert a.miss_fraction(0.6) == pytest.approx(b.miss_fraction(0.6)) == pytest.approx(0.1)


@pytest.mark.parametrize("kw", [{"tau_s": 0}, {"low": 0.1, "high": 0.01}, {"up": 1.0},
                                {"max_boost": 0.5}, {"min_requests": -1}, {"hold_s": -1}])
def test_config_validation(kw):
    with pytest.raises(ConfigError):
        FeedbackConfig(**kw)


def test_router_counts_drops_as_misses_and_raises_the_boost(table):
    """A router whose worker is far slower than the table: requests are dropped or late,
    the feedback sees it, and the boost it hands the policy rises; with feedback off the
    router hands none."""
    import asyncio

    import numpy as np

    from superserve.runtime.clock import ManualClock
    from superserve.runtime.fake import FakePool
    from superserve.runtime.router import Router, RouterConfig
    from superserve.scheduling.registry import make_policy

    img = np.zeros((1, 1, 28, 28), dtype=np.float32)

    async def body(feedback, rate=1500.0, scale=4.0, age=0.0):
        clock = ManualClock()
        pool = FakePool(table, clock, n_workers=1, latency_scale=scale)
        router = Router(make_policy("slackfit", table), pool, clock,
                        RouterConfig(calibrate=False, max_queue=100_000, feedback=feedback))
        router.start()
        clock.run_until(0.0)
        futs = []
        for t in np.arange(0.0, 2.0, 1 / rate):
            clock.run_until(float(t))
            futs.append(router.submit(img, slo_s=0.030, arrival_s=float(t) - age))
        clock.advance(1.0)
        missed = sum(not f.result().deadline_met for f in futs)
        return router, missed

    router, missed = asyncio.run(body(FeedbackConfig()))
    assert missed > 0.05 * 3000
    assert router.feedback.boost > 1.0
    router, _ = asyncio.run(body(None))
    assert router.feedback is None
    # a slower worker still at 20 req/s: requests miss, but every subnet keeps up with the
    # rate even at a raised headroom, so a raise would change no plan and none is taken
    router, missed = asyncio.run(body(FeedbackConfig(), rate=20.0, scale=30.0))
    assert missed > 0.05 * 40
    assert router.feedback.boost == 1.0 and router.feedback.can_raise is False
    # the same slow worker, but every request reached the router with under half its SLO
    # left (a front end behind on its core): they miss, yet no plan could have answered
    # them, and a faster subnet does nothing for that core, so the boost stays
    router, missed = asyncio.run(body(FeedbackConfig(), age=0.016))
    assert missed > 0.05 * 3000
    assert router.feedback.boost == 1.0 and router.feedback.miss_fraction(3.0) == 0.0
    # ... and one that reached it with just over half its SLO left is evidence again
    router, missed = asyncio.run(body(FeedbackConfig(), age=0.014))
    assert missed > 0.05 * 3000 and router.feedback.boost > 1.0


def test_a_raise_is_taken_only_where_it_can_change_a_plan():
    fb = MissFeedback()
    fb.set_can_raise(0.0, False)
    for k in range(200):
        fb.observe(k * 0.01, missed=True, arrived_s=k * 0.01 - 0.05)
    assert fb.boost == 1.0  # misses, but the caller says a raise changes nothing
    fb.set_can_raise(2.0, True)
    for k in range(100):  # those that arrived before it would are no evidence ...
        fb.observe(2.0 + k * 0.01, missed=True, arrived_s=1.99)
    assert fb.boost == 1.0 and fb.fresh_from(0.05) == 2.0
    for k in range(100):  # ... those after are
        fb.observe(3.0 + k * 0.01, missed=True, arrived_s=3.0)
    assert fb.boost == 1.25


def test_relaxing_waits_out_the_hold_after_the_last_raise():
    """The stabilization window: misses stop, the fraction fades below `high` within ~2.5 s
    (no more raises) and below `low` soon after, but the boost holds until `hold_s` after
    the last raise; then it relaxes. Without a hold it relaxes as soon as the fraction does."""
    fb = MissFeedback(FeedbackConfig(hold_s=5.0))
    t = feed(fb, 0.0, 2.0, 1000, miss_every=10)
    t = feed(fb, t, 3.0, 1000)  # the fraction fades below `high`: the last raise is behind
    held = fb.boost
    assert held > 1.0
    t = feed(fb, t, 1.5, 1000)  # below `low` now, but within 5 s of the last raise
    assert fb.boost == held
    feed(fb, t, 10.0, 1000)
    assert fb.boost < held
    quick = MissFeedback(FeedbackConfig(hold_s=0.0))
    t = feed(quick, 0.0, 2.0, 1000, miss_every=10)
    t = feed(quick, t, 3.0, 1000)
    top = quick.boost
    feed(quick, t, 1.5, 1000)
    assert quick.boost < top


def test_a_raise_waits_for_evidence_that_arrived_after_it():
    """Requests that arrived before the last raise (plus one SLO) still miss once it is
    made: a backlog from a transient. They count in the miss fraction, but raise no more;
    a fresh request that misses does, and a co-tenant that stays keeps raising it."""
    slo = 0.05
    fb = MissFeedback()
    t = 0.0
    for _ in range(2500):  # a transient: requests that arrived before 0.5 s miss
        arrived = t - 0.04
        fb.observe(t, arrived < 0.5, arrived, slo)
        t += 1e-3
    assert fb.raised_s == pytest.approx(0.5)  # the first period with evidence
    assert fb.boost == 1.25  # the backlog kept the fraction high for 2 s, but raised no more
    assert fb.miss_fraction(1.0) > 0.01
    every = MissFeedback(FeedbackConfig(fresh_only=False, high=0.01))  # the rule before
    for k in range(2500):
        t = k * 1e-3
        every.observe(t, t - 0.04 < 0.5, t - 0.04, slo)
    assert every.boost >= 1.25 ** 3  # the backlog's misses raised it again and again
    assert every.is_fresh(-1e9, slo)  # the old rule: every request is evidence
    r = fb.raised_s
    assert not fb.is_fresh(r + 0.04, slo) and fb.is_fresh(r + 0.05, slo) and fb.is_fresh(None)
    for _ in range(3):  # fresh ones miss: each period raises again
        for _ in range(500):
            fb.observe(t, True, t - 0.04, slo)
            t += 1e-3
    assert fb.boost >= 1.25 ** 3


def test_stale_reclassified_misses_do_not_raise():
    fb = MissFeedback()
    for k in range(501):  # half miss: raised at 0.5 s
        fb.observe(k * 1e-3, k % 2 == 0, None)
    assert fb.boost == 1.25
    raised = fb.raised_s
    for k in range(1000):  # on time here, late at the client; all arrived before the raise
        t = 0.6 + k * 1e-3
        fb.observe(t, False, raised - 0.01, 0.05)
        fb.reclassify(t, raised - 0.01, 0.05)
    assert fb.boost == 1.25
    assert fb.miss_fraction(1.6) > 0.5


class _TwoArgGuard:
    """A custom policy written against `rate_guard_binds(view, factor)`, the form before the
    time argument: SlackFit's plans, its own binds (always true, so a raise is allowed)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.table, self.min_latency_s = "two-arg", inner.table, inner.min_latency_s
        self.calls = 0

    def decide(self, view, now_s):
        return self.inner.decide(view, now_s)

    def rate_guard_binds(self, view, factor=1.0):
        self.calls += 1
        return True


def test_a_policy_with_the_two_argument_rate_guard_binds_still_serves(table):
    """The router and the simulator call it without the time instead of failing every plan
    (scheduling.base.rate_guard_binds_of); a current policy gets the time."""
    import asyncio

    import numpy as np

    from superserve.runtime.clock import ManualClock
    from superserve.runtime.fake import FakePool
    from superserve.runtime.router import Router, RouterConfig
    from superserve.scheduling.base import rate_guard_binds_of
    from superserve.scheduling.registry import make_policy
    from superserve.sim.simulator import SimConfig, simulate

    slackfit = make_policy("slackfit", table, slo_s=0.05)
    assert rate_guard_binds_of(slackfit) == slackfit.rate_guard_binds  # bound, as is
    assert rate_guard_binds_of(make_policy("clipper:0", table)) is None

    policy = _TwoArgGuard(slackfit)
    res = simulate(np.arange(0.0, 1.0, 1 / 500), table, policy,
                   SimConfig(slo_s=0.05, latency_factor=3.0, calibrate=False))
    assert res.completed_in_slo + res.completed_late > 0 and policy.calls > 0

    img = np.zeros((1, 1, 28, 28), dtype=np.float32)

    async def body():
        clock = ManualClock()
        pool = FakePool(table, clock, n_workers=1, latency_scale=3.0)
        policy.calls = 0
        router = Router(policy, pool, clock, RouterConfig(calibrate=False, max_queue=10_000,
                                                          feedback=FeedbackConfig()))
        router.start()
        clock.run_until(0.0)
        futs = []
        for t in np.arange(0.0, 0.5, 1 / 500):
            clock.run_until(float(t))
            futs.append(router.submit(img, slo_s=0.05, arrival_s=float(t)))
        clock.advance(1.0)
        return [f.result() for f in futs]

    results = asyncio.run(body())
    assert len(results) == 250 and policy.calls > 0

"""The online latency model (scheduling/calibration.py), driven on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from superserve.errors import ConfigError
from superserve.scheduling.calibration import (
    CalibrationConfig,
    LatencyModel,
    RecentQuantile,
    ResponseTail,
)

P_LO, P_HI = 0.0004, 0.030


def _feed(model: LatencyModel, t0: float, seconds: float, scale: float, overhead: float,
          rng: np.random.Generator, rate: float = 200.0, jitter: float = 0.03) -> float:
    """Batches every 1/rate s with profiled latencies over the table's range; returns the end."""
    t = t0
    for _ in range(int(seconds * rate)):
        p = float(rng.uniform(P_LO, P_HI))
        y = (scale * p + overhead) * (1.0 + jitter * abs(rng.standard_normal()))
        t += 1.0 / rate
        model.observe(t, p, y)
    return t


def test_starts_at_the_prior_before_any_batch():
    m = LatencyModel(P_LO, P_HI)
    assert m.scale == 1.0 and m.overhead_s == 0.0
    assert m.plan_overhead_s == pytest.approx(0.0005)  # the initial transport reserve
    assert m.plan_scale == pytest.approx(m.config.initial_tail)


def test_converges_within_a_few_seconds_on_a_fake_clock():
    m = LatencyModel(P_LO, P_HI)
    rng = np.random.default_rng(0)
    _feed(m, 0.0, 5.0, scale=1.3, overhead=0.002, rng=rng)
    assert m.scale == pytest.approx(1.3 * 1.024, rel=0.05)  # mean of 1 + 0.03|N|
    assert m.overhead_s == pytest.approx(0.002, abs=0.0007)
    # the plan is a high quantile: above the mean, below the worst case plus a little
    p = 0.02
    assert m.mean_s(p) < m.predict_s(p) < (1.3 * p + 0.002) * 1.15


def test_tracks_a_step_up_and_back_down():
    m = LatencyModel(P_LO, P_HI)
    rng = np.random.default_rng(1)
    t = _feed(m, 0.0, 4.0, scale=1.0, overhead=0.001, rng=rng)
    base = m.plan_scale
    t = _feed(m, t, 5.0, scale=2.0, overhead=0.001, rng=rng)  # a co-tenant starts
    assert m.scale == pytest.approx(2.0 * 1.024, rel=0.08)
    assert m.plan_scale > 1.8 * base
    t = _feed(m, t, 8.0, scale=1.0, overhead=0.001, rng=rng)  # ... and stops
    assert m.scale == pytest.approx(1.024, rel=0.08)
    assert m.plan_scale < 1.25 * base  # the tail forgot the transition


def test_a_step_is_detected_and_followed_within_a_few_batches():
    """Seven of eight batches beyond x1.3 of the fit on one side (none on the other) cut the
    old evidence (and again while the fit is still that far off): the fit follows a step
    within ~40 batches, up and down, where the half-life alone takes seconds; 10% noise
    never trips it."""
    def after_step(keep: float, factor: float) -> tuple[float, int, int]:
        m = LatencyModel(P_LO, P_HI, CalibrationConfig(step_keep=keep))
        rng = np.random.default_rng(3)
        t = _feed(m, 0.0, 3.0, scale=1.0, overhead=0.001, rng=rng, jitter=0.1)
        quiet = m.steps_detected
        _feed(m, t, 0.2, scale=factor, overhead=0.001, rng=rng, rate=200, jitter=0.0)
        return m.scale, quiet, m.steps_detected

    up, quiet, steps = after_step(0.1, 2.0)  # 40 batches after a step to x2
    assert quiet == 0 and steps >= 1
    assert up == pytest.approx(2.0, rel=0.1)
    slow, _, none = after_step(0.0, 2.0)  # off: still far from it
    assert none == 0 and slow < 1.3
    down, _, steps = after_step(0.1, 0.5)
    assert steps >= 1 and down < 0.7
    assert after_step(0.0, 0.5)[0] > 0.9


def test_a_strong_step_is_taken_after_two_batches():
    """Two batches in a row beyond x2 of the fit (a co-tenant that takes most of the core)
    cut the old evidence at once, without waiting for seven of eight; one alone does not,
    and neither does 10% noise."""
    def steps_after(factors: list[float], **kw) -> tuple[int, int, float]:
        m = LatencyModel(P_LO, P_HI, CalibrationConfig(**kw))
        rng = np.random.default_rng(5)
        t = _feed(m, 0.0, 3.0, scale=1.0, overhead=0.001, rng=rng, jitter=0.1)
        quiet = m.steps_detected
        for f in factors:
            t += 0.005
            m.observe(t, 0.02, f * (0.02 + 0.001))
        return quiet, m.steps_detected, m.scale

    quiet, steps, _ = steps_after([4.0, 4.0])
    assert quiet == 0 and steps == 1
    assert steps_after([4.0, 1.0])[1] == 0  # one alone is an outlier
    assert steps_after([4.0, 4.0], strong_need=0)[1] == 0  # off: waits for 7 of 8
    # four batches into a x4 step (each counted at most x3 of the fit): the fit is near
    # x2 (cut twice), where without the fast path it has barely moved
    assert steps_after([4.0] * 4)[2] > 1.8 and steps_after([4.0] * 4, strong_need=0)[2] < 1.3
    assert steps_after([0.3, 0.3])[1] == 1  # and down


def test_learns_a_faster_machine_than_the_table():
    m = LatencyModel(P_LO, P_HI)
    _feed(m, 0.0, 4.0, scale=0.4, overhead=0.0002, rng=np.random.default_rng(2))
    assert m.scale == pytest.approx(0.4 * 1.024, rel=0.08)
    assert m.plan_scale < 0.6


def test_one_profiled_latency_only_stays_sane():
    """Every batch the same size on the same subnet: scale and overhead are not separable;
    the prior keeps the fit defined and the prediction right at that point."""
    m = LatencyModel(P_LO, P_HI)
    for k in range(500):
        m.observe(k * 0.01, 0.010, 0.015)
    assert m.mean_s(0.010) == pytest.approx(0.015, rel=0.03)
    assert 0.05 <= m.scale <= 2.0 and 0.0 <= m.overhead_s <= 0.01


def test_bad_observations_are_ignored_and_one_stall_is_clipped():
    m = LatencyModel(P_LO, P_HI)
    m.observe(0.0, 0.01, float("nan"))
    m.observe(0.0, 0.0, 0.01)
    m.observe(0.0, 0.01, -1.0)
    assert m.samples == 0
    for k in range(200):
        m.observe(k * 0.01, 0.01, 0.01)
    m.observe(2.0, 0.01, 0.8)  # the loop stalled: 80x, once
    assert m.mean_s(0.01) < 0.0125  # moved, but by a clipped sample


def test_a_probe_seeds_the_model_and_fades_without_batches():
    """A start-up probe taken in a bad moment (x9) must not stick: with no batch flowing
    (everything refused as hopeless) the model relaxes to its prior within seconds."""
    m = LatencyModel(P_LO, P_HI)
    m.seed(0.0, 9.0)
    assert m.scale == pytest.approx(9.0, rel=0.1)
    for t in np.arange(0.0, 15.0, 0.01):
        m.tick(float(t))
    assert m.scale == pytest.approx(1.0, rel=0.1)


def test_a_probe_gives_way_to_batches():
    m = LatencyModel(P_LO, P_HI)
    m.seed(0.0, 3.0)
    _feed(m, 0.0, 2.0, scale=1.2, overhead=0.0005, rng=np.random.default_rng(3), jitter=0.0)
    assert m.mean_s(0.02) == pytest.approx(1.2 * 0.02 + 0.0005, rel=0.05)


def test_ratio_tail_forgets_old_samples():
    tail = RecentQuantile(0.99, 100, max_age_s=1.0, every=1)
    for k in range(50):
        tail.add(k * 0.01, 3.0)
    for k in range(50):
        tail.add(2.0 + k * 0.01, 1.0)
    assert tail.value(0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kw", [{"half_life_s": 0}, {"quantile": 1.0}, {"window": 2},
                                {"initial_tail": 0.9}, {"prior_scale": 100.0},
                                {"prior_weight": 0}, {"step_need": 9}, {"step_need": 0},
                                {"step_ratio": 1.0}, {"step_keep": 1.0},
                                {"strong_need": -1}, {"strong_ratio": 1.0}])
def test_config_is_validated(kw):
    with pytest.raises(ConfigError):
        CalibrationConfig(**kw)


def test_linear_tail_grows_with_the_batch_when_the_noise_does():
    """With `linear_tail`, a tail that grows with the batch (noise proportional to the
    batch) gives a reserve line with a slope, planning small batches tighter and large ones
    safer than one constant; an additive tail gives a flat line."""
    rng = np.random.default_rng(3)
    prop = LatencyModel(P_LO, P_HI, CalibrationConfig(linear_tail=True))
    _feed(prop, 0.0, 5.0, scale=1.0, overhead=0.0, rng=rng, jitter=0.3)
    assert prop.reserve_slope > 0.2
    const = LatencyModel(P_LO, P_HI)  # the default: one constant reserve
    _feed(const, 0.0, 5.0, scale=1.0, overhead=0.0, rng=np.random.default_rng(3), jitter=0.3)
    assert prop.predict_s(P_LO) < const.predict_s(P_LO)
    assert prop.predict_s(P_HI) >= 0.9 * const.predict_s(P_HI)
    flat = LatencyModel(P_LO, P_HI, CalibrationConfig(linear_tail=True))
    t = 0.0
    for _ in range(1000):  # additive noise: 0-3 ms whatever the batch
        p = float(rng.uniform(P_LO, P_HI))
        t += 0.005
        flat.observe(t, p, p + float(rng.uniform(0, 0.003)))
    assert flat.reserve_slope < 0.02
    assert flat.plan_overhead_s == pytest.approx(0.003, abs=0.0008)  # fit + reserve: the max


def test_recent_quantile_matches_numpy_linear_quantile():
    """The partial-sort quantile equals np.quantile's default method, at every window size."""
    from superserve.scheduling.calibration import _quantiles

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 64, 399, 400, 1024):
        a = rng.exponential(size=n)
        for q in (0.5, 0.9, 0.99, 1.0 - 2.0 / max(n, 3)):
            hi, mid = _quantiles(a.copy(), q)
            want_hi, want_mid = np.quantile(a, (q, 0.5))
            assert hi == pytest.approx(want_hi, abs=1e-15)
            assert mid == pytest.approx(want_mid, abs=1e-15)


def _write_batch(tail: ResponseTail, now: float, size: int, base: float, per: float) -> None:
    """A batch of `size` responses written one after another: the k-th `base + per (k-1)`
    after the batch resolved."""
    delays = [base + per * k for k in range(size)]
    for k, d in enumerate(delays, start=1):
        tail.add(now + d, k, d)
    tail.add_batch(now + delays[-1], (1, delays[0]), (size, delays[-1]))


def test_response_tail_plans_a_large_batch_with_the_prior_after_small_ones():
    """Only batches of one seen (a paced warm-up): the tail of a 32-response batch is the
    first position's plus the prior per response ahead, not the 1-response tail."""
    c = CalibrationConfig()
    tail = ResponseTail(c)
    assert tail.reserve_s(32) == 0.0  # nothing reported: no front end, nothing to reserve
    for i in range(40):
        _write_batch(tail, 0.02 * i, 1, 0.0007, 0.0)
    assert tail.base_s == pytest.approx(0.0007)
    assert tail.per_image_s == c.response_per_image_prior_s
    assert tail.reserve_s(1) == pytest.approx(0.0007)
    assert tail.reserve_s(32) == pytest.approx(0.0007 + 31 * c.response_per_image_prior_s)


@pytest.mark.parametrize("per", [0.00005, 0.0006])
def test_response_tail_measures_the_cost_per_response(per):
    """Batches of several responses replace the prior with the measured slope (either side
    of it), and the first position's tail stays the first position's."""
    c = CalibrationConfig()
    tail = ResponseTail(c)
    rng = np.random.default_rng(0)
    for i in range(60):
        _write_batch(tail, 0.05 * i, int(rng.integers(2, 33)), 0.001, per)
    assert tail.per_image_s == pytest.approx(per, rel=1e-6)
    assert tail.base_s == pytest.approx(0.001, rel=0.05)
    assert tail.reserve_s(16) == pytest.approx(0.001 + 15 * per, rel=0.05)
    # a lull longer than the first position's memory: that forgets, the slope stays
    _write_batch(tail, 0.05 * 60 + 5.0, 1, 0.0002, 0.0)
    assert tail.per_image_s == pytest.approx(per, rel=1e-6)


def test_response_tail_is_capped_and_validated():
    c = CalibrationConfig(max_overhead_s=0.01)
    tail = ResponseTail(c)
    _write_batch(tail, 0.0, 1, 0.0005, 0.0)
    assert tail.reserve_s(10_000) == 0.01
    with pytest.raises(ConfigError, match="response_per_image_prior_s"):
        CalibrationConfig(response_per_image_prior_s=-1.0)

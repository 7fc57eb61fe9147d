"""Policies on hand-built tables with known right answers, and the shared drop rule."""

import subprocess
import sys

import pytest

from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.scheduling import (
    EDFQueue,
    Infaas,
    QueueView,
    RateEstimator,
    SlackFit,
    cannot_meet,
    make_policy,
)
from superserve.sim.synthetic import synthetic_table

MS = 1e-3


def table3(load_ms=None):
    """Three subnets, batch sizes 1/2/4, latencies in ms:
       id0 acc .90: 1  2  3
       id1 acc .95: 2  4  6
       id2 acc .99: 4  8 12"""
    rows = [([1, 2, 3], 0.90), ([2, 4, 6], 0.95), ([4, 8, 12], 0.99)]
    subnets = [SubnetProfile(i, {"i": i}, a, dict(zip((1, 2, 4), r)), load_ms=load_ms)
               for i, (r, a) in enumerate(rows)]
    return ProfileTable.build("t", subnets, (1, 2, 4))


def view(qlen, slack_ms, **kw):
    return QueueView(length=qlen, head_deadline_s=slack_ms * MS, **kw)


def decide(policy, qlen, slack_ms, **kw):
    p = policy.decide(view(qlen, slack_ms, **kw), 0.0)
    return p.subnet, p.batch_size


def test_slackfit_buckets_keep_largest_batch_then_accuracy():
    sf = SlackFit(table3(), buckets=11)  # range [1, 12] ms: width 1 ms
    choices = {k: c for k, c in enumerate(sf.bucket_choices) if c}
    # the 3 ms bucket holds id0 at batch 4 (largest batch); the 4 ms one id1 b2 vs id2 b1
    assert choices[2][:2] == (0, 4)
    assert choices[3][:2] == (1, 2)
    assert choices[11 - 1][:2] == (2, 4)


@pytest.mark.parametrize("slack_ms,expect", [
    (12.5, (2, 4)),  # all the slack: the most accurate subnet at the largest batch
    (6.5, (1, 4)),   # id1 b4 (6 ms) has the largest batch among choices <= 6.5 ms
    (3.2, (0, 4)),   # low slack: smallest subnet, biggest batch
    (1.5, (0, 1)),   # only id0 at batch 1 fits
    (0.5, (0, 1)),   # nothing fits: the fastest choice (the drop rule acts before)
])
def test_slackfit_picks_bucket_below_slack(slack_ms, expect):
    assert decide(SlackFit(table3(), buckets=11), 16, slack_ms) == expect


def test_slackfit_short_queue_serves_most_accurate_that_fits():
    sf = SlackFit(table3(), buckets=11)
    # slack 6.5 ms picks (id1, b4) for a long queue; with one request id2 at b1 (4 ms) fits
    assert decide(sf, 1, 6.5) == (2, 1)
    assert decide(sf, 2, 6.5) == (1, 2)  # 2 requests: id2 b2 is 8 ms > 6.5; id1 b2 = 4 ms


def test_slackfit_cap_bounds_the_planned_batch_latency():
    # cap = 0.5 x SLO 13 ms = 6.5 ms: full slack plans as if 6.5 ms were left
    sf = make_policy("slackfit:buckets=11,cap=0.5", table3(), slo_s=13 * MS)
    assert sf.cap_s == pytest.approx(6.5 * MS)
    assert decide(sf, 16, 12.5) == (1, 4)
    assert decide(sf, 16, 3.2) == (0, 4)  # below the cap nothing changes
    assert decide(SlackFit(table3(), buckets=11), 16, 12.5) == (2, 4)  # the paper's: no cap
    with pytest.raises(ConfigError, match="cap must be auto or in"):
        make_policy("slackfit:cap=1.5", table3(), slo_s=0.05)
    with pytest.raises(ConfigError, match="needs the SLO"):
        make_policy("slackfit:cap=0.5", table3())


def test_slackfit_overhead_reduces_slack():
    assert decide(SlackFit(table3(), buckets=11), 16, 12.5, overhead_s=6 * MS) == (1, 4)


@pytest.mark.parametrize("slack_ms,qlen,expect", [(12, 4, (2, 4)), (5, 4, (2, 1)),
                                                  (6.5, 4, (2, 1)), (1.5, 4, (0, 1))])
def test_maxacc(slack_ms, qlen, expect):
    assert decide(make_policy("maxacc", table3()), qlen, slack_ms) == expect


@pytest.mark.parametrize("slack_ms,qlen,expect", [(12, 4, (2, 4)), (5, 4, (0, 4)),
                                                  (6.5, 4, (1, 4)), (2.5, 4, (0, 2)),
                                                  (12, 1, (2, 1))])
def test_maxbatch(slack_ms, qlen, expect):
    assert decide(make_policy("maxbatch", table3()), qlen, slack_ms) == expect


def test_clipper_fixed_subnet_largest_fitting_batch():
    c = make_policy("clipper:1", table3())
    assert decide(c, 8, 4.5) == (1, 2)
    assert decide(c, 8, 100) == (1, 4)
    assert decide(c, 8, 0.1) == (1, 1)  # never zero
    assert make_policy("clipper:0.96", table3()).subnet == 1  # closest accuracy
    assert make_policy("clipper:accuracy=0.99", table3()).subnet == 2


def test_infaas_cheapest_variant_and_load_delay():
    t = table3(load_ms=30.0)
    inf = make_policy("infaas", t)
    p = inf.decide(view(4, 100, worker_subnet=None), 0.0)
    assert (p.subnet, p.load_s) == (0, pytest.approx(0.030))
    p = inf.decide(view(4, 100, worker_subnet=0), 0.0)
    assert (p.subnet, p.batch_size, p.load_s) == (0, 4, 0.0)
    floor = make_policy("infaas:min_accuracy=0.94,load_ms=5", t)
    p = floor.decide(view(1, 100, worker_subnet=0), 0.0)
    assert (p.subnet, p.load_s) == (1, pytest.approx(0.005))
    with pytest.raises(ConfigError, match="min_accuracy"):
        Infaas(t, min_accuracy=0.999)


@pytest.mark.parametrize("spec,msg", [("fastest", "unknown policy"), ("slackfit:buckets=x", "buckets"),
                                      ("slackfit:bins=3", "unknown key 'bins'"),
                                      ("clipper", "needs a subnet"), ("clipper:7", "no subnet id=7"),
                                      ("clipper:fast", "neither"), ("maxacc:x=1", "no options"),
                                      ("slackfit:buckets=0", "buckets")])
def test_bad_policy_specs(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        make_policy(spec, table3())


def test_drop_rule():
    t = table3()
    assert cannot_meet(0.9 * MS, 0.0, t)
    assert not cannot_meet(1.0 * MS, 0.0, t)
    assert cannot_meet(1.5 * MS, 0.0, t, overhead_s=0.6 * MS)


def test_slackfit_accuracy_falls_as_slack_shrinks_on_realistic_table():
    t = synthetic_table()
    sf = SlackFit(t)
    accs = [t.acc[sf.decide(view(64, s), 0.0).subnet] for s in (60, 30, 15, 8, 4)]
    batches = [sf.decide(view(64, s), 0.0).batch_size for s in (60, 30, 15, 8, 4)]
    assert accs[0] > accs[-1]
    assert batches[0] >= batches[-1] or accs[0] > accs[-1]


def test_edf_queue_orders_by_deadline_then_arrival():
    q = EDFQueue()
    for d, x in [(3, "c"), (1, "a"), (2, "b"), (1, "a2")]:
        q.push(d, x)
    assert q.head_deadline_s() == 1 and q.peek() == "a"
    assert q.pop_n(3) == ["a", "a2", "b"]
    assert q.pop_n(5) == ["c"] and len(q) == 0


def test_rate_estimator_converges():
    r = RateEstimator(tau_s=1.0)
    for k in range(2000):
        r.observe(k * 0.01)  # 100 qps
    assert r.rate(19.99) == pytest.approx(100, rel=0.05)
    assert r.rate(25.0) < 1.0


def test_rate_estimator_reads_a_cold_start_at_once():
    """A stream that starts at 2,000 req/s reads ~2,000 within 50 ms (the plain level: ~100),
    one arrival alone a finite rate, and after a few tau the correction is gone."""
    r = RateEstimator(tau_s=1.0)
    assert r.rate(5.0) == 0.0
    r.observe(10.0)
    assert r.rate(10.0) == pytest.approx(100, rel=0.01)
    for k in range(1, 100):
        r.observe(10.0 + k * 0.0005)
    assert r.level(10.05) == pytest.approx(100, rel=0.1)
    assert r.rate(10.05) == pytest.approx(2000, rel=0.1)
    for k in range(100, 20000):
        r.observe(10.0 + k * 0.0005)
    assert r.rate(20.0) == pytest.approx(r.level(20.0), rel=1e-3)
    assert r.rate(20.0) == pytest.approx(2000, rel=0.01)


def test_pure_packages_import_without_torch():
    code = ("import sys, superserve.scheduling, superserve.profiling, superserve.sim, "
            "superserve.traces, superserve.sim.simulator; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

"""Edge cases of the policies (docs/scheduling.md lists each decision) on hand-built tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.scheduling import QueueView, SlackFit, cannot_meet, make_policy
from superserve.scheduling.base import Plan
from superserve.scheduling.policies import DEFAULT_BUCKETS, SLACKFIT_RULES, Lookup

MS = 1e-3


def table(rows, batches=(1, 2, 4), load_ms=None):
    subnets = [SubnetProfile(i, {"i": i}, acc, dict(zip(batches, lat)), load_ms=load_ms)
               for i, (lat, acc) in enumerate(rows)]
    return ProfileTable.build("t", subnets, batches)


T3 = [([1, 2, 3], 0.90), ([2, 4, 6], 0.95), ([4, 8, 12], 0.99)]


def decide(policy, qlen, slack_ms, **kw):
    p = policy.decide(QueueView(length=qlen, head_deadline_s=slack_ms * MS, **kw), 0.0)
    return p.subnet, p.batch_size


def test_default_bucket_count_is_documented_value():
    assert SlackFit(table(T3)).buckets == DEFAULT_BUCKETS == 64
    assert make_policy("slackfit", table(T3)).buckets == 64
    assert make_policy("slackfit:buckets=7", table(T3)).buckets == 7


def test_slack_equal_to_a_choice_latency_fits():
    sf = SlackFit(table(T3), buckets=11)
    assert decide(sf, 8, 12.0) == (2, 4)  # exactly 12 ms: the largest choice fits
    assert decide(sf, 8, 11.999) != (2, 4)


def test_slack_bucket_whose_choice_does_not_fit_falls_to_the_bucket_below():
    # one bucket per ms over [1, 12]; slack 6.5 ms lies in bucket [6, 7) whose choice is id1 at
    # batch 4 (6 ms): fits. Slack 6.0-eps lies in bucket [5, 6) - no choice at 5.x ms - which
    # inherits bucket [4, 5): id1 at batch 2 vs id2 at batch 1 (both 4 ms): larger batch wins.
    sf = SlackFit(table(T3), buckets=11)
    assert decide(sf, 8, 6.5) == (1, 4)
    assert decide(sf, 8, 5.99) == (1, 2)


def test_many_buckets_mostly_empty_inherit_from_below():
    sf = SlackFit(table(T3), buckets=1000)
    assert sum(c is not None for c in sf.bucket_choices) <= 9  # 9 choices, some share latency
    assert decide(sf, 8, 5.5) == (1, 2)
    assert decide(sf, 8, 100.0) == (2, 4)


def test_one_bucket_holds_the_largest_batch_and_is_used_only_when_it_fits():
    sf = SlackFit(table(T3), buckets=1)
    # the single bucket keeps batch 4 with the highest accuracy: id2 at 12 ms
    assert sf.bucket_choices[0][:2] == (2, 4)
    assert decide(sf, 8, 12.0) == (2, 4)
    # below it nothing else exists: the fastest subnet at batch 1 (the drop rule ran before)
    assert decide(sf, 8, 11.0) == (0, 1)


def test_queue_shorter_than_the_batch_is_served_whole_at_the_covering_size():
    sf = SlackFit(table(T3), buckets=11)
    assert decide(sf, 3, 100.0) == (2, 4)  # covering size 4; caller takes the 3 there are
    assert decide(sf, 1, 3.5) == (1, 1)  # one request: id1 at batch 1 (2 ms) beats id0 b4


def test_lookup_handles_tables_that_violate_p2():
    # id1 is more accurate AND faster than id0 at batch 2 (a P2 violation)
    t = table([([1, 3, 5], 0.90), ([2, 2.5, 6], 0.95)])
    lk = Lookup(t)
    assert lk.most_accurate(1, 2.6 * MS) == 1
    assert lk.most_accurate(1, 2.4 * MS) == -1
    assert decide(make_policy("maxbatch", t), 2, 2.6) == (1, 2)


def test_infaas_moves_to_a_variant_that_sustains_the_rate():
    t = table(T3, load_ms=1.0)
    inf = make_policy("infaas:min_accuracy=0.94", t, slo_s=0.020, workers=1)
    # id1 (0.95): best throughput within SLO/2 = 10 ms is batch 4 in 6 ms = 667 q/s;
    # id2 (0.99) is slower: so 0.94 means id1 at any rate, never the less accurate id0
    assert inf.variant_for(100.0) == 1 and inf.variant_for(5000.0) == 1
    no_floor = make_policy("infaas", t, slo_s=0.020, workers=1)
    assert no_floor.variant_for(10.0) == 0  # the least accurate, cheapest variant
    p = no_floor.decide(QueueView(4, 0.020, 0, 1, 10.0), 0.0)
    assert (p.subnet, p.load_s) == (0, pytest.approx(0.001))  # switching pays the load


@pytest.mark.parametrize("spec,msg", [
    ("clipper:1.5", "not in \\(0, 1\\]"), ("clipper:id=1,accuracy=0.9", "exactly one"),
    ("clipper:id=-1", "no subnet id=-1"), ("infaas:min_accuracy=abc", "min_accuracy='abc'"),
    ("infaas:floor=0.9", "unknown key 'floor'"), ("slackfit:buckets", "expected key=value"),
])
def test_more_bad_specs_name_the_part(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        make_policy(spec, table(T3))


def test_policy_min_latency_feeds_the_drop_rule():
    t = table(T3)
    clip = make_policy("clipper:2", t)
    assert clip.min_latency_s == pytest.approx(4 * MS)
    # 3 ms of slack: the table's fastest choice could make it, clipper:2 cannot
    assert not cannot_meet(3 * MS, 0.0, t)
    assert cannot_meet(3 * MS, 0.0, t, min_latency_s=clip.min_latency_s)
    for name in ("slackfit", "maxacc", "maxbatch"):
        assert make_policy(name, t).min_latency_s == pytest.approx(1 * MS)


def test_decision_reads_only_the_view_not_the_queue():
    # a decision costs the same whatever the queue length: nothing is iterated
    sf = SlackFit(table(T3))
    assert decide(sf, 10**9, 12.0) == (2, 4)


def test_plain_slackfit_means_the_measured_defaults():
    """`slackfit` = the paper's rule + the adaptive burst guard + early drop + the rate guard
    + the front-end rule; `slackfit:cap=1,early_drop=0,rate=0,front=0` is the paper's rule
    exactly; cap=F a fixed guard."""
    from conftest import synthetic_table
    from superserve.scheduling.registry import make_policy

    t = synthetic_table()
    p = make_policy("slackfit", t, slo_s=0.040, workers=2)
    assert p.cap_s is None and p.burst_window_s == pytest.approx(0.040)
    assert p.early_drop is True and p.workers == 2 and p.rate_headroom == pytest.approx(1.1)
    assert p.front_end_share == pytest.approx(0.5)
    paper = make_policy("slackfit:cap=1,early_drop=0,rate=0,front=0", t, slo_s=0.040)
    assert paper.cap_s is None and paper.burst_window_s is None and paper.early_drop is False
    assert paper.rate_headroom is None and paper.front_end_share is None
    with pytest.raises(ConfigError, match="rate"):
        make_policy("slackfit:rate=0.1", t, slo_s=0.040)
    fixed = make_policy("slackfit:cap=0.5", t, slo_s=0.040)
    assert fixed.cap_s == pytest.approx(0.020) and fixed.burst_window_s is None
    none = make_policy("slackfit", t)  # no SLO known: no guard
    assert none.cap_s is None and none.burst_window_s is None


def test_burst_guard_follows_the_measured_burst():
    """The adaptive guard is SLO - clear(burst) on the fastest subnet's largest batches,
    floored at one such batch, scaled by the calibration, shared among the workers; and it
    shapes the plan: with no burst SlackFit may use the whole slack, with a big one it plans
    like the fastest subnet at the largest batch."""
    t = table(T3)  # id0: 1/2/3 ms at b1/b2/b4; SLO 13 ms
    sf = SlackFit(t, buckets=11, burst_guard_slo_s=13 * MS)
    assert sf.guard_s(0) == pytest.approx(13 * MS)
    assert sf.guard_s(1) == pytest.approx(12 * MS)  # one image: id0 at b1
    assert sf.guard_s(3) == pytest.approx(10 * MS)  # covered by b4: 3 ms
    assert sf.guard_s(8) == pytest.approx(7 * MS)  # two full batches of 4
    assert sf.guard_s(4, latency_scale=1.5, overhead_s=0.5 * MS) == pytest.approx(8 * MS)
    assert sf.guard_s(8, latency_scale=2.0, overhead_s=0.5 * MS) == pytest.approx(6.5 * MS)
    assert sf.guard_s(1000) == pytest.approx(3 * MS)  # floor: one b4 batch of id0
    two = SlackFit(t, buckets=11, burst_guard_slo_s=13 * MS, workers=2)
    assert two.guard_s(8) == pytest.approx(10 * MS)  # 4 images each
    view = QueueView(length=4, head_deadline_s=12.5 * MS)
    assert sf.decide(view, 0.0) == SlackFit(t, buckets=11).decide(view, 0.0)  # no burst yet
    # ... but a backlog beyond one batch is cleared before any burst: it caps the plan too
    backlog = QueueView(length=16, head_deadline_s=12.5 * MS)
    assert sf.guard_s(0, queued=12) == pytest.approx(4 * MS)
    assert t.latency_s(*_plan(sf.decide(backlog, 0.0))) <= 4 * MS
    bursty = QueueView(length=16, head_deadline_s=12.5 * MS, burst_images=1000)
    assert sf.decide(bursty, 0.0) == Plan(0, 4, rule="guard")
    # with a per-batch overhead the guard still means the batch's whole cost: at the floor,
    # the plan is the fastest subnet's largest batch, not something longer by the overhead
    heavy = QueueView(length=16, head_deadline_s=12.5 * MS, burst_images=1000,
                      overhead_s=3 * MS)
    assert sf.decide(heavy, 0.0) == Plan(0, 4, rule="guard")


def test_burst_guard_reads_the_bursts_shape():
    """With a peak per window (fractions 1/8 .. 1 of the SLO), n images seen within w seconds
    are due by w + SLO, so the guard is the least w + SLO - clear(n) over the windows: 8
    images spread over the whole window leave 13 ms more than 8 at once; a clump (8 within
    every window) is the same as `burst_images` alone, less the shortest window."""
    t = table(T3)  # id0: 1/2/3 ms at b1/b2/b4; SLO 13 ms
    sf = SlackFit(t, buckets=11, burst_guard_slo_s=13 * MS)
    assert sf.burst_fractions == (0.125, 0.25, 0.5, 1.0)
    spread = (1.0, 2.0, 4.0, 8.0)  # per 1.625 / 3.25 / 6.5 / 13 ms
    # 1 image: 1.625 + 13 - 1; 2: 3.25 + 13 - 2; 4: 6.5 + 13 - 3; 8: 13 + 13 - 6
    assert sf.guard_s(8, peaks=spread) == pytest.approx(13.625 * MS)
    assert sf.guard_s(8, peaks=(8.0,) * 4) == pytest.approx(7 * MS + 1.625 * MS)
    assert sf.guard_s(8) == pytest.approx(7 * MS)  # the whole window only: all at once
    assert sf.guard_s(1000, peaks=(1000.0,) * 4) == pytest.approx(3 * MS)  # the floor holds
    # a spread burst lets SlackFit plan past the clump's cap
    clump = QueueView(length=4, head_deadline_s=12.5 * MS, burst_images=8,
                      burst_peaks=(8.0,) * 4)
    smooth = QueueView(length=4, head_deadline_s=12.5 * MS, burst_images=8, burst_peaks=spread)
    assert t.latency_s(*_plan(sf.decide(clump, 0.0))) <= 8.625 * MS
    assert t.latency_s(*_plan(sf.decide(smooth, 0.0))) > 8.625 * MS


def test_burst_tracker_counts_the_window_and_decays():
    from superserve.scheduling.bursts import BurstTracker, burst_levels

    b = BurstTracker(window_s=0.05, half_life_s=1.0)
    for k in range(10):
        b.observe(k * 0.001)  # 10 images within 10 ms
    assert b.peak(0.009) == pytest.approx(10)
    b.observe(0.2, 3)  # the window has moved on: 3 now, the peak remembered
    assert b.peak(0.2) == pytest.approx(10 * 0.5 ** 0.191, rel=1e-6)
    assert b.peak(1.2) == pytest.approx(b.peak(0.2) / 2)  # one half-life later
    # the vectorised form (the simulator's) equals the tracker, arrival by arrival
    rng = np.random.default_rng(1)
    ts = np.sort(rng.exponential(0.002, 3000).cumsum())
    tr, seen = BurstTracker(0.05, 2.0), []
    for t_s in ts:
        tr.observe(t_s)
        seen.append(tr.peak(t_s))
    np.testing.assert_allclose(burst_levels(ts, 0.05, 2.0), seen, rtol=1e-9)
    # per window at once: each fraction's peak equals a tracker of that window alone
    ts = np.sort(rng.exponential(0.001, 10_000).cumsum())  # long enough to compact
    multi, rows = BurstTracker(0.05, 2.0, fractions=(0.125, 0.5, 1.0)), []
    for t_s in ts:
        multi.observe(t_s, 2)
        rows.append(multi.peaks(t_s))
    assert multi.peak(ts[-1]) == rows[-1][-1]
    for k, f in enumerate(multi.fractions):
        np.testing.assert_allclose(burst_levels(ts, 0.05 * f, 2.0, np.full(ts.size, 2.0)),
                                   [r[k] for r in rows], rtol=1e-9)
    for bad in ((0.5,), (1.0, 0.5), (0.0, 1.0), ()):
        with pytest.raises(ValueError, match="fractions"):
            BurstTracker(0.05, fractions=bad)


def test_burst_guard_uses_the_head_requests_own_slo():
    """A request with a longer SLO than the server's default leaves the burst more time: the
    guard is its SLO - clear(burst), not the default's; without one, the default."""
    t = table(T3)  # id0: 1/2/3 ms at b1/b2/b4
    sf = SlackFit(t, buckets=11, burst_guard_slo_s=13 * MS)
    assert sf.guard_s(8, slo_s=26 * MS) == pytest.approx(20 * MS)  # 26 - two b4 batches
    assert sf.guard_s(8, slo_s=None) == pytest.approx(7 * MS)
    # a burst of 8 with the head's deadline 25 ms away: under the default SLO the plan is
    # capped at 7 ms; with the request's own 26 ms SLO it may use more of its slack
    short = QueueView(length=16, head_deadline_s=25 * MS, burst_images=8)
    own = QueueView(length=16, head_deadline_s=25 * MS, burst_images=8, head_slo_s=26 * MS)
    assert t.latency_s(*_plan(sf.decide(short, 0.0))) <= 7 * MS
    assert t.latency_s(*_plan(sf.decide(own, 0.0))) > 7 * MS


def _plan(p):
    return p.subnet, p.batch_size


def test_rate_guard_plans_only_subnets_that_keep_up_with_the_arrival_rate():
    """T3's sustained throughputs at their largest batch (4): id0 4/3 ms = 1333/s, id1 667/s,
    id2 333/s. Slack alone picks the accurate id2; the rate guard keeps only subnets that
    sustain headroom x the arrival rate at the calibrated cost, and falls back to the one
    with the most throughput when none can."""
    t = table(T3)
    plain = SlackFit(t, buckets=12)
    guarded = SlackFit(t, buckets=12, rate_headroom=1.0)
    ample = {"length": 4, "slack_ms": 12.5}
    assert decide(plain, ample["length"], ample["slack_ms"], arrival_rate_qps=900)[0] == 2
    # no rate known, or a rate every subnet sustains: SlackFit's own choice
    assert decide(guarded, 4, 12.5)[0] == 2
    assert decide(guarded, 4, 12.5, arrival_rate_qps=300) == decide(plain, 4, 12.5)
    # 500/s: id2 (333/s) cannot keep up -> the most accurate that can, within the slack
    assert decide(guarded, 4, 12.5, arrival_rate_qps=500)[0] == 1
    # 900/s: only id0 keeps up
    assert decide(guarded, 4, 12.5, arrival_rate_qps=900)[0] == 0
    # the calibrated cost counts: at x2 latency id1 sustains only 333/s
    assert decide(guarded, 4, 12.5, arrival_rate_qps=500, latency_scale=2.0)[0] == 0
    # so does the cycle overhead (not the tail reserve): 4 / (6 + 2 ms) = 500/s for id1
    assert decide(guarded, 4, 12.5, arrival_rate_qps=490, cycle_overhead_s=2 * MS)[0] == 1
    assert decide(guarded, 4, 12.5, arrival_rate_qps=510, cycle_overhead_s=2 * MS)[0] == 0
    # nothing sustains 5,000/s: the subnet with the most throughput
    assert decide(guarded, 4, 12.5, arrival_rate_qps=5000)[0] == 0
    # per worker: two workers share the rate
    two = SlackFit(t, buckets=12, rate_headroom=1.0, workers=2)
    assert decide(two, 4, 12.5, arrival_rate_qps=900)[0] == 1
    # a short queue's "more accurate at the covering size" obeys the guard too
    assert decide(plain, 1, 12.5, arrival_rate_qps=900)[0] == 2
    assert decide(guarded, 1, 12.5, arrival_rate_qps=900)[0] == 0


def test_rate_guard_swap_takes_the_largest_batch_the_faster_subnet_fits():
    """T3, 8.5 ms of slack: SlackFit's own choice is id2 at batch 2 (8 ms). At 900/s only id0
    keeps up, and it fits batch 4 (3 ms) in that slack: the guard swapped for throughput, so
    the plan takes the largest batch id0 fits (the queue allowing), not the batch the bucket
    sized for id2 (id0 at batch 2 sustains 1,000/s, at batch 4 1,333/s)."""
    t = table(T3)
    plain = SlackFit(t, buckets=12)
    guarded = SlackFit(t, buckets=12, rate_headroom=1.0)
    assert decide(plain, 4, 8.5) == (2, 2)
    assert decide(guarded, 4, 8.5, arrival_rate_qps=900) == (0, 4)
    assert decide(guarded, 100, 8.5, arrival_rate_qps=900) == (0, 4)
    assert decide(guarded, 2, 8.5, arrival_rate_qps=900) == (0, 2)  # the queue caps it
    # 4.5 ms: own choice id1 at batch 2 (4 ms); at 900/s id0 takes batch 4 (3 ms) ...
    assert decide(plain, 4, 4.5) == (1, 2)
    assert decide(guarded, 4, 4.5, arrival_rate_qps=900) == (0, 4)
    # ... and where the guard keeps SlackFit's own choice, its batch stands
    assert decide(guarded, 4, 4.5, arrival_rate_qps=500) == (1, 2)
    # 2.5 ms: id0 fits batch 2 only
    assert decide(guarded, 4, 2.5, arrival_rate_qps=900) == (0, 2)


def test_rate_guard_keeps_up_with_the_queue_when_it_is_ahead_of_the_rate():
    """The measured rate is a ~1 s moving average and lags a burst's onset; the queue shows
    it within one batch. The guard asks for the larger of the rate (x headroom x boost) and
    the queue's own rate: all but the head arrived within the head's age (here 20 ms SLO -
    12.5 ms slack = 7.5 ms, above the floor of 5 ms). T3 at 100/s (every subnet keeps up);
    id2 sustains 250/s at a size that meets the SLO in steady state (batch 2: 8 + 8 ms), id1
    667/s: 2 queued ask 133/s (the own choice), 3 queued 267/s (id2 out), 8 queued 933/s
    (id1 out too)."""
    t = table(T3)
    g = SlackFit(t, buckets=12, rate_headroom=1.0)
    slo = {"arrival_rate_qps": 100, "head_slo_s": 20 * MS}
    assert decide(g, 2, 12.5, **slo) == (2, 2)
    assert decide(g, 3, 12.5, **slo)[0] == 1
    assert decide(g, 8, 12.5, **slo)[0] == 0
    # no SLO known (neither the view's nor the policy's): the rate alone
    assert decide(g, 20, 12.5, arrival_rate_qps=100) == (2, 4)
    # the policy's own SLO (the burst guard's window) serves when the view has none
    w = SlackFit(t, buckets=12, rate_headroom=1.0, burst_guard_slo_s=20 * MS)
    assert decide(w, 20, 12.5, arrival_rate_qps=100)[0] == 0
    # no rate measured yet: the queue alone
    assert decide(g, 20, 12.5, head_slo_s=20 * MS)[0] == 0
    # the headroom and the miss feedback's boost multiply the rate, not the queue's bound:
    # 3 queued ask 267/s however high the boost (x4 on it would shut out id1 too)
    assert decide(g, 3, 12.5, head_slo_s=20 * MS, rate_boost=4.0)[0] == 1
    assert decide(g, 3, 12.5, arrival_rate_qps=200, head_slo_s=20 * MS,
                  rate_boost=4.0)[0] == 0  # 4 x 200/s = 800/s: the rate's bar is higher
    # off: the queue changes nothing
    assert decide(SlackFit(t, buckets=12), 20, 12.5, **slo) == (2, 4)


def test_rate_guard_never_trades_the_batch_deadline_for_throughput():
    """id1 sustains more (4 / 3.6 ms = 1,111/s) than id0 (1 / 1 ms = 1,000/s at batch 1), so
    at 1,100/s only id1 passes the guard; but with 1.5 ms of slack only id0 at batch 1 fits:
    SlackFit's own choice stands rather than a plan that misses its deadline."""
    t = table([([1, 2, 8], 0.90), ([3, 3.5, 3.6], 0.95)])
    guarded = SlackFit(t, buckets=12, rate_headroom=1.0)
    assert guarded.rate_ok(QueueView(length=1, head_deadline_s=1.0, arrival_rate_qps=1100)) \
        == [False, True]
    assert decide(guarded, 1, 1.5, arrival_rate_qps=1100) == (0, 1)
    assert decide(guarded, 4, 4.0, arrival_rate_qps=1100) == (1, 4)  # id1 fits: it serves


def test_rate_guard_credits_only_batch_sizes_that_meet_the_slo_in_steady_state():
    """T3, SLO 20 ms, id1 at batch 4 (6 ms): typical 6 ms + planned 6 ms fits, 667/s. With
    a 10 ms reserve the plan of that batch is 16 ms, 6 + 16 > 20: only batch 2 counts
    (2 / 4 ms = 500/s), so at 600/s id1 no longer keeps up."""
    t = table(T3)
    g = SlackFit(t, buckets=12, rate_headroom=1.0, burst_guard_slo_s=20 * MS)
    view = dict(length=4, head_deadline_s=1.0, arrival_rate_qps=600, head_slo_s=20 * MS)
    assert g.rate_ok(QueueView(**view)) == [True, True, False]
    assert g.rate_ok(QueueView(**view, overhead_s=10 * MS, cycle_overhead_s=0.0)) \
        == [True, False, False]
    # no SLO known (neither the view's nor the policy's): throughput alone, as before
    nameless = SlackFit(t, buckets=12, rate_headroom=1.0)
    assert nameless.rate_ok(QueueView(length=4, head_deadline_s=1.0, arrival_rate_qps=600,
                                      overhead_s=10 * MS, cycle_overhead_s=0.0)) \
        == [True, True, False]


def test_rate_guard_binds_says_whether_a_raised_headroom_keeps_a_subnet_out():
    """T3's slowest subnet, id2, sustains 4/12 ms = 333/s: at 100/s with headroom 1 it keeps
    up even at x3 (a raise there changes no plan), at x4 it does not; off: never."""
    t = table(T3)
    g = SlackFit(t, buckets=12, rate_headroom=1.0)
    view = QueueView(length=4, head_deadline_s=12.5 * MS, arrival_rate_qps=100)
    assert not g.rate_guard_binds(view) and not g.rate_guard_binds(view, 3.0)
    assert g.rate_guard_binds(view, 4.0)
    assert g.rate_guard_binds(dataclasses.replace(view, rate_boost=4.0))
    assert not SlackFit(t, buckets=12).rate_guard_binds(view, 100.0)


def test_rate_guard_reads_the_queue_as_arrived_within_the_heads_age():
    """T3 at batch 4: id0 1,333/s, id1 667/s, id2 333/s. 20 images queued behind a head with
    a 100 ms SLO while the moving average still says 10/s (an onset): over the whole SLO
    they say 200/s (all keep up); the head arrived 10 ms ago, so they came within at most
    max(10 ms, 25 ms = BACKLOG_WINDOW_FLOOR x SLO): 800/s, only id0 keeps up; 50 ms ago:
    400/s; older than the SLO: the SLO again."""
    from superserve.scheduling.policies import BACKLOG_WINDOW_FLOOR

    assert BACKLOG_WINDOW_FLOOR == 0.25
    g = SlackFit(table(T3), buckets=12, rate_headroom=1.0)
    view = QueueView(length=20, head_deadline_s=0.1, arrival_rate_qps=10, head_slo_s=0.1)
    assert g.rate_ok(view) is None  # no time given: the SLO (as before)
    assert g.rate_ok(view, 0.010) == [True, False, False]
    assert g.rate_ok(view, 0.050) == [True, True, False]
    assert g.rate_ok(view, 0.090) is None  # 20 / 90 ms = 222/s
    assert g.rate_ok(view, 0.2) is None
    assert g.rate_guard_binds(view, 1.0, 0.010) and not g.rate_guard_binds(view, 1.0)
    # one request of 20 images (all arrived with the head): no rate in that, the rate alone
    one = dataclasses.replace(view, head_images=20)
    assert g.rate_ok(one, 0.010) is None and not g.rate_guard_binds(one, 1.0, 0.010)
    # ... and behind a head of 10 images, 10 more within 10 ms (read over 25 ms): 400/s,
    # id2 out; behind a head of 12, 8 more: 320/s, all keep up
    assert g.rate_ok(dataclasses.replace(view, head_images=10), 0.010) == [True, True, False]
    assert g.rate_ok(dataclasses.replace(view, head_images=12), 0.010) is None
    # the same queue and slack (90 ms), its head 10 ms old or 90 ms old (a 180 ms SLO)
    assert g.decide(view, 0.01).subnet == 0
    assert g.decide(dataclasses.replace(view, head_slo_s=0.18), 0.01).subnet == 2


def test_rate_boost_multiplies_the_guard_headroom():
    """The miss feedback's boost: at 500/s id1 (667/s) keeps up; x1.5 asks for 750/s."""
    g = SlackFit(table(T3), buckets=12, rate_headroom=1.0)
    assert decide(g, 4, 12.5, arrival_rate_qps=500)[0] == 1
    assert decide(g, 4, 12.5, arrival_rate_qps=500, rate_boost=1.5)[0] == 0


def test_slackfit_throughputs_equal_the_plain_loop_over_the_table():
    """`_throughputs` (numpy, all subnets x sizes at once) against the definition: per subnet
    the best b / (scale x lat + cycle) over sizes whose typical cycle plus plan fit the SLO,
    and over all sizes; a cost <= 0 anywhere in a row makes both unbounded."""
    import math
    import random

    from superserve.profiling import default_table_path
    from superserve.profiling.table import ProfileTable
    from superserve.scheduling import make_policy

    t = ProfileTable.load(default_table_path("resnet"))
    rng = random.Random(7)
    for _ in range(300):
        sf = make_policy("slackfit", t, slo_s=0.05)
        slo = rng.choice([0.05, 0.01, 0.2])
        view = QueueView(length=5, head_deadline_s=slo, worker_id=0, worker_subnet=None,
                         arrival_rate_qps=1000.0, overhead_s=rng.uniform(-0.002, 0.01),
                         latency_scale=rng.uniform(0.1, 4.0), head_slo_s=slo,
                         cycle_overhead_s=rng.choice([None, rng.uniform(-0.01, 0.003)]))
        cyc = view.overhead_s if view.cycle_overhead_s is None else view.cycle_overhead_s
        want, want_any = [], []
        for row in t.lat_s:
            best = best_any = 0.0
            for b, lat in zip(t.batch_sizes, row):
                typ = view.latency_scale * lat + cyc
                if typ <= 0:
                    best = best_any = math.inf
                    continue
                best_any = max(best_any, b / typ)
                if typ + view.latency_scale * lat + view.overhead_s <= slo:
                    best = max(best, b / typ)
            want.append(best)
            want_any.append(best_any)
        assert sf._throughputs(view) == (want, want_any)


def test_every_slackfit_plan_says_which_rule_made_it():
    """Plan.rule, from the first rule that applies (T3, 12 buckets): the front-end rule, no
    choice fitting, a short queue served by a more accurate subnet, the rate guard's swap,
    the burst guard's cap, and the paper's bucket of the head's own slack."""
    t = table(T3)

    def rule(policy, qlen, slack_ms, **kw):
        return policy.decide(QueueView(length=qlen, head_deadline_s=slack_ms * MS, **kw),
                             0.0).rule

    plain = SlackFit(t, buckets=12)
    assert rule(plain, 8, 12.5) == "bucket"  # id2 at batch 4, the head's own slack
    assert rule(plain, 8, 0.5) == "fastest"  # below every choice
    assert rule(plain, 1, 3.5) == "light"  # one request: id1 at batch 1 beats id0 at 4
    assert rule(plain, 3, 100.0) == "bucket"  # the bucket's own subnet at the covering size
    guarded = SlackFit(t, buckets=12, rate_headroom=1.0)
    assert rule(guarded, 4, 12.5, arrival_rate_qps=900) == "rate"
    assert rule(guarded, 4, 12.5, arrival_rate_qps=300) == "bucket"  # every subnet keeps up
    capped = SlackFit(t, buckets=12, cap_s=5 * MS)
    assert rule(capped, 8, 12.5) == "guard"
    assert rule(capped, 8, 4.5) == "bucket"  # the cap is above the slack: it did not bind
    front = SlackFit(t, buckets=12, front_end_share=0.5)
    assert rule(front, 8, 12.5, entry_share=0.2) == "front"
    assert rule(front, 8, 12.5, entry_share=0.9) == "bucket"
    seen = {rule(plain, 8, 12.5), rule(plain, 8, 0.5), rule(plain, 1, 3.5),
            rule(guarded, 4, 12.5, arrival_rate_qps=900), rule(capped, 8, 12.5),
            rule(front, 8, 12.5, entry_share=0.2)}
    assert seen == set(SLACKFIT_RULES)
    # a one-rule policy leaves it empty: the router and simulator count it under its name
    assert make_policy("clipper:0", t).decide(QueueView(length=4, head_deadline_s=0.05),
                                              0.0).rule == ""

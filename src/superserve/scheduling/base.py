"""The contract between the queue owners (simulator, live router) and the policies.

A policy is pure: `policy.decide(view, now_s) -> Plan | None`, a function of a small view of
the queue, the current time, and the ProfileTable the policy was built with (offline work such
as SlackFit's buckets happens once, at construction). No clock reads, no sleeps, no I/O, no
torch. The simulator and the live router call the very same objects.

Protocol of the caller, identical in the simulator and the router, whenever a worker is free
and the queue is non-empty:

    1. pop and answer DROPPED_DEADLINE every EDF head for which
       `cannot_meet(..., min_latency_s=policy.min_latency_s)` is true (the shared drop rule:
       not even the policy's fastest choice can finish before the deadline, so no compute is
       spent on it); with `threshold = drop_slack_s(policy, len(queue), rate, fastest)` (the
       queue as it stands before these drops, the arrival rate as in the view), also every
       head whose slack (deadline - now - overhead) is below `threshold` (the same rule unless
       the policy drops early: see SlackFit's `early_drop`);
    2. plan = policy.decide(view, now_s); None means "leave the worker idle for now";
    3. pop min(plan.batch_size, len(queue)) earliest-deadline requests (a queue shorter than the
       planned batch is taken whole) and run them on plan.subnet, after plan.load_s seconds of
       actuation (model loading; 0 for SubNetAct).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from superserve.profiling.table import ProfileTable

__all__ = ["Plan", "Policy", "QueueView", "cannot_meet", "drop_slack_s", "rate_guard_binds_of",
           "table_slack_s"]


@dataclass(frozen=True, slots=True)
class QueueView:
    """What a policy may know when it decides for one free worker."""

    length: int  # requests waiting (> 0)
    head_deadline_s: float  # absolute deadline of the earliest-deadline request
    worker_id: int = 0  # the free worker being scheduled
    worker_subnet: int | None = None  # subnet currently loaded on it (model-loading baselines)
    arrival_rate_qps: float = 0.0  # recent arrival rate, as measured by the caller
    overhead_s: float = 0.0  # known per-batch overhead beyond the profiled compute
    # real cost of a batch ~ latency_scale x its profiled latency + overhead_s (the router's
    # online calibration, scheduling/calibration.py; 1 when planning with the table as is)
    latency_scale: float = 1.0
    # the most images seen arriving within one window (the policy's `burst_window_s`)
    # recently, decayed (scheduling/bursts.py); 0 when the caller does not track bursts
    burst_images: float = 0.0
    # the same peak for each of the policy's `burst_fractions` of that window (the last is
    # burst_images): how the burst is shaped; empty when the caller counts the whole window only
    burst_peaks: tuple[float, ...] = ()
    # the head request's own SLO (deadline - arrival); None: the policy's default SLO
    head_slo_s: float | None = None
    # the TYPICAL (median) per-batch cost beyond latency_scale x profiled, where overhead_s is
    # a reserve for the tail: what a worker's batch cycle really costs on average, for
    # throughput (SlackFit's rate guard); None: take overhead_s
    cycle_overhead_s: float | None = None
    # multiplies SlackFit's rate-guard headroom: the caller's miss feedback
    # (scheduling/feedback.py), > 1 while requests recently missed their SLO; 1: none
    rate_boost: float = 1.0
    # images of the head's own request still queued: they arrived with it, all at once, so
    # they are no evidence of a rate (SlackFit's rate guard counts only the images behind them)
    head_images: int = 1
    # when the head's request entered the router's queue (the caller's clock; None: at its
    # arrival, deadline - head_slo_s). A front end behind on its core hands requests over
    # late: the queue behind the head came since it entered, not since its first byte
    head_queued_s: float | None = None
    # the share of its SLO the newest request to reach the router (queued, or refused as
    # hopeless) still had when it got there (1: all of it; None: unknown, taken as all): what
    # the next arrivals bring with them when a front end behind on its core hands them over
    # late (SlackFit's front_end_share)
    entry_share: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Run up to `batch_size` earliest-deadline requests on `subnet` (an id in the table)."""

    subnet: int
    batch_size: int
    load_s: float = 0.0  # actuation delay the worker pays first (switching a loaded model)
    # which of the policy's rules made the choice (SlackFit: one of SLACKFIT_RULES; "": the
    # policy has one rule). Counted per batch by the router (`superserve_plans_total{rule}`)
    # and the simulator (`SimResult.plans`), so a fall in accuracy says which rule chose it
    rule: str = ""


@runtime_checkable
class Policy(Protocol):
    name: str
    table: ProfileTable
    min_latency_s: float  # the fastest choice this policy can make (the drop rule uses it)

    def decide(self, view: QueueView, now_s: float) -> Plan | None: ...


def table_slack_s(view: QueueView, now_s: float, cap_s: float | None = None) -> float:
    """The head's slack in the table's units: (deadline - now - overhead) / latency_scale, so
    a choice fits when its profiled latency is <= this. `cap_s` (real seconds) bounds the
    slack before the conversion."""
    slack = view.head_deadline_s - now_s - view.overhead_s
    if cap_s is not None and slack > cap_s:
        slack = cap_s
    return slack / view.latency_scale


def cannot_meet(head_deadline_s: float, now_s: float, table: ProfileTable,
                overhead_s: float = 0.0, *, min_latency_s: float | None = None,
                latency_scale: float = 1.0) -> bool:
    """The shared drop rule: true when even the fastest choice cannot finish before the
    deadline. The fastest choice is the policy's own (`policy.min_latency_s`: for Clipper+ its
    fixed subnet at batch 1); without it, the table's fastest subnet at the smallest batch.
    Its real cost is latency_scale x that + overhead_s."""
    fastest = table.fastest_s if min_latency_s is None else min_latency_s
    return head_deadline_s - now_s - overhead_s < fastest * latency_scale


def drop_slack_s(policy: object, queue_length: int, arrival_rate_qps: float,
                 fastest_s: float) -> float:
    """The least slack an EDF head needs to be kept, for a queue of `queue_length` at this
    arrival rate: the policy's `drop_slack_s` when it has one, else `fastest_s` (the plain
    rule's bar: the policy's fastest choice)."""
    f = getattr(policy, "drop_slack_s", None)
    return fastest_s if f is None else f(queue_length, arrival_rate_qps)


def rate_guard_binds_of(policy: object) -> Callable[[QueueView, float, float], bool] | None:
    """The policy's `rate_guard_binds(view, factor, now_s)` (SlackFit's; the miss feedback
    raises its boost only where that is true), or None when it has none. A policy written
    against the two-argument form of before 2026-12-01, `rate_guard_binds(view, factor)`, is
    called without the time instead of failing on every plan."""
    f = getattr(policy, "rate_guard_binds", None)
    if f is None:
        return None
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: take it as current
        return f
    positional = [p for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params):
        return f
    return lambda view, factor, now_s: f(view, factor)

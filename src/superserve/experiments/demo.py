"""`superserve demo`: the phenomenon SuperServe exists for, live, on this machine.

One trace for every policy: calm phases at half the capacity of the most accurate subnet
(its best batch within SLO/2) on this machine, and bursts through and well past it (1.5x,
2.5x, then a multiple capped at what this machine's front end can take). "On this machine":
before the runs, a few seconds of forwards on the worker's CPU measure how much slower (or
faster) it runs the table's subnets than the machine that profiled them; beyond the router's
start-up threshold (x1.2) the trace is sized from the measured latencies, so a slow laptop
sees the same story as the profiling machine instead of every policy drowning
(`--size-from-table` keeps the table's figures); then 2 s of fixed Python work on that CPU
say how steady it is (profiling/noise.py), and the header says it. Each phase is itself
bursty (half deterministic, half gamma with CV^2 4). Each policy gets a fresh server started
with DEFAULT flags (`--policy P`, plus the worker pinned alone on CPU 1): SlackFit, and
Clipper+ at the fastest, a middle and the most accurate subnet (and INFaaS in the full run).

Out: a progress line per run while it runs, then a table (attainment, realized accuracy from
the labels, profiled accuracy beside it), calm-vs-burst attainment, a timeline per policy
(`<name>.timeline.png`: offered load, SLO attainment, served accuracy per 0.5 s), all
policies overlaid (`timeline.png`), the tradeoff scatter (`tradeoff.png`) and `summary.json`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superserve.bench.live import LiveRun, compare, plot_tradeoff, print_table
from superserve.bench.server_proc import format_rules
from superserve.profiling.noise import HostNoise, measure_host_noise, on_cpu
from superserve.profiling.table import ProfileTable

__all__ = ["DemoTrace", "demo_runs", "demo_trace", "machine_speed", "noise_note", "run_demo"]

CALM = 0.5  # calm phases: this x the most accurate subnet's capacity
BURSTS = (1.5, 2.5, None, None)  # burst phases in turn; None: the peak (--burst-rate)
PEAK_X = 3.5  # default peak: this x that capacity, capped by CAP_QPS[protocol]


@dataclass(frozen=True)
class DemoTrace:
    arrivals_s: np.ndarray
    phases: tuple[tuple[float, float, float], ...]  # (start_s, end_s, mean req/s)
    capacity_qps: float  # the most accurate subnet's capacity on one worker (this machine)
    subnet: int  # its id
    peak_qps: float
    speed: float = 1.0  # this machine's latency / the table's, as the trace was sized with

    def describe(self) -> str:
        return ", ".join(f"{b - a:g}s@{r:.0f}" for a, b, r in self.phases)

    def in_bursts(self, t_s: np.ndarray) -> np.ndarray:
        burst = np.zeros(len(t_s), bool)
        for a, b, r in self.phases:
            if r > self.capacity_qps:
                burst |= (t_s >= a) & (t_s < b)
        return burst


def demo_trace(table: ProfileTable, slo_s: float, phase_s: float, peak_qps: float | None = None,
               cap_qps: float = 2500.0, seed: int = 0, speed: float = 1.0) -> DemoTrace:
    """Calm, burst, calm, burst, ... calm; every phase `phase_s` long (the first one second
    longer, for the server to settle), each one bursty with CV^2 4 at its mean rate. `speed`:
    this machine runs the table's subnets that many times their profiled latency (the
    capacities, and the front end's cap, are divided by it; a faster machine keeps the cap)."""
    from superserve.experiments.simulated import capacity_qps, most_accurate_subnet
    from superserve.traces.generators import bursty

    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed!r}")
    best = most_accurate_subnet(table)
    cap = capacity_qps(table.scaled(speed) if speed != 1.0 else table, best, slo_s)
    peak = min(peak_qps or PEAK_X * cap, cap_qps / max(1.0, speed))
    rates = [CALM * cap]
    for x in BURSTS:
        rates += [peak if x is None else min(x * cap, peak), CALM * cap]
    rng = np.random.default_rng(seed)
    parts, phases, t = [], [], 0.0
    for k, rate in enumerate(rates):
        d = phase_s + (1.0 if k == 0 else 0.0)
        parts.append(t + bursty(rate / 2, rate / 2, 4.0, d, rng))
        phases.append((t, t + d, rate))
        t += d
    return DemoTrace(np.sort(np.concatenate(parts)), tuple(phases), cap, best, peak, speed)


SPEED_THRESHOLD = 1.2  # as the router's start-up check (RouterConfig.probe_threshold)


def machine_speed(table: ProfileTable, table_path: str, slo_s: float, cpu: int | None
                  ) -> tuple[float, list[tuple[int, int, float]]]:
    """This machine's latency / the table's for the subnets the trace is sized by (the most
    accurate and the fastest, at batch 1 and at their best batch within SLO/2), timed with one
    thread on `cpu` (the worker's; None: where this process runs), this process's CPUs
    restored after. A few seconds."""
    from superserve.experiments.simulated import most_accurate_subnet
    from superserve.profiling.retime import speed_factor

    pairs = []
    for i in {most_accurate_subnet(table), min(range(len(table)), key=lambda k: table.lat_s[k][0])}:
        fits = [b for b, lat in zip(table.batch_sizes, table.lat_s[i]) if lat <= slo_s / 2]
        best = max(fits, key=lambda b: b / table.latency_s(i, b)) if fits else 1
        pairs += [(i, 1), (i, best)]
    with on_cpu(cpu):
        return speed_factor(table_path, table.family, sorted(set(pairs)))


NOISE_PROBE_S = 3.0  # the demo's look at how steady the worker's CPU is (a shared VM's
# stalls came in clusters ~1.9 s apart: a shorter look often sees none)


def noise_note(noise: HostNoise) -> str:
    """One line for the demo's header: what the probe saw, and what it means for the runs."""
    if noise.steady():
        return (f"the worker's CPU held steady for {noise.seconds:.0f} s (no stall of >= "
                f"{noise.stall_ms:g} ms, speed within x{noise.swing:.2f})")
    return (f"the worker's CPU is NOT steady (shared?): {noise.stalls_per_s:.1f} stalls/s of "
            f">= {noise.stall_ms:g} ms (longest {noise.longest_stall_ms:.0f} ms), speed swing "
            f"x{noise.swing:.2f} within {noise.seconds:.0f} s. A stall that lands in a batch "
            "planned near its deadline costs its requests the SLO, so every policy loses some "
            "attainment, SlackFit (which fills the slack with accuracy) more than the fastest "
            "subnet (docs/calibration.md, 'A noisy host')")


def demo_runs(table: ProfileTable, quick: bool, policies: str | None = None) -> list[LiveRun]:
    """SlackFit, Clipper+ at the fastest / a middle / the most accurate subnet, INFaaS (full
    run only); or the comma list `policies` of `serve --policy` values."""
    from superserve.experiments.live import baseline_runs

    if policies:
        return [LiveRun(_name(p, table), p) for p in policies.split(",") if p.strip()]
    runs = baseline_runs(table, 1)
    return [r for r in runs if r.name != "infaas"] if quick else runs


def _name(policy: str, table: ProfileTable) -> str:
    if policy.startswith("clipper:") and policy[8:].isdigit():
        return f"clipper-{100 * table.acc[int(policy[8:])]:.2f}"
    return policy.replace(":", "-").replace("=", "").replace(",", "-")


def _phase_split(trace: DemoTrace, records) -> dict[str, dict[str, float]]:
    t = np.array([r.scheduled_s for r in records])
    met = np.array([r.deadline_met for r in records])
    acc = np.array([r.subnet_accuracy for r in records])
    out = {}
    for key, mask in (("calm", ~trace.in_bursts(t)), ("bursts", trace.in_bursts(t))):
        m = mask & met
        out[key] = {"requests": int(mask.sum()),
                    "slo_attainment": float(m.sum() / max(mask.sum(), 1)),
                    "profiled_accuracy": float(np.nanmean(acc[m])) if m.any() else 0.0}
    return out


def run_demo(args: argparse.Namespace) -> int:
    from superserve.bench.timeline import plot_timeline, plot_timelines, timeline_rows
    from superserve.experiments.live import (
        CAP_QPS,
        add_simulated,
        pin_beside_worker,
        progress_factory,
        table_args,
        write_summary,
    )

    table, common = table_args(args)
    if args.worker_kind != "torch":
        common += ["--worker-kind", args.worker_kind]
    if args.pin:
        common += pin_beside_worker()
    phase_s = args.phase_s or (2.0 if args.quick else 4.0)
    speed, speed_note = 1.0, "sized from the table"
    worker_cpu = int(common[common.index("--worker-cpus") + 1]) \
        if "--worker-cpus" in common else None
    noise = measure_host_noise(NOISE_PROBE_S, cpu=worker_cpu)  # how steady the worker's CPU is
    if args.worker_kind == "torch" and not args.size_from_table:
        measured, probes = machine_speed(table, common[common.index("--table") + 1],
                                         args.slo_ms / 1e3, worker_cpu)
        if measured > SPEED_THRESHOLD or measured < 1.0 / SPEED_THRESHOLD:
            speed = measured
            speed_note = (f"this machine runs the table's subnets x{measured:.2f} of their "
                          f"profiled latency ({len(probes)} (subnet, batch) pairs timed): "
                          "sized from that")
        else:
            speed_note = (f"this machine runs the table's subnets x{measured:.2f} of their "
                          f"profiled latency: within x{SPEED_THRESHOLD}, sized from the table")
    trace = demo_trace(table, args.slo_ms / 1e3, phase_s, args.burst_rate,
                       CAP_QPS[args.protocol], args.seed, speed=speed)
    runs = demo_runs(table, args.quick, args.policies)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    extra = " ".join(common[4:])  # after --model resnet --table PATH
    print(f"SuperServe demo: {table.family} supernet, {len(table)} served subnets, SLO "
          f"{args.slo_ms:.0f} ms, {args.protocol}; servers: default flags"
          f"{' + ' + extra if extra else ''}\n"
          f"{speed_note}\n{noise_note(noise)}\n"
          f"the most accurate subnet ({100 * table.acc[trace.subnet]:.2f}%) serves at most "
          f"{trace.capacity_qps:.0f} req/s within the SLO here; bursts go to "
          f"{trace.peak_qps:.0f} req/s\ntrace ({len(trace.arrivals_s)} requests, bursty CV^2 4 "
          f"within each phase): {trace.describe()}\nruns: {', '.join(r.name for r in runs)}",
          flush=True)
    if args.worker_kind != "torch":
        print("(profile workers answer with the subnet id, not a prediction: realized accuracy "
              "is meaningless in this run)", flush=True)
    results = compare(runs, trace.arrivals_s, args.slo_ms, out, common, protocol=args.protocol,
                      on_run=progress_factory(trace.arrivals_s))
    rows = [r.summary for r in results]
    # the simulator's ideal machine runs the latencies the trace was sized with
    add_simulated(rows, table.scaled(speed) if speed != 1.0 else table, trace.arrivals_s,
                  args.slo_ms / 1e3)
    title = f"offered load peaks at {trace.peak_qps:.0f} req/s; SLO {args.slo_ms:.0f} ms"
    cap_label = ("most accurate subnet's capacity (table)" if speed == 1.0 else
                 f"most accurate subnet's capacity (this machine: table x{speed:.2f})")
    for res, row in zip(results, rows):
        row["phases"] = _phase_split(trace, res.records)
        row["timeline"] = timeline_rows(res.records, 1.0)
        plot_timeline(res.records, out / f"{res.run.name}.timeline.png",
                      f"{res.run.name}: {title}", capacity_qps=trace.capacity_qps,
                      capacity_label=cap_label)
    plot_timelines({r.run.name: r.records for r in results}, out / "timeline.png", title,
                   capacity_qps=trace.capacity_qps, capacity_label=cap_label)
    plot_tradeoff(rows, out / "tradeoff.png", accuracy_key="realized_accuracy",
                  title="live demo: realized accuracy vs SLO attainment (up and right is better)")
    write_summary(rows, out / "summary.json", trace=trace.describe(),
                  requests_per_run=len(trace.arrivals_s), slo_ms=args.slo_ms,
                  protocol=args.protocol, capacity_qps_most_accurate=trace.capacity_qps,
                  peak_qps=trace.peak_qps, server_args=common, machine_speed=speed,
                  sizing=speed_note,
                  worker_cpu_noise=noise.to_dict())
    _report(rows, out, speed)
    return 0


def _report(rows: list[dict[str, Any]], out: Path, speed: float = 1.0) -> None:
    print()
    print_table(rows)
    print("\ncalm phases vs bursts (attainment / profiled accuracy of the requests met):")
    for r in rows:
        c, b = r["phases"]["calm"], r["phases"]["bursts"]
        print(f"  {r['name']:18s} calm {c['slo_attainment']:.4f} / "
              f"{100 * c['profiled_accuracy']:.2f}%   bursts {b['slo_attainment']:.4f} / "
              f"{100 * b['profiled_accuracy']:.2f}%")
    print("simulator, same trace and table (ideal machine: profiled latencies"
          f"{f' x{speed:.2f}' if speed != 1.0 else ''}, no overhead):")
    for r in rows:
        print(f"  {r['name']:18s} {r['sim_slo_attainment']:.4f} / "
              f"{100 * r['sim_mean_serving_accuracy']:.2f}%")
    sf = next((r for r in rows if r["policy"].startswith("slackfit")), None)
    if sf is not None and sf.get("plans"):
        print("SlackFit's batches by the rule that planned them (docs/scheduling.md, \"Which "
              f"rule planned a batch\"): {format_rules(sf['plans'])}")
    if sf is not None:
        _verdict(sf, [r for r in rows if r is not sf])
    print(f"\nplots: {out / 'timeline.png'}, {out}/<run>.timeline.png, {out / 'tradeoff.png'}; "
          f"numbers: {out / 'summary.json'}")


def _verdict(sf: dict[str, Any], others: list[dict[str, Any]]) -> None:
    acc = "realized_accuracy"
    same = [r for r in others if r["slo_attainment"] >= sf["slo_attainment"] - 1e-3]
    if same:
        best = max(same, key=lambda r: r[acc])
        print(f"\nSlackFit vs the most accurate baseline at its attainment or better "
              f"({best['name']}): {100 * (sf[acc] - best[acc]):+.2f} points of realized accuracy")
    more = [r for r in others if r["mean_serving_accuracy"] >= sf["mean_serving_accuracy"]]
    if more:
        best = max(more, key=lambda r: r["slo_attainment"])
        print(f"SlackFit vs the best baseline serving subnets at least as accurate "
              f"({best['name']}): {sf['slo_attainment']:.4f} vs {best['slo_attainment']:.4f} "
              f"SLO attainment")

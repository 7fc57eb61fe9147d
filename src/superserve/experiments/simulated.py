"""The paper's experiments (section 6), in the simulator, on one ProfileTable.

Rates: the paper's are for 8 GPUs serving OFA-ResNet50 subnets at about 2,000 (largest) to
8,000 (smallest) queries/s. Every paper rate here is multiplied by
    scale = (this table's 8-worker capacity on its most accurate subnet) / 2,000 q/s,
where a worker's capacity on a subnet is max over batch sizes b with latency(b) <= SLO/2 of
b / latency(b) (half the SLO leaves room to queue, as a batch waits for the previous one).
The scale and how it was computed go into every experiment's meta.json.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from superserve.profiling.table import ProfileTable
from superserve.scheduling import make_policy
from superserve.sim.simulator import SimConfig, SimResult, simulate
from superserve.traces import load_trace

__all__ = ["EXPERIMENTS", "Ctx", "RateScale", "capacity_qps", "frontier_gains", "rate_scale",
           "run_experiment"]

PAPER_LARGEST_QPS = 2000.0  # paper: 8 GPUs, largest OFA-ResNet50 subnet


def most_accurate_subnet(table: ProfileTable) -> int:
    """The most accurate subnet's id (the faster of equals)."""
    return max(range(len(table)), key=lambda i: (table.acc[i], -table.lat_s[i][0]))


def capacity_qps(table: ProfileTable, subnet: int, slo_s: float) -> float:
    """One worker's throughput on `subnet`: the best b / latency(b) with latency(b) <= SLO/2."""
    row = table.lat_s[subnet]
    fits = [b / lat for b, lat in zip(table.batch_sizes, row) if lat <= slo_s / 2]
    return max(fits) if fits else 1.0 / row[0]


@dataclass(frozen=True)
class RateScale:
    factor: float  # multiply every paper rate by this
    capacity_qps: float  # this table's `workers`-worker capacity on its most accurate subnet
    subnet: int  # that subnet's id
    workers: int

    @property
    def how(self) -> str:
        return (f"paper rates x {self.factor:.4f} = {self.workers} workers x "
                f"{self.capacity_qps / self.workers:.0f} q/s (subnet {self.subnet}, the most "
                f"accurate, best batch within SLO/2) / {PAPER_LARGEST_QPS:.0f} q/s (paper: 8 GPUs"
                f" on the largest subnet)")


def rate_scale(table: ProfileTable, slo_s: float, workers: int = 8) -> RateScale:
    best = most_accurate_subnet(table)
    cap = workers * capacity_qps(table, best, slo_s)
    return RateScale(cap / PAPER_LARGEST_QPS, cap, best, workers)


@dataclass
class Ctx:
    table: ProfileTable
    out: Path
    quick: bool
    slo_s: float = 0.05
    workers: int = 8
    seed: int = 0
    progress: Callable[[str], None] | None = None

    @property
    def scale(self) -> RateScale:
        return rate_scale(self.table, self.slo_s, self.workers)

    def r(self, paper_qps: float) -> float:
        return round(paper_qps * self.scale.factor, 3)

    def dur(self, full_s: float, quick_s: float) -> float:
        return quick_s if self.quick else full_s

    def run(self, trace: str, policy: str, **cfg: Any) -> SimResult:
        if self.progress:
            self.progress(f"{policy} @ {trace}")
        base = SimConfig(slo_s=self.slo_s, workers=self.workers, seed=self.seed)
        c = replace(base, **cfg)
        pol = make_policy(policy, self.table, slo_s=c.slo_s, workers=c.workers)
        return simulate(_trace(trace), self.table, pol, c)

    def clipper_specs(self, n: int = 6) -> list[str]:
        """n Clipper+ subnets spread evenly over the table's accuracy range."""
        lo, hi = min(self.table.acc), max(self.table.acc)
        ids = []
        for k in range(n):
            i = self.table.closest_by_accuracy(lo + (hi - lo) * k / (n - 1))
            if i not in ids:
                ids.append(i)
        return [f"clipper:{i}" for i in ids]


@lru_cache(maxsize=4)
def _trace(spec: str) -> np.ndarray:
    """Every policy of a cell replays the same trace: generate it once."""
    return load_trace(spec).arrivals_s


def frontier_gains(recs: list[dict[str, Any]], ours: str = "slackfit") -> dict[str, Any]:
    """SlackFit against the baselines' tradeoff frontier (the paper's headline numbers).

    The baselines' Pareto frontier (no other baseline point has both higher attainment and
    higher accuracy) is a curve attainment(accuracy), falling as accuracy rises; between its
    points it is interpolated linearly. accuracy_gain_pts: our accuracy minus the frontier's
    best accuracy at our attainment (None when no baseline reaches our attainment).
    attainment_ratio: our attainment over the frontier's at our accuracy (None when no
    baseline is that accurate: then we are more accurate than all of them). dominated_by:
    baselines with both higher attainment and higher accuracy than ours."""
    me = next(r for r in recs if r["policy"] == ours)
    base = [r for r in recs if r["policy"] != ours]
    pts = sorted({(r["mean_serving_accuracy"], r["slo_attainment"]) for r in base})
    front = [p for p in pts if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)]
    acc = np.array([p[0] for p in front])  # ascending
    att = np.array([p[1] for p in front])  # descending along the frontier
    a0, s0 = me["mean_serving_accuracy"], me["slo_attainment"]
    gain = ratio = None
    if len(front) and s0 <= att.max() + 1e-12:
        gain = 100 * (a0 - float(np.interp(s0, att[::-1], acc[::-1])))
    if len(front) and a0 <= acc.max() + 1e-12:
        at = float(np.interp(a0, acc, att))
        ratio = s0 / at if at > 0 else float("inf")
    return {"accuracy_gain_pts": gain, "attainment_ratio": ratio,
            "dominated_by": [r["policy"] for r in base
                             if r["slo_attainment"] > s0 and r["mean_serving_accuracy"] > a0],
            "frontier": [{"accuracy": float(x), "slo_attainment": float(y)} for x, y in front]}


def _rec(exp: str, cell: str, policy: str, r: SimResult, **extra: Any) -> dict[str, Any]:
    return {"experiment": exp, "cell": cell, "policy": policy,
            "slo_attainment": r.slo_attainment, "mean_serving_accuracy": r.mean_serving_accuracy,
            "latency_ms_p99": r.latency_ms_p99, "requests": r.requests, **extra}


def _baselines(ctx: Ctx) -> list[str]:
    return ctx.clipper_specs() + ["infaas"]


def fig1c(ctx: Ctx) -> list[dict[str, Any]]:
    """SLO misses as the actuation delay grows (SlackFit's plans, paying a delay per switch)."""
    trace = f"bursty:base={ctx.r(2500)},variant={ctx.r(2500)},cv2=4,duration={ctx.dur(60, 10)},seed={ctx.seed}"
    out = []
    for d_ms in ([0, 1, 5, 10, 20, 50] if not ctx.quick else [0, 5, 20, 50]):
        r = ctx.run(trace, "slackfit", actuation_s=d_ms / 1e3)
        out.append(_rec("fig1c", f"actuation_ms={d_ms}", "slackfit", r, actuation_ms=d_ms,
                        slo_miss_rate=1 - r.slo_attainment))
    _plot_actuation(out, ctx.out / "fig1c_actuation.png")
    return out


def fig8(ctx: Ctx) -> list[dict[str, Any]]:
    """MAF-like trace: SuperServe vs six Clipper+ subnets vs INFaaS; time series of SuperServe."""
    trace = f"maf:mean={ctx.r(6400)},duration={ctx.dur(120, 20)},functions=200,seed={ctx.seed}"
    out = []
    for pol in ["slackfit"] + _baselines(ctx):
        r = ctx.run(trace, pol, record_batches=pol == "slackfit")
        out.append(_rec("fig8", "maf", pol, r))
        if pol == "slackfit":
            _plot_timeseries(ctx, _trace(trace), r, ctx.out / "fig8_timeseries.png")
    _plot_scatter(out, ctx.out / "fig8_tradeoff.png", "fig8: MAF-like trace")
    return out


def fig9(ctx: Ctx) -> list[dict[str, Any]]:
    """Bursty grid: variant rate x CV^2, base rate fixed."""
    out = []
    variants = [1000, 2500, 4000] if not ctx.quick else [2500]
    cv2s = [2, 4, 8] if not ctx.quick else [2, 8]
    for v in variants:
        for cv2 in cv2s:
            cell = f"variant={v},cv2={cv2}"
            trace = (f"bursty:base={ctx.r(2500)},variant={ctx.r(v)},cv2={cv2},"
                     f"duration={ctx.dur(60, 8)},seed={ctx.seed}")
            for pol in ["slackfit"] + _baselines(ctx):
                out.append(_rec("fig9", cell, pol, ctx.run(trace, pol)))
    _plot_grid(out, ctx.out / "fig9_grid.png", "fig9: bursty (variant rate x CV^2)")
    return out


def fig10(ctx: Ctx) -> list[dict[str, Any]]:
    """Time-varying grid: end rate x acceleration, from 2,500 q/s (paper units)."""
    out = []
    ends = [5000, 6500, 7400] if not ctx.quick else [6500]
    accels = [250, 1000, 5000] if not ctx.quick else [1000, 5000]
    for end in ends:
        for acc in accels:
            cell = f"end={end},accel={acc}"
            trace = (f"timevarying:start={ctx.r(2500)},end={ctx.r(end)},accel={ctx.r(acc)},cv2=2,"
                     f"duration={ctx.dur(60, 8)},seed={ctx.seed}")
            for pol in ["slackfit"] + _baselines(ctx):
                out.append(_rec("fig10", cell, pol, ctx.run(trace, pol)))
    _plot_grid(out, ctx.out / "fig10_grid.png", "fig10: time-varying (end rate x acceleration)")
    return out


def fig11a(ctx: Ctx) -> list[dict[str, Any]]:
    """Fault tolerance: one of 8 workers killed every 12 s (capacity halves by 48 s)."""
    dur = ctx.dur(60, 50)
    kills = tuple((12.0 * k, k - 1) for k in range(1, 5))
    trace = f"bursty:base={ctx.r(1300)},variant={ctx.r(1300)},cv2=2,duration={dur},seed={ctx.seed}"
    out = []
    for pol in ["slackfit"] + _baselines(ctx):
        r = ctx.run(trace, pol, failures=kills, record_batches=pol == "slackfit")
        out.append(_rec("fig11a", "kill 1 of 8 every 12 s", pol, r, lost_batches=r.lost_batches))
        if pol == "slackfit":
            _plot_timeseries(ctx, _trace(trace), r, ctx.out / "fig11a_timeseries.png",
                             marks=[t for t, _ in kills])
    _plot_scatter(out, ctx.out / "fig11a_tradeoff.png", "fig11a: workers killed")
    return out


def fig11c(ctx: Ctx) -> list[dict[str, Any]]:
    """Policy comparison: SlackFit vs MaxBatch vs MaxAcc over rising bursty load."""
    out = []
    for v in ([1000, 2500, 4000, 5500] if not ctx.quick else [2500, 5500]):
        trace = (f"bursty:base={ctx.r(2500)},variant={ctx.r(v)},cv2=4,duration={ctx.dur(60, 8)},"
                 f"seed={ctx.seed}")
        for pol in ("slackfit", "maxbatch", "maxacc"):
            out.append(_rec("fig11c", f"variant={v}", pol, ctx.run(trace, pol)))
    _plot_grid(out, ctx.out / "fig11c_policies.png", "fig11c: SlackFit vs MaxBatch vs MaxAcc")
    return out


EXPERIMENTS: dict[str, Callable[[Ctx], list[dict[str, Any]]]] = {
    "fig1c": fig1c, "fig8": fig8, "fig9": fig9, "fig10": fig10, "fig11a": fig11a, "fig11c": fig11c,
}


def _by_cell(recs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        cells.setdefault(r["cell"], []).append(r)
    return cells


def _grid_summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's check for grids: SlackFit's worst cell, and any baseline point with both
    higher attainment and higher accuracy than SlackFit in its cell."""
    cells = _by_cell(recs)
    sf = {c: next(r for r in rs if r["policy"] == "slackfit") for c, rs in cells.items()}
    dominated = [f"{c}: {r['policy']}" for c, rs in cells.items() for r in rs
                 if r["policy"] != "slackfit" and r["slo_attainment"] > sf[c]["slo_attainment"]
                 and r["mean_serving_accuracy"] > sf[c]["mean_serving_accuracy"]]
    worst = min(sf.values(), key=lambda r: r["slo_attainment"])
    return {"slackfit_min_attainment": worst["slo_attainment"], "slackfit_worst_cell": worst["cell"],
            "slackfit_cells_at_0.999": sum(r["slo_attainment"] >= 0.999 for r in sf.values()),
            "cells": len(sf), "slackfit_dominated_by": dominated}


def _fig11c_summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for c, rs in _by_cell(recs).items():
        a = {r["policy"]: r["slo_attainment"] for r in rs}
        out[c] = {"slackfit_ge_maxbatch": a["slackfit"] >= a["maxbatch"],
                  "slackfit_ge_maxacc": a["slackfit"] >= a["maxacc"]}
    return out


SUMMARIES: dict[str, Callable[[list[dict[str, Any]]], dict[str, Any]]] = {
    "fig8": frontier_gains,
    "fig9": _grid_summary,
    "fig10": _grid_summary,
    "fig11a": lambda recs: {**frontier_gains(recs), "slackfit_attainment": next(
        r["slo_attainment"] for r in recs if r["policy"] == "slackfit")},
    "fig11c": _fig11c_summary,
}


def run_experiment(name: str, ctx: Ctx) -> list[dict[str, Any]]:
    ctx.out.mkdir(parents=True, exist_ok=True)
    records = EXPERIMENTS[name](ctx)
    with open(ctx.out / f"{name}.csv", "w", newline="") as f:
        keys = sorted({k for r in records for k in r})
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(records)
    scale = ctx.scale
    summary = SUMMARIES[name](records) if name in SUMMARIES else {}
    meta = {"experiment": name, "rate_scale": scale.factor, "scale_how": scale.how,
            "capacity_qps": scale.capacity_qps, "capacity_subnet": scale.subnet,
            "slo_ms": ctx.slo_s * 1e3, "workers": ctx.workers, "quick": ctx.quick,
            "seed": ctx.seed, "table_family": ctx.table.family,
            "table_device": ctx.table.device, "table_threads": ctx.table.threads,
            "table_subnets": len(ctx.table), "table_sha256": hashlib.sha256(json.dumps(
                ctx.table.to_dict(), sort_keys=True).encode()).hexdigest(), "summary": summary}
    (ctx.out / f"{name}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return records


# ---------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_scatter(recs: list[dict[str, Any]], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in recs:
        star = r["policy"].startswith("slackfit")
        ax.scatter(r["slo_attainment"], 100 * r["mean_serving_accuracy"], s=160 if star else 50,
                   marker="*" if star else "o", label=r["policy"])
    ax.set_xlabel("SLO attainment")
    ax.set_ylabel("mean serving accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_actuation(recs: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["actuation_ms"] for r in recs], [100 * r["slo_miss_rate"] for r in recs], "o-")
    ax.set_xlabel("actuation delay per subnet switch (ms)")
    ax.set_ylabel("SLO misses (%)")
    ax.set_title("fig1c: SLO misses as the actuation delay grows (SlackFit)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_grid(recs: list[dict[str, Any]], path: Path, title: str) -> None:
    plt = _plt()
    cells = list(dict.fromkeys(r["cell"] for r in recs))
    pols = list(dict.fromkeys(r["policy"] for r in recs))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 1.1 * len(cells)), 6), sharex=True)
    x = np.arange(len(cells))
    w = 0.8 / len(pols)
    for k, p in enumerate(pols):
        rs = {r["cell"]: r for r in recs if r["policy"] == p}
        axes[0].bar(x + k * w, [rs[c]["slo_attainment"] for c in cells], w, label=p)
        axes[1].bar(x + k * w, [100 * rs[c]["mean_serving_accuracy"] for c in cells], w)
    axes[0].set_ylabel("SLO attainment")
    axes[0].set_ylim(0, 1.02)
    axes[1].set_ylabel("serving accuracy (%)")
    lo = min(100 * r["mean_serving_accuracy"] for r in recs if r["mean_serving_accuracy"] > 0)
    axes[1].set_ylim(max(0, lo - 2), 100)
    axes[1].set_xticks(x + 0.4 - w / 2, cells, rotation=30, fontsize=7, ha="right")
    axes[0].legend(fontsize=7, ncol=4)
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_timeseries(ctx: Ctx, arrivals: np.ndarray, r: SimResult, path: Path,
                     marks: list[float] | None = None) -> None:
    plt = _plt()
    log = np.array(r.batch_log, dtype=float).reshape(-1, 4)
    dur = float(arrivals.max()) if len(arrivals) else 1.0
    bins = np.arange(0, dur + 1.0, 1.0)
    rate, _ = np.histogram(arrivals, bins)
    idx = np.clip(np.digitize(log[:, 0], bins) - 1, 0, len(bins) - 2)
    accs = np.array(ctx.table.acc)[log[:, 1].astype(int)] if len(log) else np.zeros(0)
    w = log[:, 2]
    with np.errstate(invalid="ignore"):
        acc_t = np.bincount(idx, accs * w, len(bins) - 1) / np.bincount(idx, w, len(bins) - 1)
        bs_t = np.bincount(idx, w, len(bins) - 1) / np.bincount(idx, minlength=len(bins) - 1)
    fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
    t = bins[:-1] + 0.5
    axes[0].plot(t, rate)
    axes[0].set_ylabel("requests/s")
    axes[1].plot(t, 100 * acc_t, color="tab:green")
    axes[1].set_ylabel("served acc. (%)")
    axes[2].plot(t, bs_t, color="tab:orange")
    axes[2].set_ylabel("mean batch")
    axes[2].set_xlabel("time (s)")
    for m in marks or []:
        for ax in axes:
            ax.axvline(m, color="red", ls=":", lw=1)
    axes[0].set_title(f"SlackFit: attainment {r.slo_attainment:.4f}, accuracy "
                      f"{100 * r.mean_serving_accuracy:.2f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

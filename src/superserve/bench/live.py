"""Live experiments: real servers started here, real load from the open-loop generator.

One run = one server process (one policy) + one trace replayed against it. `compare` runs
several policies on the same trace side by side and writes CSV, per-run time series and a
tradeoff scatter (accuracy vs SLO attainment, the paper's Fig. 8a/9 shape, live).
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superserve.bench.loadgen import (
    LoadgenConfig,
    RequestRecord,
    plot_timeseries,
    run_loadgen,
    summarize,
    write_csv,
)
from superserve.bench.server_proc import ServerProcess, plan_rules

log = logging.getLogger(__name__)

__all__ = ["LiveRun", "compare", "place_labels", "plot_tradeoff", "print_table", "run_live"]


@dataclass(frozen=True)
class LiveRun:
    """One server configuration to measure."""

    name: str  # label in tables and plots
    policy: str  # --policy of `superserve serve`
    workers: int = 1
    extra_args: tuple[str, ...] = ()
    kill_every_s: float = 0.0  # > 0: SIGKILL one worker at this interval during the run


@dataclass
class LiveResult:
    run: LiveRun
    summary: dict[str, Any]
    records: list[RequestRecord] = field(repr=False, default_factory=list)
    kills: list[float] = field(default_factory=list)


def _killer(srv: ServerProcess, every_s: float, stop: threading.Event, t0: float,
            kills: list[float]) -> None:
    import os
    import signal

    while not stop.wait(every_s):
        pids = srv.worker_pids()
        if pids:
            try:
                os.kill(pids[0], signal.SIGKILL)
                kills.append(time.perf_counter() - t0)
                log.info("killed worker pid %d", pids[0])
            except ProcessLookupError:
                pass


def run_live(run: LiveRun, arrivals_s: Sequence[float], slo_ms: float, out_dir: Path,
             common_args: Sequence[str] = (), protocol: str = "http",
             on_record: Callable[[RequestRecord], None] | None = None) -> LiveResult:
    from superserve.data import load_mnist

    x, y = load_mnist().test
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["--policy", run.policy, "--workers", str(run.workers), "--slo-ms", str(slo_ms),
            *common_args, *run.extra_args]
    with ServerProcess(args, out_dir / f"{run.name}.server.log") as srv:
        url = srv.http_url if protocol == "http" else srv.grpc_url
        cfg = LoadgenConfig(url=url, slo_ms=slo_ms, protocol=protocol,
                            max_duration_s=float(max(arrivals_s, default=0.0)) + 60.0)
        _warmup(cfg, x, y)
        before = _scrape(srv)
        stop, kills = threading.Event(), []
        t0 = time.perf_counter()
        killer = None
        if run.kill_every_s > 0:
            killer = threading.Thread(target=_killer, args=(srv, run.kill_every_s, stop, t0, kills),
                                      daemon=True)
            killer.start()
        try:
            records = asyncio.run(run_loadgen(cfg, arrivals_s, x, y, on_record=on_record))
        finally:
            stop.set()
            if killer is not None:
                killer.join(5)
        after = _scrape(srv)
    summary = summarize(records, slo_ms)
    summary.update(name=run.name, policy=run.policy, workers=run.workers, kills=len(kills),
                   plans=plan_rules(before, after) if before and after else {})
    write_csv(records, out_dir / f"{run.name}.requests.csv")
    plot_timeseries(records, out_dir / f"{run.name}.timeseries.png",
                    title=f"{run.name}: attainment {summary['slo_attainment']:.4f}")
    return LiveResult(run, summary, records, kills)


def _scrape(srv: ServerProcess) -> dict[str, float]:
    """The server's metrics, or {} when it cannot answer (a run that killed it)."""
    try:
        return srv.metrics()
    except Exception as e:  # noqa: BLE001 -- a figure is missing, the run is not lost
        log.warning("could not read the server's /metrics: %s", e)
        return {}


def _warmup(cfg: LoadgenConfig, x: np.ndarray, y: np.ndarray, n: int = 20) -> None:
    """A few spaced requests so connection set-up and first-call costs stay out of the run."""
    asyncio.run(run_loadgen(cfg, np.arange(n) * 0.02, x, y))


def compare(runs: Sequence[LiveRun], arrivals_s: Sequence[float], slo_ms: float, out_dir: Path,
            common_args: Sequence[str] = (), protocol: str = "http",
            on_run: Callable[[LiveRun], Callable[[RequestRecord], None] | None] | None = None
            ) -> list[LiveResult]:
    """Each run on the same arrivals, one after another; `on_run(run)` may return a
    per-request callback (progress) for that run."""
    results = []
    for run in runs:
        on_record = on_run(run) if on_run else None
        results.append(run_live(run, arrivals_s, slo_ms, out_dir, common_args, protocol,
                                on_record))
        close = getattr(on_record, "close", None)
        if close is not None:
            close()
    rows = [r.summary for r in results]
    keys = ["name", "policy", "workers", "requests", "slo_attainment", "mean_serving_accuracy",
            "realized_accuracy", "latency_ms_p50", "latency_ms_p99", "max_send_lag_ms", "kills"]
    with open(out_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys + ["outcomes"])
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r.get(k) for k in keys}, "outcomes": json.dumps(r["outcomes"])})
    plot_tradeoff(rows, out_dir / "tradeoff.png")
    return results


def place_labels(points: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                 bounds: tuple[float, float, float, float] | None = None,
                 point_r: float = 6.0) -> list[tuple[float, float]]:
    """Offsets (dx, dy), in display units, of label centres from their points so that no two
    label boxes overlap each other or any point, and they stay within `bounds` (x0, y0, x1, y1)
    where possible. Greedy: labels in turn try 8 directions at growing distances and take the
    first free place, else the least-overlapping one. `sizes` are the labels' (width, height)."""
    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    dots = [(x - point_r, y - point_r, x + point_r, y + point_r) for x, y in points]
    placed: list[tuple[float, float, float, float]] = []
    offsets = []
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (px, py), (w, h) in zip(points, sizes):
        best, best_cost = (point_r + w / 2, point_r + h / 2), math.inf
        for r in (4.0, 14.0, 28.0, 46.0, 70.0, 100.0):
            for sx, sy in dirs:
                dx = sx * (point_r + r + w / 2) if sx else 0.0
                dy = sy * (point_r + r + h / 2) if sy else 0.0
                cx, cy = px + dx, py + dy
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                cost = sum(overlap(box, o) for o in placed + dots)
                if bounds is not None:
                    inside = overlap(box, bounds)
                    cost += 4 * (w * h - inside)
                cost += 1e-3 * r  # nearer is better among free places
                if cost < best_cost:
                    best, best_cost = (dx, dy), cost
            if best_cost < 1.0:
                break
        dx, dy = best
        placed.append((px + dx - w / 2, py + dy - h / 2, px + dx + w / 2, py + dy + h / 2))
        offsets.append(best)
    return offsets


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path, title: str = "",
                  accuracy_key: str = "mean_serving_accuracy") -> None:
    """Accuracy vs SLO attainment, one point per run, labels placed so none overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [r["slo_attainment"] for r in rows]
    ys = [100 * r[accuracy_key] for r in rows]
    for r, x, y in zip(rows, xs, ys):
        star = r["policy"].startswith("slackfit")
        ax.scatter(x, y, marker="*" if star else "o", s=180 if star else 60, zorder=3,
                   color="tab:red" if star else "tab:blue")
    if rows:
        span = max(xs) - min(xs) + 0.02
        ax.set_xlim(max(min(xs) - 0.3 * span, -0.02), min(max(xs) + 0.3 * span, 1.02))
        pad = 0.25 * (max(ys) - min(ys) + 0.4)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel("SLO attainment")
    ax.set_ylabel("accuracy (%)" if accuracy_key != "mean_serving_accuracy"
                  else "mean serving accuracy (%)")
    ax.set_title(title or "live: accuracy vs SLO attainment (up and right is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    pts = [tuple(ax.transData.transform((x, y))) for x, y in zip(xs, ys)]
    sizes = []
    for r in rows:
        t = ax.text(0, 0, r["name"], fontsize=8)
        bb = t.get_window_extent(renderer)
        sizes.append((bb.width + 4, bb.height + 2))
        t.remove()
    bounds = tuple(ax.get_window_extent(renderer).extents)
    for r, (px, py), (dx, dy) in zip(rows, pts, place_labels(pts, sizes, bounds)):
        x, y = ax.transData.inverted().transform((px, py))
        ax.annotate(r["name"], (x, y), xytext=(dx, dy), textcoords="offset pixels",
                    ha="center", va="center", fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6,
                                "shrinkA": 0, "shrinkB": 4})
    fig.savefig(path, dpi=fig.dpi)
    plt.close(fig)


def print_table(rows: Sequence[dict[str, Any]], file=None) -> None:
    """Profiled accuracy: the table's figure for the subnets that served the requests met;
    realized: the fraction of those requests whose answer matched the image's label."""
    head = (f"{'run':18s} {'attain':>7s} {'realized':>8s} {'profiled':>8s} {'p50 ms':>7s} "
            f"{'p99 ms':>7s} {'met':>6s} {'late':>5s} {'504':>5s} {'429/503':>7s} {'failed':>6s}"
            f" {'lag ms':>6s}")
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in rows:
        p50 = r["latency_ms_p50"] or float("nan")
        p99 = r["latency_ms_p99"] or float("nan")
        o = r["outcomes"]
        met = round(r["slo_attainment"] * r["requests"])
        print(f"{r['name']:18s} {r['slo_attainment']:7.4f} {100 * r['realized_accuracy']:7.2f}% "
              f"{100 * r['mean_serving_accuracy']:7.2f}% {p50:7.1f} {p99:7.1f} {met:6d} "
              f"{r['completed_late']:5d} {o['dropped_deadline']:5d} {o['rejected']:7d} "
              f"{o['failed']:6d} {r['max_send_lag_ms']:6.1f}", file=file)

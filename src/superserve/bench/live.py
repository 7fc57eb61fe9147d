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
from superserve.bench.server_proc import ServerProcess

log = logging.getLogger(__name__)

__all__ = ["LiveRun", "compare", "plot_tradeoff", "print_table", "run_live"]


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
             progress: Callable[[int, int], None] | None = None) -> LiveResult:
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
        stop, kills = threading.Event(), []
        t0 = time.perf_counter()
        killer = None
        if run.kill_every_s > 0:
            killer = threading.Thread(target=_killer, args=(srv, run.kill_every_s, stop, t0, kills),
                                      daemon=True)
            killer.start()
        try:
            records = asyncio.run(run_loadgen(cfg, arrivals_s, x, y, progress=progress))
        finally:
            stop.set()
            if killer is not None:
                killer.join(5)
    summary = summarize(records, slo_ms)
    summary.update(name=run.name, policy=run.policy, workers=run.workers, kills=len(kills))
    write_csv(records, out_dir / f"{run.name}.requests.csv")
    plot_timeseries(records, out_dir / f"{run.name}.timeseries.png",
                    title=f"{run.name}: attainment {summary['slo_attainment']:.4f}")
    return LiveResult(run, summary, records, kills)


def _warmup(cfg: LoadgenConfig, x: np.ndarray, y: np.ndarray, n: int = 20) -> None:
    """A few spaced requests so connection set-up and first-call costs stay out of the run."""
    asyncio.run(run_loadgen(cfg, np.arange(n) * 0.02, x, y))


def compare(runs: Sequence[LiveRun], arrivals_s: Sequence[float], slo_ms: float, out_dir: Path,
            common_args: Sequence[str] = (), protocol: str = "http",
            on_run: Callable[[LiveRun], Callable[[int, int], None] | None] | None = None
            ) -> list[LiveResult]:
    results = []
    for run in runs:
        progress = on_run(run) if on_run else None
        results.append(run_live(run, arrivals_s, slo_ms, out_dir, common_args, protocol, progress))
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


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        marker = "*" if r["policy"].startswith("slackfit") else "o"
        ax.scatter(r["slo_attainment"], 100 * r["mean_serving_accuracy"], marker=marker,
                   s=160 if marker == "*" else 60)
        ax.annotate(r["name"], (r["slo_attainment"], 100 * r["mean_serving_accuracy"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("SLO attainment")
    ax.set_ylabel("mean serving accuracy (%)")
    ax.set_title(title or "live: accuracy vs SLO attainment (up and right is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(rows: Sequence[dict[str, Any]], file=None) -> None:
    head = (f"{'run':22s} {'attain':>8s} {'prof.acc':>8s} {'real.acc':>8s} {'p50 ms':>7s} "
            f"{'p99 ms':>7s} {'dropped':>7s} {'late':>5s} {'lag ms':>7s}")
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in rows:
        p50 = r["latency_ms_p50"] or float("nan")
        p99 = r["latency_ms_p99"] or float("nan")
        print(f"{r['name']:22s} {r['slo_attainment']:8.4f} {100 * r['mean_serving_accuracy']:8.2f} "
              f"{100 * r['realized_accuracy']:8.2f} {p50:7.1f} {p99:7.1f} "
              f"{r['outcomes']['dropped_deadline']:7d} {r['completed_late']:5d} "
              f"{r['max_send_lag_ms']:7.1f}", file=file)

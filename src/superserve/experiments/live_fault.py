"""live-fault: the paper's Fig. 11a, live. Two workers serve a bursty trace that one worker
can carry; one worker is SIGKILLed every quarter of the run.

`--backend local` (default) is experiments/live.py's run (worker processes, and the same
run without kills beside it). `--backend ray` serves through `superserve serve --backend
ray` (a local Ray started by the server on 127.0.0.1): the killed process is a Ray actor,
Ray restarts it and it rejoins the router. Reported per run: requests sent, answered, lost
(no answer at all from the server: must be 0), kills, SLO attainment, served accuracy
during and after each kill, how long until the router saw the worker gone and until it was
ready again (the server's `superserve_workers_alive` gauge, polled every 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["RAY_RATE_FRACTION", "actor_pids", "run_live_experiment"]

# On the 2-core machine two worker actors, Ray's own daemons (GCS, raylet), the router and
# the load generator share two cores: the rate that the simulator sizes for one worker on a
# quiet machine is scaled by this (one quick run at the full sized rate, 1,445 req/s,
# dropped 99% of requests while the actors ran batches ~8x their profiled latency).
RAY_RATE_FRACTION = 0.25


def run_live_experiment(name: str, args: argparse.Namespace, out: Path) -> list[dict]:
    if getattr(args, "backend", "local") == "local":
        from superserve.experiments import live

        rows = live.run_live_experiment(name, args, out)
        for r in rows:
            r.setdefault("backend", "local")
            r.setdefault("lost", r.get("requests", 0) - _answered(r))
        return rows
    return [_run_ray(name, args, out)]


def _answered(row: dict[str, Any]) -> int:
    return sum(row.get("outcomes", {}).values())


def actor_pids(root_pid: int) -> list[int]:
    """PIDs of the Ray worker actors among the descendants of `root_pid` (the server, which
    started the local Ray), found by their process title."""
    from superserve.runtime.ray_pool import ACTOR_NAME

    title = f"ray::{ACTOR_NAME}".encode()
    pids, todo, seen = [], [root_pid], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(title):
            pids.append(pid)
    return sorted(pids)


def _alive(url: str) -> int | None:
    import httpx

    try:
        text = httpx.get(f"{url}/metrics", timeout=1.0).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("superserve_workers_alive "):
            return int(float(line.split()[1]))
    return None


def _oldest(pids: list[int]) -> int:
    """The longest-running process: a worker that is serving, not one still restarting."""
    def started(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            return 1 << 62
    return min(pids, key=started)


def _killer(srv: Any, every_s: float, until_s: float, n_workers: int, stop: threading.Event,
            t0: float, kills: list[dict[str, float]]) -> None:
    """SIGKILL one worker actor every `every_s` (postponed while the previous victim is not
    back); meanwhile poll the server's live-workers gauge to time how long each kill kept a
    worker out."""
    next_kill = every_s
    down = None  # the kill whose worker is not back yet
    while not stop.wait(0.05):
        now = time.perf_counter() - t0
        # one worker down at a time: a kill falls due on schedule, or when the previous
        # victim is back if that is later (a restart takes ~15-20 s on the shared machine)
        if until_s > next_kill <= now and down is None:
            next_kill = max(next_kill + every_s, now + 1.0)
            pids = actor_pids(srv.proc.pid)
            if pids:
                pid = _oldest(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                down = {"at_s": now, "pid": pid, "detected_s": float("nan"),
                        "recovered_s": float("nan")}
                kills.append(down)
                log.info("killed worker actor pid %d at %.1f s", pid, now)
        if down is not None:
            alive = _alive(srv.http_url)
            if alive is not None and alive < n_workers and np.isnan(down["detected_s"]):
                down["detected_s"] = now - down["at_s"]  # the router knows it is gone
            elif alive == n_workers and not np.isnan(down["detected_s"]):
                down["recovered_s"] = now - down["at_s"]  # ... and it is back
                down = None


def _wait_all_ready(url: str, n: int, timeout_s: float = 300.0) -> None:
    end = time.monotonic() + timeout_s
    while _alive(url) != n:
        if time.monotonic() > end:
            raise TimeoutError(f"not all {n} workers were ready within {timeout_s:.0f} s")
        time.sleep(0.2)


def _window(records: list[Any], lo: float, hi: float) -> dict[str, Any]:
    rs = [r for r in records if lo <= r.scheduled_s < hi]
    met = [r for r in rs if r.deadline_met]
    accs = [r.subnet_accuracy for r in met if not np.isnan(r.subnet_accuracy)]
    return {"from_s": round(lo, 3), "to_s": round(hi, 3), "requests": len(rs),
            "slo_attainment": len(met) / len(rs) if rs else None,
            "mean_serving_accuracy": float(np.mean(accs)) if accs else None}


def _run_ray(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from superserve.bench.loadgen import LoadgenConfig, run_loadgen, summarize, write_csv
    from superserve.bench.server_proc import ServerProcess
    from superserve.data import load_mnist
    from superserve.experiments.live import CAP_QPS, sized_rate, table_args
    from superserve.traces import load_trace

    table, common = table_args(args)
    slo_s, workers = args.slo_ms / 1e3, 2
    # kills far enough apart: a restarted actor loads and warms up every subnet at
    # every batch size before it rejoins (~15 s measured on the shared 2-core machine)
    dur = 45 if args.quick else 90
    # ONE worker's load (x RAY_RATE_FRACTION: see there)
    rate = RAY_RATE_FRACTION * sized_rate(table, slo_s, 1, cap_qps=CAP_QPS[args.protocol])
    spec = f"bursty:base={rate / 2},variant={rate / 2},cv2=2,duration={dur},seed={args.seed}"
    arrivals = load_trace(spec).arrivals_s
    x, y = load_mnist().test
    out.mkdir(parents=True, exist_ok=True)
    serve = ["--backend", "ray", "--policy", "slackfit", "--workers", str(workers),
             "--slo-ms", str(args.slo_ms), *common]
    every_s = dur / 3  # kills at 1/3 and 2/3 of the run
    kills: list[dict[str, float]] = []
    with ServerProcess(serve, out / "ray.server.log", ready_timeout_s=300) as srv:
        url = srv.http_url if args.protocol == "http" else srv.grpc_url
        cfg = LoadgenConfig(url=url, slo_ms=args.slo_ms, protocol=args.protocol,
                            max_duration_s=float(max(arrivals)) + 60.0)
        _wait_all_ready(srv.http_url, workers)  # the server is ready at its first worker
        asyncio.run(run_loadgen(cfg, np.arange(20) * 0.02, x, y))  # warm-up
        stop = threading.Event()
        t0 = time.perf_counter()
        killer = threading.Thread(target=_killer, daemon=True,
                                  args=(srv, every_s, dur - 1.0, workers, stop, t0, kills))
        killer.start()
        try:
            records = asyncio.run(run_loadgen(cfg, arrivals, x, y))
        finally:
            stop.set()
            killer.join(5)
    s = summarize(records, args.slo_ms)
    lost = sum(1 for r in records if not r.status)  # no status: the server never answered
    edges = [k["at_s"] for k in kills] + [float(dur)]
    per_kill = []
    for k, nxt in zip(kills, edges[1:], strict=True):
        rec_s = k["recovered_s"] if not np.isnan(k["recovered_s"]) else nxt - k["at_s"]
        per_kill.append({**k, "during": _window(records, k["at_s"], k["at_s"] + rec_s),
                         "after": _window(records, k["at_s"] + rec_s, nxt)})
    row = {"experiment": name, "cell": spec, "policy": "slackfit", "backend": "ray",
           "name": "slackfit-2w-ray-kills", "workers": workers, "requests": s["requests"],
           "answered": s["requests"] - lost, "lost": lost, "kills": len(kills),
           "slo_attainment": s["slo_attainment"],
           "mean_serving_accuracy": s["mean_serving_accuracy"],
           "realized_accuracy": s["realized_accuracy"], "outcomes": s["outcomes"],
           "latency_ms_p50": s["latency_ms_p50"], "latency_ms_p99": s["latency_ms_p99"],
           "kill_every_s": every_s, "per_kill": per_kill,
           "before_first_kill": _window(records, 0.0, edges[0])}
    write_csv(records, out / "ray.requests.csv")
    (out / "summary.json").write_text(json.dumps(row, indent=1) + "\n")
    _plot(records, kills, out / "ray.fault.png",
          f"live fault on Ray: {len(kills)} kills, attainment {s['slo_attainment']:.4f}, "
          f"lost {lost}")
    if not args.json:
        print(f"ray live-fault: {row['requests']} requests, {row['answered']} answered, "
              f"{lost} lost, {len(kills)} kills, attainment {row['slo_attainment']:.4f}, "
              f"served accuracy {100 * row['mean_serving_accuracy']:.2f}%")
        for i, k in enumerate(per_kill):
            print(f"  kill {i} at {k['at_s']:.1f} s: seen after {k['detected_s']:.2f} s, ready "
                  f"again after {k['recovered_s']:.2f} s;"
                  f" during {_fmt(k['during'])}; after {_fmt(k['after'])}")
        print(f"results and plot in {out}")
    return row


def _fmt(w: dict[str, Any]) -> str:
    if not w["requests"]:
        return "no requests"
    acc = w["mean_serving_accuracy"]
    return (f"{w['requests']} req, attainment {w['slo_attainment']:.4f}, accuracy "
            f"{100 * acc:.2f}%" if acc is not None else f"{w['requests']} req, none met")


def _plot(records: list[Any], kills: list[dict[str, float]], path: Path, title: str,
          bin_s: float = 1.0) -> None:
    """Attainment and served accuracy per second, kills as red lines, the time until the
    killed worker was ready again shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    t = np.array([r.scheduled_s for r in records])
    idx = (t / bin_s).astype(int)
    nb = int(idx.max()) + 1
    n = np.bincount(idx, minlength=nb)
    met = np.bincount(idx, weights=[float(r.deadline_met) for r in records], minlength=nb)
    acc = np.array([r.subnet_accuracy if r.deadline_met and not np.isnan(r.subnet_accuracy)
                    else 0.0 for r in records])
    acc_sum = np.bincount(idx, weights=acc, minlength=nb)
    x = (np.arange(nb) + 0.5) * bin_s
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        a1.plot(x, met / n, marker=".")
        a2.plot(x, 100 * acc_sum / met, marker=".", color="tab:green")
    for k in kills:
        for ax in (a1, a2):
            ax.axvline(k["at_s"], color="tab:red", lw=1)
            if not np.isnan(k["recovered_s"]):
                ax.axvspan(k["at_s"], k["at_s"] + k["recovered_s"], color="tab:red", alpha=0.1)
    a1.set_ylabel("SLO attainment")
    a1.set_ylim(0, 1.05)
    a2.set_ylabel("served accuracy (%)")
    a2.set_xlabel("time (s); red: a worker killed, shaded until it is ready again")
    a1.set_title(title, fontsize=10)
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

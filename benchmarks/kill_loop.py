"""Crash safety, as a client sees it (issue #15 item 7): a worker killed again and again under
steady load, then the router killed with SIGKILL.

Starts `superserve serve --worker-kind noop --workers 1` (no compute: what is measured is the
pool's restart path and the front end), sends one-image requests open loop at `--rate` for the
whole run, and every `--every-s` sends SIGKILL to the worker process (`--kills` times). The
client's view: responses by status and message (503 "no worker is ready" while none is up),
requests lost (no response at all), and after each kill the time until the next 200 (the
outage). The server's view: its "restarting worker ... in X s" lines (the back-off). Then the
router itself gets SIGKILL and its children (workers, decode processes) are watched: how many
are still alive 1, 3 and 10 s later (orphans; they must leave by themselves).

    nice -n 19 .venv/bin/python benchmarks/kill_loop.py --json

Loopback only; bounded in count and time. Every process it started is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    p.add_argument("--kills", type=int, default=6, help="worker kills (6)")
    p.add_argument("--every-s", type=float, default=2.0, help="seconds between kills (2)")
    p.add_argument("--slo-ms", type=float, default=1000.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.kills > 50 or args.rate > 500:
        p.error("at most 50 kills and 500 req/s")

    from superserve.bench.loadgen import LoadgenConfig, run_loadgen
    from superserve.bench.server_proc import ServerProcess

    logdir = Path(tempfile.mkdtemp(prefix="superserve-killloop-"))
    duration = (args.kills + 3) * args.every_s
    srv = ServerProcess(["--worker-kind", "noop", "--workers", "1", "--slo-ms",
                         str(args.slo_ms)], logdir / "server.log")
    srv.start()
    kills: list[tuple[float, int]] = []  # (seconds since the load started, pid killed)
    orphans: dict[str, int] = {}
    try:
        cfg = LoadgenConfig(url=srv.http_url, slo_ms=args.slo_ms, timeout_s=10.0,
                            max_duration_s=duration + 30)
        images = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
        labels = np.zeros(16, dtype=int)
        arrivals = np.arange(int(args.rate * duration)) / args.rate

        async def run() -> list[Any]:
            load = asyncio.ensure_future(run_loadgen(cfg, arrivals, images, labels))
            t0 = time.monotonic()
            for k in range(args.kills):
                await asyncio.sleep(max(0.0, (k + 1) * args.every_s - (time.monotonic() - t0)))
                for pid in srv.worker_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append((time.monotonic() - t0, pid))
                    except ProcessLookupError:
                        pass
            return await load

        recs = asyncio.run(run())
        router = srv.proc.pid  # type: ignore[union-attr]
        children = _descendants(router)
        os.kill(router, signal.SIGKILL)
        t_kill = time.monotonic()
        srv.proc.wait(10)  # type: ignore[union-attr]
        for at in (1.0, 3.0, 10.0):
            time.sleep(max(0.0, t_kill + at - time.monotonic()))
            orphans[f"after_{at:g}s"] = sum(_alive(c) for c in children)
    finally:
        srv.stop(grace_s=5)  # and SIGKILL to its process group: whatever was left
    log = srv.log_path.read_text(errors="replace")
    backoffs = [float(x) for x in re.findall(r"restarting worker \d+ in ([\d.]+) s", log)]
    ok_times = sorted(r.sent_s + r.latency_ms / 1e3 for r in recs if r.status == "200")
    outages = []
    for t, _ in kills:
        nxt = next((x for x in ok_times if x > t), None)
        outages.append(round((nxt - t) * 1e3, 1) if nxt is not None else None)
    report = {
        "rate_rps": args.rate, "duration_s": duration, "requests": len(recs),
        "by_status": dict(Counter(r.status or "no response" for r in recs)),
        "lost": sum(1 for r in recs if not r.status),
        "messages": dict(Counter(f"{r.status} {r.message[:70]}" for r in recs
                                 if r.status not in ("200", "")).most_common(4)),
        "kills": len(kills), "restarts_logged": len(backoffs), "backoffs_s": backoffs,
        "outage_ms_after_each_kill": outages,
        "router_children_at_sigkill": len(children), "orphans_alive": orphans,
        "load_avg_1m": round(os.getloadavg()[0], 2), "server_log": str(srv.log_path),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:28s} {v}")
    return 0 if report["lost"] == 0 and orphans.get("after_10s", 1) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

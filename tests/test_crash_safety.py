"""Crash safety of the local process pool (issue 15, item 7), with real worker processes
(noop kind: no model): workers ignore SIGINT/SIGTERM sent to the process group and leave
when told; a router killed with SIGKILL leaves no orphans; a worker killed again and again is
restarted with growing back-off while the front end answers 503 with a message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest

from conftest import ServerThread, synthetic_table
from superserve.runtime.pool import LocalProcessPool
from superserve.runtime.worker import WorkerConfig

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, Linux ppid")


class Listener:
    def __init__(self) -> None:
        self.ready: list[int] = []
        self.lost: list[str] = []

    def worker_ready(self, wid):
        self.ready.append(wid)

    def batch_done(self, *a):
        pass

    def batch_failed(self, *a):
        pass

    def worker_lost(self, wid, reason):
        self.lost.append(reason)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


async def _until(cond, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_workers_ignore_group_signals_and_leave_when_told():
    async def main():
        pool = LocalProcessPool(WorkerConfig(kind="noop"), 1)
        ls = Listener()
        pool.start(ls)
        try:
            await _until(lambda: ls.ready, 60)
            pid = pool.pid(0)
            for sig in (signal.SIGINT, signal.SIGTERM):
                os.kill(pid, sig)  # what Ctrl-C or `kill -TERM -PGID` delivers to it
            await asyncio.sleep(0.5)
            assert _alive(pid) and not ls.lost
        finally:
            t0 = time.monotonic()
            await pool.close(timeout_s=10)
            assert time.monotonic() - t0 < 5  # it left on ("stop",), not by SIGKILL
        assert not _alive(pid)

    asyncio.run(main())


ROUTER = textwrap.dedent("""
    import asyncio, sys
    from superserve.runtime.pool import LocalProcessPool
    from superserve.runtime.worker import WorkerConfig

    class L:
        def worker_ready(self, wid): print("READY", pool.pid(wid), flush=True)
        def batch_done(self, *a): pass
        def batch_failed(self, *a): pass
        def worker_lost(self, *a): pass

    async def main():
        global pool
        pool = LocalProcessPool(WorkerConfig(kind="noop"), 2)
        pool.start(L())
        await asyncio.sleep(120)

    asyncio.run(main())
""")


def test_router_sigkill_leaves_no_orphans():
    proc = subprocess.Popen([sys.executable, "-c", ROUTER], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        end = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < end:
            line = proc.stdout.readline()
            if line.startswith("READY"):
                pids.append(int(line.split()[1]))
        assert len(pids) == 2, "workers did not start"
        proc.kill()
        proc.wait(10)
        t0 = time.monotonic()
        while any(_alive(p) for p in pids) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        gone_s = time.monotonic() - t0
        assert not any(_alive(p) for p in pids), "orphaned workers"
        assert gone_s < 3.0, gone_s
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_worker_kill_loop_503_then_recovers_with_backoff():
    s = ServerThread(synthetic_table(), lambda t, c: LocalProcessPool(WorkerConfig(kind="noop"), 1))
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "data": np.zeros(784).tolist()}], "parameters": {"slo_ms": 2000}}
    url = f"{s.http}/v2/models/resnet/infer"
    pool = s.running.pool
    try:
        pool.crash_window_s = 60.0
        backoffs, saw_503 = [], []
        for _ in range(3):
            assert httpx.post(url, json=body, timeout=10).status_code == 200
            s.loop.call_soon_threadsafe(pool.kill, 0)
            end = time.monotonic() + 10
            while s.running.router.ready_workers and time.monotonic() < end:
                time.sleep(0.005)
            r = httpx.post(url, json=body, timeout=10)
            if r.status_code == 503:  # the restart can beat us: then this one is served
                saw_503.append(r.json()["error"])
                assert r.headers["retry-after"] == "1"
            else:
                assert r.status_code == 200, r.text
            backoffs.append(pool.last_backoff_s)
            end = time.monotonic() + 60
            while not s.running.router.ready_workers and time.monotonic() < end:
                time.sleep(0.02)
        assert backoffs[0] == 0.0 and backoffs[1] > 0 and backoffs[2] > backoffs[1]
        assert len(saw_503) >= 2 and all("no worker is ready" in m for m in saw_503)
        assert httpx.post(url, json=body, timeout=10).status_code == 200
        assert pool.restarts == 3
    finally:
        s.close()


def test_ctrl_c_to_the_process_group_drains_without_losing_workers(tmp_path):
    """`superserve serve` in its own session; SIGINT to the whole group (a terminal's Ctrl-C)
    as soon as one worker is ready (the other may still be starting): the server drains and
    exits 0, its workers are not lost (nor restarted) on the way."""
    table = tmp_path / "resnet.json"
    synthetic_table().save(table)
    proc = subprocess.Popen(
        [sys.executable, "-m", "superserve.cli", "-v", "serve", "--table", str(table),
         "--worker-kind", "noop", "--http-port", "0", "--grpc-port", "-1", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = []
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("superserve: serving"):  # the ready line: signals handled
                break
        assert any(x.startswith("superserve: serving") for x in out), "".join(out)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        out.append(rest)
        text = "".join(out)
        assert proc.returncode == 0, text
        assert " lost" not in text and "restarting worker" not in text, text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_bench_soak_short_run_reports_growth_and_no_loss():
    import json as _json

    proc = subprocess.run([sys.executable, "-m", "superserve.cli", "bench", "soak",
                           "--duration", "4", "--max-rate", "50", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = _json.loads(proc.stdout)
    assert rep["lost"] == 0 and rep["requests"] > 50 and rep["server_exit_code"] == 0
    for key in ("rss_growth_after_warmup", "fd_growth", "requests", "lost"):
        assert key in rep

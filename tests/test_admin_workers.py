"""Workers added and removed while serving (server/admin.py, `superserve workers`), on the local
process pool; the same on a 2-node Ray cluster is in tests/test_ray_backend.py (it shares that
module's cluster), with the helpers here.

Under load: a worker added joins the router, a worker removed is drained first (its batch in
flight completes, nothing is re-queued), and every request sent meanwhile ends in exactly one
terminal state.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from conftest import ServerThread, synthetic_table
from superserve.runtime.pool import LocalProcessPool
from superserve.runtime.worker import WorkerConfig

BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                    "data": [0.0] * 784}], "parameters": {"slo_ms": 5000}}


class PatientServer(ServerThread):
    """conftest's ServerThread, waiting up to 120 s for the first worker (a Ray actor's start
    on a loaded machine can take longer than its 30 s)."""

    async def _start(self):
        from superserve.runtime.clock import LoopClock
        from superserve.scheduling import make_policy
        from superserve.server.app import start_server

        pool = self._make_pool(self.table, LoopClock())
        policy = make_policy(self._policy, self.table, slo_s=self.cfg.default_slo_s)
        running = await start_server(self.cfg, self.table, policy, pool)
        await running.wait_ready(120)
        return running


class TerminalTee:
    """Wraps the server's RouterListener (its metrics): counts terminal states per request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count: Counter[int] = Counter()

    def on_terminal(self, result: Any) -> None:
        self.count[result.request_id] += 1
        self.inner.on_terminal(result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def tee_terminals(srv: ServerThread) -> TerminalTee:
    tee = TerminalTee(srv.running.router.listener)
    srv.running.router.listener = tee
    return tee


async def wait_workers(client: httpx.AsyncClient, cond, timeout_s: float = 120.0) -> list:
    end = time.monotonic() + timeout_s
    while True:
        r = await client.get("/v2/admin/workers")
        assert r.status_code == 200, r.text
        workers = r.json()["workers"]
        if cond(workers):
            return workers
        assert time.monotonic() < end, f"workers never reached the state wanted: {workers}"
        await asyncio.sleep(0.05)


def ready_ids(workers: list) -> list[int]:
    return sorted(w["id"] for w in workers if w["state"] == "ready")


async def add_and_remove_under_load(srv: ServerThread, max_requests: int = 600) -> dict[str, Any]:
    """Load at ~100 req/s (bounded in count and time) while one worker is added, then worker 0
    is removed; the answers and what the admin calls said."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=srv.http, timeout=60) as client:
        done = asyncio.Event()

        async def admin() -> None:
            r = await client.post("/v2/admin/workers", json={"count": 1})
            assert r.status_code == 200, r.text
            out["added"] = r.json()["added"]
            await wait_workers(client, lambda ws: len(ready_ids(ws)) == 2)
            out["metrics_two"] = (await client.get("/metrics")).text
            await asyncio.sleep(0.3)  # both serve a while
            t0 = time.monotonic()
            r = await client.delete("/v2/admin/workers/0")
            out["remove_s"] = time.monotonic() - t0
            assert r.status_code == 200, r.text
            out["removed"] = r.json()
            out["metrics_one"] = (await client.get("/metrics")).text
            await asyncio.sleep(0.3)  # the one left serves a while
            done.set()

        async def infer() -> httpx.Response:
            return await client.post("/v2/models/resnet/infer", json=BODY)

        admin_task = asyncio.ensure_future(admin())
        sent: list[asyncio.Future] = []
        end = time.monotonic() + 150
        while not done.is_set() and len(sent) < max_requests and time.monotonic() < end:
            if admin_task.done():
                admin_task.result()  # an admin assertion failed: say so now
            sent.append(asyncio.ensure_future(infer()))
            await asyncio.sleep(0.01)
        await admin_task
        out["responses"] = await asyncio.gather(*sent)
        out["workers"] = (await client.get("/v2/admin/workers")).json()["workers"]
    return out


def check_nothing_lost(srv: ServerThread, tee: TerminalTee, out: dict[str, Any]) -> None:
    responses = out["responses"]
    assert [r.status_code for r in responses] == [200] * len(responses), \
        Counter(r.status_code for r in responses)
    router = srv.running.router
    assert router.open_requests == 0
    assert len(tee.count) == len(responses) and set(tee.count.values()) == {1}
    assert out["removed"]["removed"] == 0 and out["removed"]["drained"] is True
    assert router.stats.requeued == 0  # the removed worker's batch completed, not re-queued
    assert (router.stats.workers_removed, router.stats.workers_lost) == (1, 0)  # not a loss
    assert router.ready_workers == 1
    assert ready_ids(out["workers"]) == out["added"] == [1]


@pytest.fixture
def profile_table(tmp_path):
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    return table, path


def test_local_pool_worker_added_and_removed_under_load(profile_table):
    table, path = profile_table
    # 5x the profiled latency: batches of tens of ms, so worker 0 has one in flight when
    # it is removed (the drain waits for it)
    cfg = WorkerConfig(kind="profile", table_path=str(path), latency_scale=5.0)
    srv = ServerThread(table, lambda t, c: LocalProcessPool(cfg, 1))
    try:
        tee = tee_terminals(srv)
        out = asyncio.run(add_and_remove_under_load(srv))
        check_nothing_lost(srv, tee, out)
        assert 'superserve_workers_live{node="local"} 2.0' in out["metrics_two"]
        assert 'superserve_workers_live{node="local"} 1.0' in out["metrics_one"]
        assert srv.running.pool.alive() == 1
    finally:
        srv.close()


@pytest.fixture
def cert(tmp_path):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found")
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(crt), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return str(crt), str(key)


def test_admin_errors_auth_tls_and_cli(profile_table, tmp_path, cert, capsys):
    import ssl

    from superserve.cli import main

    table, _ = profile_table
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token-0123456789\n")
    auth = {"authorization": "Bearer s3cret-token-0123456789"}
    crt, key = cert
    srv = ServerThread(table, lambda t, c: LocalProcessPool(WorkerConfig(kind="noop"), 1),
                       auth_token_file=str(tokens), auth_open_health=True, tls_cert=crt,
                       tls_key=key)
    https = srv.http.replace("http://", "https://")
    try:
        with httpx.Client(base_url=https, timeout=30,
                          verify=ssl.create_default_context(cafile=crt)) as c:
            assert c.get("/v2/admin/workers").status_code == 401  # not an open path
            assert c.post("/v2/admin/workers").status_code == 401
            assert c.delete("/v2/admin/workers/0").status_code == 401
            r = c.get("/v2/admin/workers", headers=auth)
            assert r.status_code == 200
            [w] = r.json()["workers"]
            assert (w["id"], w["state"], w["node"]) == (0, "ready", "local")
            for method, path, kw, status in [
                    ("DELETE", "/v2/admin/workers/0", {}, 409),  # the last one
                    ("DELETE", "/v2/admin/workers/7", {}, 404),
                    ("DELETE", "/v2/admin/workers/x", {}, 400),
                    ("DELETE", "/v2/admin/workers/0", {"params": {"timeout_s": "-1"}}, 400),
                    ("POST", "/v2/admin/workers", {"json": {"count": 0}}, 400),
                    ("POST", "/v2/admin/workers", {"json": {"count": "2"}}, 400),
                    ("POST", "/v2/admin/workers", {"content": b"{"}, 400)]:
                r = c.request(method, path, headers=auth, **kw)
                assert r.status_code == status, (method, path, kw, r.text)
                assert "error" in r.json()

        url = ["workers", "--url", https, "--auth-token-file", str(tokens), "--cacert", crt]
        assert main([*url, "add", "--wait", "--timeout", "120"]) == 0
        assert "added worker(s) 1" in capsys.readouterr().out
        assert main([*url, "remove", "0"]) == 0
        text = capsys.readouterr().out
        assert "removed worker 0" in text and "ready" in text
        assert main([*url, "--json", "list"]) == 0
        import json

        [w] = json.loads(capsys.readouterr().out)["workers"]
        assert (w["id"], w["state"]) == (1, "ready")
        assert main(["workers", "--url", https, "--cacert", crt, "list"]) == 2  # no token
        assert "HTTP 401" in capsys.readouterr().err
        assert main(["workers", "--url", https, "--auth-token-file", str(tokens), "list"]) == 2
        assert "cannot reach" in capsys.readouterr().err  # an unknown CA: refused
        assert srv.running.router.ready_workers == 1
    finally:
        srv.close()


def test_router_retire_worker_drains_on_a_virtual_clock(table):
    """The drain itself, with no processes: a retired worker finishes its batch, gets no new
    one, and stops counting as capacity; a rejoin while retiring is retired again."""
    import numpy as np

    from conftest import GreedyPolicy
    from superserve.runtime.clock import ManualClock
    from superserve.runtime.fake import FakePool
    from superserve.runtime.router import Router, RouterConfig
    from superserve.types import Outcome

    img = np.zeros((1, 1, 28, 28), dtype=np.float32)

    async def body():
        clock = ManualClock()
        pool = FakePool(table, clock, n_workers=2)
        router = Router(GreedyPolicy(table), pool, clock, RouterConfig())
        router.start()
        clock.run_until(0.0)
        futs = [router.submit(img, slo_s=1.0) for _ in range(2)]  # one batch per worker
        assert pool.busy(0) and pool.busy(1)
        assert router.retire_worker(0) is True  # its batch is still in flight
        assert router.ready_workers == 1
        futs += [router.submit(img, slo_s=1.0) for _ in range(6)]
        sent_before = sum(1 for w, _ in pool.submitted if w == 0)
        clock.advance(0.5)
        assert router.retire_worker(0) is False  # drained
        assert sum(1 for w, _ in pool.submitted if w == 0) == sent_before == 1
        assert [f.result().outcome for f in futs] == [Outcome.COMPLETED] * 8
        assert router.stats.requeued == 0
        router.worker_ready(0)  # e.g. restarted by its pool meanwhile
        assert router.retire_worker(0) is False and router.ready_workers == 1
        futs = [router.submit(img, slo_s=1.0) for _ in range(4)]
        clock.advance(0.5)
        assert [f.result().outcome for f in futs] == [Outcome.COMPLETED] * 4
        assert all(w == 1 for w, _ in pool.submitted[-2:])

    asyncio.run(body())


def test_removal_is_logged_and_counted_apart_from_a_loss(table, caplog):
    """A worker the operator removes (retire, then the pool's removal) is logged at info as
    removed and counted in `workers_removed`; a death is a warning and `workers_lost`."""
    import logging

    from conftest import GreedyPolicy
    from superserve.runtime.clock import ManualClock
    from superserve.runtime.fake import FakePool
    from superserve.runtime.router import Router, RouterConfig

    async def body():
        clock = ManualClock()
        pool = FakePool(table, clock, n_workers=3)
        router = Router(GreedyPolicy(table), pool, clock, RouterConfig())
        router.start()
        clock.run_until(0.0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="superserve.runtime.router"):
            assert router.retire_worker(0) is False
            pool.remove_worker(0)
            removal = [(r.levelno, r.getMessage()) for r in caplog.records]
            caplog.clear()
            pool.kill(1)
            loss = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert removal == [(logging.INFO,
                            "worker 0 removed (removed by the operator); re-queued 0 images")]
        assert loss == [(logging.WARNING, "worker 1 lost (killed); re-queued 0 images")]
        assert (router.stats.workers_removed, router.stats.workers_lost) == (1, 1)
        assert router.ready_workers == 1 and sorted(pool.members()) == [1, 2]
        clock.advance(1.0)  # the killed worker restarts; the removed one never does
        assert router.ready_workers == 2 and 0 not in pool.members()

    asyncio.run(body())

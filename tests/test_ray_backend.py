"""The Ray backend on a real Ray cluster: two nodes on loopback (ray.cluster_utils.Cluster),
started once for the module and shut down after it.

- the torch worker as a Ray actor gives the same logits as a local worker process;
- actors spread over both nodes; table, norm statistics and a checkpoint travel as bytes;
- an actor SIGKILLed under load: its batch is re-queued, every request ends in exactly one
  terminal state, and Ray's restart rejoins the router;
- start-up failures are reported and retried a bounded number of times;
- workers added and removed while serving (from Python, and over the admin routes under load);
- `superserve serve --backend ray` with no address starts and stops its own local Ray.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

# a local cluster must use loopback only (read when ray is imported)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.cluster_utils import Cluster

from conftest import make_test_policy, synthetic_table
from superserve.runtime.clock import LoopClock
from superserve.runtime.pool import LocalProcessPool
from superserve.runtime.ray_pool import RayActorPool, RayPoolConfig
from superserve.runtime.router import Router, RouterConfig
from superserve.runtime.worker import WorkerConfig
from superserve.types import Outcome

IMG = np.zeros((1, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def cluster():
    kw = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **kw})
    try:
        c.add_node(**kw)
        ray.init(address=c.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


async def wait_for(cond, timeout_s=60.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


class Collect:
    """A PoolListener that records every event (for pools driven without a router)."""

    def __init__(self) -> None:
        self.ready: list[int] = []
        self.done: dict[int, np.ndarray] = {}
        self.lost: list[tuple[int, str]] = []
        self.failed: list[tuple[int, str]] = []

    def worker_ready(self, wid):
        self.ready.append(wid)

    def batch_done(self, wid, bid, logits, service_s):
        self.done[bid] = logits

    def batch_failed(self, wid, bid, message):
        self.failed.append((bid, message))

    def worker_lost(self, wid, reason):
        self.lost.append((wid, reason))


class Terminals:
    """A RouterListener counting terminal states per request id."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()

    def on_terminal(self, result):
        self.count[result.request_id] += 1

    def on_batch(self, subnet_id, batch_size):
        pass

    def on_written(self, result):
        pass

    def on_batch_timing(self, observed_s, predicted_s):
        pass


def _small_resnet_table(tmp_path: Path) -> Path:
    """Two subnets of the shipped resnet table at batches 1 and 8 (a short warm-up), with the
    shipped SubnetNorm statistics beside it."""
    from superserve.profiling import default_table_path
    from superserve.profiling.table import ProfileTable

    src = default_table_path("resnet")
    t = ProfileTable.load(src)
    small = t.cut([0, len(t) - 1], (1, 8))
    path = tmp_path / "small.json"
    small.save(path)
    (tmp_path / "small.norm.pt").write_bytes(src.with_suffix(".norm.pt").read_bytes())
    return path


def test_ray_torch_actors_match_local_workers_and_spread(cluster, tmp_path):
    """The resnet supernet in Ray actors on two nodes returns the local worker's logits."""
    path = _small_resnet_table(tmp_path)
    cfg = WorkerConfig(kind="torch", model="resnet", table_path=str(path),
                       norm_path=str(path.with_suffix(".norm.pt")), device="cpu")
    images = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    from superserve.runtime.protocol import BatchTask

    async def run(pool, n):
        got = Collect()
        pool.start(got)
        try:
            await wait_for(lambda: len(got.ready) == n, timeout_s=120)
            out = {}
            for subnet in (0, 1):
                for wid in range(n):
                    bid = 10 * subnet + wid
                    pool.submit(wid, BatchTask(bid, subnet, images))
                    await wait_for(lambda b=bid: b in got.done)
                    out[(subnet, wid)] = got.done[bid]
            info = [pool.info(w) for w in range(n)]
        finally:
            await pool.close()
        return out, info

    local, local_info = asyncio.run(run(LocalProcessPool(cfg, n_workers=1), 1))
    remote, info = asyncio.run(run(RayActorPool(cfg, 2, RayPoolConfig()), 2))
    assert len({i["node_id"] for i in info}) == 2  # one actor per node
    # the same torch threads in a worker process and in an actor: as configured (1), one
    # inter-op thread (benchmarks/ray_compute.py: their compute per batch is alike)
    for i in (*local_info, *info):
        assert (i["threads"], i["torch_threads"], i["interop_threads"]) == (1, 1, 1), i
    # actor i got index i (devices[i mod n], as local worker i) and resolved its device
    assert [(i["index"], i["device"], i["gpu_ids"]) for i in info] == [(0, "cpu", []),
                                                                       (1, "cpu", [])]
    for subnet in (0, 1):
        for wid in (0, 1):
            np.testing.assert_allclose(remote[(subnet, wid)], local[(subnet, 0)], atol=1e-5)
    assert not np.allclose(local[(0, 0)], local[(1, 0)])  # the subnet did change the result


def test_ray_actor_killed_under_load_every_request_one_terminal_state(cluster, tmp_path):
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    # 10x the profiled latency: a batch is in flight long enough to kill the actor mid-way
    cfg = WorkerConfig(kind="profile", table_path=str(path), latency_scale=10.0)

    async def body():
        pool = RayActorPool(cfg, 2, RayPoolConfig(cpus_per_worker=0.5, max_restarts=2))
        terminals = Terminals()
        router = Router(make_test_policy(table), pool, LoopClock(), RouterConfig(),
                        listener=terminals)
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 2, timeout_s=60)
            futs = []
            for _ in range(30):
                futs.append(router.submit(IMG, slo_s=3.0))
                await asyncio.sleep(0.005)
            # the victim: a worker whose batch went out less than half its planned time ago,
            # so it is surely still computing it (a batch near its end may already be
            # answered on the wire, and its worker die idle); requests keep coming until one is
            loop = asyncio.get_running_loop()
            victim = None
            for _ in range(400):
                fresh = [w for w, fl in router._inflight.items()
                         if loop.time() - fl.dispatched_s < 0.5 * fl.planned_s]
                if fresh:
                    victim = fresh[0]
                    break
                futs.append(router.submit(IMG, slo_s=3.0))
                await asyncio.sleep(0.005)
            assert victim is not None, "no batch was ever seen fresh in flight"
            old_pid = pool.pid(victim)
            t_kill = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            # the death reaches the router once (ready_workers is a racy witness: a profile
            # worker can be back before the next poll)
            await wait_for(lambda: pool.losses >= 1, timeout_s=30)
            detect_s = time.monotonic() - t_kill
            for _ in range(30):
                futs.append(router.submit(IMG, slo_s=3.0))
                await asyncio.sleep(0.005)
            results = await asyncio.wait_for(asyncio.gather(*futs), timeout=60)
            n = len(futs)
            assert detect_s < 30.0 and pool.losses == 1
            assert router.stats.requeued >= 1
            assert len(results) == n and all(isinstance(r.outcome, Outcome) for r in results)
            assert [r.outcome for r in results] == [Outcome.COMPLETED] * n
            assert sorted(terminals.count) == sorted(r.request_id for r in results)
            assert set(terminals.count.values()) == {1}  # never answered twice
            await wait_for(lambda: router.ready_workers == 2, timeout_s=60)  # rejoined
            assert pool.pid(victim) != old_pid and pool.restarts == 1
            assert sum(pool.live_by_node().values()) == 2
        finally:
            await pool.close()
        assert pool.alive() == 0

    asyncio.run(body())


def test_ray_start_failure_reported_and_bounded(cluster, tmp_path):
    cfg = WorkerConfig(kind="profile", table_path=str(tmp_path / "missing.json"))

    async def body():
        pool = RayActorPool(cfg, 1, RayPoolConfig(cpus_per_worker=0.5, max_start_failures=1))
        got = Collect()
        pool.start(got)
        try:
            await wait_for(lambda: pool._members[0].removed, timeout_s=60)
            assert "missing.json" in pool.fatal[0]
            assert pool._members[0].start_failures == 2 and not got.ready
        finally:
            await pool.close()

    asyncio.run(body())


def test_ray_actor_out_of_restarts_stays_gone(cluster, tmp_path):
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    cfg = WorkerConfig(kind="profile", table_path=str(path))

    async def body():
        pool = RayActorPool(cfg, 1, RayPoolConfig(cpus_per_worker=0.25, max_restarts=0))
        got = Collect()
        pool.start(got)
        try:
            await wait_for(lambda: got.ready == [0])
            os.kill(pool.pid(0), signal.SIGKILL)  # idle: only the watch call sees it
            await wait_for(lambda: pool._members[0].removed, timeout_s=30)
            assert [w for w, _ in got.lost] == [0] and got.ready == [0]
            assert pool.alive() == 0 and pool.restarts == 0
        finally:
            await pool.close()

    asyncio.run(body())


def test_ray_workers_added_and_removed_while_serving(cluster, tmp_path):
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    cfg = WorkerConfig(kind="profile", table_path=str(path))

    async def body():
        pool = RayActorPool(cfg, 1, RayPoolConfig(cpus_per_worker=0.25))
        router = Router(make_test_policy(table), pool, LoopClock(), RouterConfig())
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 1)
            wid = pool.add_worker()
            await wait_for(lambda: router.ready_workers == 2)
            pool.remove_worker(0)
            assert router.ready_workers == 1 and pool.alive() == 1 and pool.n_workers == 1
            results = await asyncio.wait_for(asyncio.gather(
                *[router.submit(IMG, slo_s=1.0) for _ in range(10)]), timeout=30)
            assert [r.outcome for r in results] == [Outcome.COMPLETED] * 10
            assert wid == 1 and pool.alive() == 1
        finally:
            await pool.close()

    asyncio.run(body())


def test_ray_admin_adds_and_removes_worker_under_load(cluster, tmp_path):
    """The admin routes on the Ray pool, on both nodes: under load a worker is added over
    HTTP and joins, worker 0 is drained and removed (its batch completes, nothing re-queued,
    not counted as a loss), and every request sent meanwhile ends in exactly one terminal
    state (tests/test_admin_workers.py holds the shared load and checks)."""
    from test_admin_workers import (
        PatientServer,
        add_and_remove_under_load,
        check_nothing_lost,
        tee_terminals,
    )

    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    cfg = WorkerConfig(kind="profile", table_path=str(path), latency_scale=5.0)
    srv = PatientServer(table, lambda t, c: RayActorPool(cfg, 1, RayPoolConfig(
        cpus_per_worker=0.25)))
    try:
        tee = tee_terminals(srv)
        out = asyncio.run(add_and_remove_under_load(srv))
        check_nothing_lost(srv, tee, out)
        assert 'superserve_workers_live{node="127.0.0.1"} 2.0' in out["metrics_two"]
        assert 'superserve_workers_live{node="127.0.0.1"} 1.0' in out["metrics_one"]
        pool = srv.running.pool
        assert pool.losses == 0 and pool.alive() == 1 and pool.n_workers == 1
    finally:
        srv.close()


def test_ray_node_lost_worker_restarts_elsewhere_no_request_lost(cluster, tmp_path):
    """A whole node leaves under load (its raylet killed): the actor there is reported lost,
    its batch re-queued, and Ray restarts it on the node that remains. Last of the cluster
    tests: it leaves the cluster with one node."""
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    cfg = WorkerConfig(kind="profile", table_path=str(path), latency_scale=10.0)

    async def body():
        pool = RayActorPool(cfg, 2, RayPoolConfig(cpus_per_worker=0.5))
        terminals = Terminals()
        router = Router(make_test_policy(table), pool, LoopClock(), RouterConfig(),
                        listener=terminals)
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 2, timeout_s=60)
            head = cluster.head_node.node_id
            away = [w for w in (0, 1) if pool.info(w)["node_id"] != head]
            assert away, "SPREAD put both actors on the head node"
            victim = away[0]
            node = next(n for n in cluster.worker_nodes
                        if n.node_id == pool.info(victim)["node_id"])
            futs = [router.submit(IMG, slo_s=5.0) for _ in range(20)]
            await wait_for(lambda: victim in router._inflight)
            cluster.remove_node(node, allow_graceful=False)
            futs += [router.submit(IMG, slo_s=5.0) for _ in range(20)]
            results = await asyncio.wait_for(asyncio.gather(*futs), timeout=60)
            assert [r.outcome for r in results] == [Outcome.COMPLETED] * 40
            assert set(terminals.count.values()) == {1}
            await wait_for(lambda: pool.restarts == 1, timeout_s=60)  # the loss was seen
            await wait_for(lambda: router.ready_workers == 2, timeout_s=90)
            assert pool.info(victim)["node_id"] == head
            assert pool.live_by_node() == {"127.0.0.1": 2}
        finally:
            await pool.close()

    asyncio.run(body())


def test_ray_serve_command_starts_and_stops_its_own_local_ray(tmp_path):
    """`superserve serve --backend ray` with no address: a local Ray on 127.0.0.1, one
    profile worker actor, an answered request, then SIGTERM: exit 0, nothing left behind."""
    import httpx

    from superserve.bench.server_proc import ServerProcess

    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    args = ["--backend", "ray", "--worker-kind", "profile", "--table", str(path),
            "--workers", "1", "--ray-cpus-per-worker", "0.5", "--grpc-port", "-1"]
    before = _ray_daemons()
    srv = ServerProcess(args, tmp_path / "server.log", ready_timeout_s=120)
    srv.start()
    try:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                            "data": [0.0] * 784}], "parameters": {"slo_ms": 500}}
        r = httpx.post(f"{srv.http_url}/v2/models/resnet/infer", json=body, timeout=10)
        assert r.status_code == 200, r.text
        assert "subnet_id" in r.json()["parameters"]
        assert _ray_daemons() - before  # its own gcs_server and raylet
        metrics = httpx.get(f"{srv.http_url}/metrics", timeout=10).text
        assert 'superserve_workers_live{node="127.0.0.1"} 1.0' in metrics
        from superserve.experiments.live_fault import actor_pids

        assert len(actor_pids(srv.proc.pid)) == 1  # what live-fault --backend ray kills
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(60)
        left = _ray_daemons() - before
    finally:
        srv.stop(grace_s=10)
    assert code == 0, srv.log_tail()
    assert not left, f"Ray processes left behind by the server: {left}"


def _ray_daemons() -> set[int]:
    out = set()
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if b"gcs_server" in cmd or b"raylet" in cmd or b"ray::" in cmd:
            out.add(int(p.name))
    return out


def test_ray_backend_selection_and_config_validation():
    from superserve.errors import ConfigError
    from superserve.runtime.backends import make_pool
    from superserve.server.config import ServeConfig

    wcfg = WorkerConfig(kind="noop")
    assert isinstance(make_pool(ServeConfig(workers=2), wcfg), LocalProcessPool)
    pool = make_pool(ServeConfig(workers=3, backend="ray", ray_address="auto", worker_gpus=1.0,
                                 ray_cpus_per_worker=2.0, ray_max_restarts=5), wcfg)
    assert isinstance(pool, RayActorPool) and pool.n_workers == 3
    assert pool.ray_config == RayPoolConfig(address="auto", cpus_per_worker=2.0,
                                            gpus_per_worker=1.0, max_restarts=5)
    with pytest.raises(ConfigError, match="backend"):
        ServeConfig(backend="k8s")
    with pytest.raises(ConfigError, match="gpus_per_worker"):
        RayPoolConfig(gpus_per_worker=-1)

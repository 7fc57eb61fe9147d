"""Real worker processes behind the router: spawn, pipes watched by the event loop, kill -9
detection and restart with no request left unanswered, and the torch worker itself."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from conftest import make_test_policy, synthetic_table
from superserve.errors import ConfigError
from superserve.runtime import shm
from superserve.runtime.clock import LoopClock
from superserve.runtime.pool import LocalProcessPool
from superserve.runtime.router import Router, RouterConfig
from superserve.runtime.worker import WorkerConfig
from superserve.types import Outcome

IMG = np.zeros((1, 1, 28, 28), dtype=np.float32)


async def wait_for(cond, timeout_s=60.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_worker_config_validation():
    with pytest.raises(ConfigError, match="kind"):
        WorkerConfig(kind="gpu")
    with pytest.raises(ConfigError, match="threads"):
        WorkerConfig(threads=0, table_path="x")
    with pytest.raises(ConfigError, match="table_path"):
        WorkerConfig(kind="profile")
    with pytest.raises(ConfigError, match="warmup_budget_s"):
        WorkerConfig(table_path="x", warmup_budget_s=-1.0)


def test_killed_worker_detected_requeued_restarted(tmp_path):
    """kill -9 a worker in the middle of its batch under steady load: detected within a
    second, its batch re-queued, the worker restarted, and every request answered."""
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    # 10x the profiled latency, so a batch is in flight long enough to kill it mid-way
    cfg = WorkerConfig(kind="profile", table_path=str(path), latency_scale=10.0)

    async def body():
        pool = LocalProcessPool(cfg, n_workers=2)
        router = Router(make_test_policy(table), pool, LoopClock(), RouterConfig())
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 2)
            futs = []
            for _ in range(20):
                futs.append(router.submit(IMG, slo_s=2.0))
                await asyncio.sleep(0.005)
            await wait_for(lambda: router.busy_workers > 0)
            victim = next(iter(router._inflight))
            old_pid = pool.pid(victim)
            t_kill = time.monotonic()
            pool.kill(victim)
            await wait_for(lambda: router.ready_workers < 2, timeout_s=1.0)
            detect_s = time.monotonic() - t_kill
            for _ in range(20):
                futs.append(router.submit(IMG, slo_s=2.0))
                await asyncio.sleep(0.005)
            results = await asyncio.wait_for(asyncio.gather(*futs), timeout=30)
            assert detect_s < 1.0
            assert router.stats.requeued >= 1
            assert [r.outcome for r in results] == [Outcome.COMPLETED] * 40
            await wait_for(lambda: router.ready_workers == 2)
            assert pool.pid(victim) != old_pid and pool.restarts == 1
        finally:
            await pool.close()
        assert pool.alive() == 0

    asyncio.run(body())


@pytest.mark.parametrize("poll", [True, False])
def test_a_finished_batch_is_read_between_requests_in_a_busy_loop_iteration(tmp_path, poll):
    """A loop iteration busy with requests (here: one that blocks) still notices a worker's
    finished batch: the next `submit` reads it (at most once a millisecond), so the batch's
    request is answered before the iteration ends. Without the poll it waits for the loop's
    reader callback."""
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    cfg = WorkerConfig(kind="profile", table_path=str(path))

    async def body():
        pool = LocalProcessPool(cfg, n_workers=1)
        router = Router(make_test_policy(table), pool, LoopClock(), RouterConfig())
        if not poll:
            router._poll = None
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 1)
            first = router.submit(IMG, slo_s=5.0)
            await wait_for(lambda: router.busy_workers == 1)
            time.sleep(0.5)  # noqa: ASYNC251  (on purpose: the worker finishes, the loop stays)
            second = router.submit(IMG, slo_s=5.0)
            assert first.done() == poll
            results = await asyncio.wait_for(asyncio.gather(first, second), timeout=30)
            assert [r.outcome for r in results] == [Outcome.COMPLETED] * 2
        finally:
            await pool.close()

    asyncio.run(body())


def test_worker_that_cannot_start_reports_why_and_is_not_restarted_forever(tmp_path):
    cfg = WorkerConfig(kind="profile", table_path=str(tmp_path / "missing.json"))
    table = synthetic_table()

    async def body():
        pool = LocalProcessPool(cfg, n_workers=1, max_start_failures=1)
        router = Router(make_test_policy(table), pool, LoopClock())
        router.start()
        try:
            await wait_for(lambda: pool.restarts == 1 and 0 in pool.fatal and
                           not pool._slots[0].process.is_alive(), timeout_s=60)
            await asyncio.sleep(0.5)
            assert pool.restarts == 1  # gave up after max_start_failures
            assert "missing.json" in pool.fatal[0]
        finally:
            await pool.close()

    asyncio.run(body())


def _tiny_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from superserve.models import build_supernet, save_checkpoint
    from superserve.profiling.table import ProfileTable, SubnetProfile

    torch.manual_seed(0)
    net = build_supernet("resnet")
    ckpt = tmp_path / "resnet.pt"
    specs = [net.space.smallest(), net.space.largest()]
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    save_checkpoint(ckpt, net, {}, {})  # no SubnetNorm statistics inside the checkpoint
    # ... they come from the file beside the table; had the worker ignored it, it would
    # calibrate on MNIST instead and its logits would differ from these.
    net.calibrate(specs, images, n=64)
    net.norm_store.save(tmp_path / "resnet.norm.pt")
    subnets = [SubnetProfile(id=i, spec=s.to_dict(), accuracy=0.9 + 0.05 * i,
                             latency_ms={1: 1.0 + i, 8: 4.0 + 4 * i}) for i, s in enumerate(specs)]
    table = ProfileTable.build("resnet", subnets, (1, 8))
    table.save(tmp_path / "resnet.json")
    return net, table, specs, images


@pytest.mark.parametrize(("separate", "transport"), [(False, "shm"), (True, "shm"),
                                                     (False, "pipe")],
                         ids=["supernet", "separate-models", "supernet-pipe"])
def test_torch_worker_runs_supernet_with_subnet_norm(tmp_path, separate, transport):
    """The torch worker's logits equal supernet(x, spec) in this process, for each subnet;
    also when it serves separately materialized models loaded from disk (INFaaS), and with
    batches pickled through the pipe instead of shared memory. The shared-memory slabs grow
    with the batch and leave no file behind."""
    torch = pytest.importorskip("torch")
    net, table, specs, images = _tiny_checkpoint(tmp_path)
    cfg = WorkerConfig(kind="torch", model=str(tmp_path / "resnet.pt"),
                       table_path=str(tmp_path / "resnet.json"),
                       norm_path=str(tmp_path / "resnet.norm.pt"), threads=1, device="cpu",
                       separate_models=separate)

    before = _our_slabs()

    async def body():
        pool = LocalProcessPool(cfg, n_workers=1, transport=transport)

        class Policy:  # run each request on the subnet the test says
            name, subnet = "fixed", 0

            def __init__(self, table):
                self.table = table

            def decide(self, view, now_s):
                from superserve.scheduling.base import Plan

                return Plan(subnet=self.subnet, batch_size=8)

        policy = Policy(table)
        router = Router(policy, pool, LoopClock())
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 1, timeout_s=120)
            assert pool.info(0)["kind"] == "torch" and pool.info(0)["subnets"] == 2
            # the warm-up ran every batch size of the subnets that cover all layer shapes
            done, total = pool.info(0)["warmup_extra_calls"]
            assert pool.info(0)["warmup_covering"] and done == total > 0
            # the model and its plans are frozen out of the cyclic GC (runners.settle_heap)
            assert pool.info(0)["gc_frozen"] > 10_000
            out = []
            for sid, n in ((0, 1), (1, 5), (0, 8)):  # a growing batch remaps the input slab
                policy.subnet = sid
                out.append((sid, n, await router.submit(images[:n], slo_s=30.0)))
        finally:
            await pool.close()
        return out

    results = asyncio.run(body())
    assert _our_slabs() == before
    net.eval()
    with torch.inference_mode():
        for sid, n, r in results:
            assert r.outcome is Outcome.COMPLETED and r.subnet_id == sid
            want = net(torch.from_numpy(images[:n]), specs[sid]).numpy()
            np.testing.assert_allclose(r.logits, want, rtol=1e-4, atol=1e-4)


def _our_slabs() -> set[str]:
    import os

    return {f for f in os.listdir(shm._SHM_DIR) if f.startswith(f"superserve-{os.getpid()}-")}


class _ScriptedConn:
    """A worker's end of the pipe, in-process: hands out the scripted messages, keeps replies."""

    def __init__(self, messages):
        self.messages, self.sent = list(messages), []

    def recv(self):
        if not self.messages:
            raise EOFError
        return self.messages.pop(0)

    def send(self, msg):
        self.sent.append(msg)


def test_worker_batch_loop_reads_and_writes_slabs_and_falls_back_inline():
    """The worker reads a batch from the input slab and answers through the output slab;
    logits larger than the output slab come back inline; a batch announced in a slab the
    worker never mapped is an error for that batch, not a crash."""
    from superserve.runtime.worker import _serve

    tx, rx = shm.create(4 * 3 * 4, "in"), shm.create(64, "out")
    try:
        tx.view((3, 4))[...] = np.arange(12, dtype=np.float32).reshape(3, 4)

        seen = []

        def run(subnet, images):  # echo, scaled by the subnet id
            seen.append(images * subnet)
            return seen[-1]

        conn = _ScriptedConn([("run", 1, 2, (3, 4), 0.0),  # before any slab is mapped
                              ("map", "in", tx.path, tx.nbytes),
                              ("map", "out", rx.path, 16),  # room for 4 floats only
                              ("run", 2, 2, (1, 4), 0.0),
                              ("run", 3, 3, (3, 4), 0.0),
                              ("run", 4, 1, np.ones((2, 2), np.float32), 0.0),
                              ("stop",)])
        _serve(conn, run, WorkerConfig(kind="noop"))
        kinds = [m[0] for m in conn.sent]
        assert kinds == ["error", "done", "done", "done"]
        assert "could not map" in conn.sent[0][2]
        assert conn.sent[1][2] == (1, 4)  # in the output slab
        np.testing.assert_array_equal(seen[0], [[0, 2, 4, 6]])  # read from the input slab
        inline = conn.sent[2][2]  # 48 bytes do not fit in 16
        np.testing.assert_array_equal(inline, np.arange(12).reshape(3, 4) * 3)
        assert conn.sent[3][2] == (2, 2)  # an inline batch still answers through the slab
        np.testing.assert_array_equal(rx.view((2, 2)), np.ones((2, 2)))
    finally:
        tx.unlink()
        rx.unlink()


def test_start_up_probe_reaches_the_router_and_seeds_calibration(tmp_path):
    """A worker 2.5x slower than its table: its timed warm-up (the probe) says so before the
    first request, and the router starts planning from the measured factor."""
    table = synthetic_table()
    path = tmp_path / "table.json"
    table.save(path)
    cfg = WorkerConfig(kind="profile", table_path=str(path), latency_scale=2.5)

    async def body():
        pool = LocalProcessPool(cfg, n_workers=1)
        router = Router(make_test_policy(table), pool, LoopClock(), RouterConfig())
        router.start()
        try:
            await wait_for(lambda: router.ready_workers == 1)
            probe = pool.info(0)["probe"]
            assert len(probe) >= 3 and all(sec > 0 for _, _, sec in probe)
            # sleep() overshoots a little: the factor is 2.5 or a bit more
            assert 2.4 < router.probe_factor < 3.2
            assert router.calibration.scale == pytest.approx(router.probe_factor, rel=0.1)
        finally:
            await pool.close()

    asyncio.run(body())


def test_settle_heap_freezes_what_exists_out_of_the_cyclic_gc():
    """What a serving process holds from start-up on is frozen, so a full collection walks
    only what was made after it (here: in a child, so the test process stays as it is)."""
    import subprocess
    import sys

    code = ("import gc, collections; keep = [collections.OrderedDict() for _ in range(5000)]; "
            "from superserve.runtime.runners import settle_heap; n = settle_heap(); "
            "print(n, gc.get_freeze_count(), len(gc.get_objects(generation=2)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    frozen, count, gen2 = map(int, out)
    assert frozen == count >= 5000 and gen2 < 100

"""RayActorPool: the WorkerPool interface over Ray actors, for workers on other machines.

The router does not know which pool it has: each actor builds the same runner as a local
worker process (runtime/worker.py: torch, profile or noop) and runs one batch per call.

- Files travel as bytes, never as paths: the ProfileTable, the SubnetNorm statistics and a
  checkpoint given by path are read here once, put in Ray's object store, and written to a
  temporary folder on whichever node the actor lands on. A family name (`resnet`, `vit`)
  loads the checkpoint shipped inside the installed package on that node.
- Start-up failures are reported, not swallowed: the actor catches the error of building its
  runner and `ready()` returns it; the pool logs it, keeps it in `fatal`, and retries a fresh
  actor with back-off at most `max_start_failures` times in a row.
- Deaths: Ray restarts a dead actor up to `max_restarts` times (`max_task_retries=0`: a batch
  is never re-run by Ray behind the router's back). Each actor always has one blocking
  `watch()` call pending, so a death is seen at once even when the actor is idle. The first
  of (the batch, the watch) to fail reports `worker_lost` (the router re-queues the batch);
  an epoch per worker makes every later report of the same death a no-op. When the restarted
  actor answers `ready()` again it rejoins through `worker_ready`.
- Results come back as awaited ObjectRefs on the router's event loop, so every listener
  callback runs on the loop, as with the local pool.
- With no address the pool starts a local Ray on 127.0.0.1 and shuts it down on `close()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from superserve.errors import ConfigError
from superserve.runtime.protocol import BatchTask, PoolListener
from superserve.runtime.worker import WorkerConfig

log = logging.getLogger(__name__)

__all__ = ["RayActorPool", "RayPoolConfig"]

ACTOR_NAME = "SuperserveWorker"  # the actor processes' title is ray::SuperserveWorker...
PLACEMENT_WARN_S = 60.0  # a worker not ready this long after it was requested: warn


@dataclass(frozen=True)
class RayPoolConfig:
    # None: start a local Ray on 127.0.0.1 and stop it on close; "auto": the cluster that
    # `ray start` runs on this machine; "host:port" or "ray://host:10001": that cluster
    address: str | None = None
    cpus_per_worker: float = 1.0  # Ray logical CPUs each actor reserves
    gpus_per_worker: float = 0.0  # Ray GPUs each actor reserves (0: CPU workers)
    max_restarts: int = 3  # Ray restarts of one actor after it dies; then it stays gone
    max_start_failures: int = 3  # fresh actors tried in a row when start-up itself fails
    spread: bool = True  # place actors on as many nodes as possible (SPREAD)
    object_store_mb: int = 256  # local cluster only: its object store size
    # local cluster only: call arguments up to this size travel inline with the call, not
    # through the object store (Ray's default 100 KiB; measured at a 392 KiB batch: 1.6-1.9
    # vs 2.8-2.9 ms p50 per round trip, benchmarks/ray_overhead.py)
    inline_max_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker!r}")
        if not self.gpus_per_worker >= 0:
            raise ConfigError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker!r}")
        for name in ("max_restarts", "max_start_failures"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 0):
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        if not (isinstance(self.inline_max_bytes, int) and self.inline_max_bytes >= 0):
            raise ConfigError(f"inline_max_bytes must be an integer >= 0, got "
                              f"{self.inline_max_bytes!r}")
        if not (isinstance(self.object_store_mb, int) and self.object_store_mb >= 80):
            raise ConfigError(f"object_store_mb must be an integer >= 80, got "
                              f"{self.object_store_mb!r}")


def _ship(cfg: WorkerConfig) -> dict[str, bytes]:
    """The files a worker reads, as bytes (read on the router's machine)."""
    files: dict[str, bytes] = {}
    for key, path in (("table", cfg.table_path), ("norm", cfg.norm_path)):
        if path and Path(path).is_file():
            files[key] = Path(path).read_bytes()
    if Path(cfg.model).is_file():  # a checkpoint path, not a family name
        files["model"] = Path(cfg.model).read_bytes()
    return files


def _localize(cfg: WorkerConfig, files: dict[str, bytes], folder: Path) -> WorkerConfig:
    """Write shipped files to a folder of this node and point the config at them."""
    paths: dict[str, str] = {}
    for key, name in (("table", "table.json"), ("norm", "table.norm.pt"), ("model", "model.pt")):
        if key in files:
            (folder / name).write_bytes(files[key])
            paths[key] = str(folder / name)
    # a norm file that did not exist on the router's machine must not exist here either
    norm = paths.get("norm", str(folder / "missing.norm.pt") if cfg.norm_path else "")
    return replace(cfg, table_path=paths.get("table", cfg.table_path), norm_path=norm,
                   model=paths.get("model", cfg.model))


class SuperserveWorker:
    """Body of the Ray actor (wrapped with ray.remote when the pool starts). `index`: the
    worker's id, which picks its device as for local worker i (devices[i mod n]), resolved
    against the GPUs Ray assigned this actor (runtime/devices.ray_worker_device)."""

    def __init__(self, cfg: WorkerConfig, files: dict[str, bytes], index: int = 0) -> None:
        self._stop = threading.Event()
        self._run: Any = None
        self.error: str | None = None
        self.info: dict[str, Any] = {}
        try:
            import tempfile

            import ray

            from superserve.runtime.runners import make_runner, settle_heap

            gpu_ids = [str(g) for g in ray.get_gpu_ids()]
            device = None
            if cfg.kind == "torch":  # the fake kinds run on no device
                import torch

                from superserve.runtime.devices import ray_worker_device

                device = ray_worker_device(cfg.device, cfg.devices, index, gpu_ids,
                                           torch.cuda.device_count())
            # the runners read the files whole while they build, so the folder goes after
            with tempfile.TemporaryDirectory(prefix="superserve-ray-") as folder:
                local = _localize(cfg, files, Path(folder))
                self._run, self.info = make_runner(local, index, device)
            ctx = ray.get_runtime_context()
            self.info.update(index=index, pid=os.getpid(), node_id=ctx.get_node_id(),
                             node_ip=ray.util.get_node_ip_address(), gpu_ids=gpu_ids,
                             gc_frozen=settle_heap())
        except Exception as e:  # noqa: BLE001 -- reported by ready(): the pool logs it and decides
            self.error = f"{type(e).__name__}: {e}"

    def ready(self) -> tuple[str, Any]:
        return ("fatal", self.error) if self.error else ("ready", self.info)

    def run(self, subnet: int, images: Any, load_s: float) -> tuple[Any, float]:
        t0 = time.perf_counter()
        if load_s > 0:
            time.sleep(load_s)  # a simulated model load (baselines)
        return self._run(subnet, images), time.perf_counter() - t0

    def watch(self) -> None:
        """Blocks until stop(): while it is pending, the actor's death fails it at once."""
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class _Member:
    actor: Any
    epoch: int = 0  # bumped on every loss: results and watches of an older epoch are stale
    ready: bool = False
    removed: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    start_failures: int = 0


class RayActorPool:
    def __init__(self, config: WorkerConfig, n_workers: int = 1,
                 ray_config: RayPoolConfig | None = None) -> None:
        if not (isinstance(n_workers, int) and n_workers >= 0):
            raise ConfigError(f"n_workers must be an integer >= 0, got {n_workers!r}")
        self.config = config
        self.n_workers = n_workers
        self.ray_config = ray_config or RayPoolConfig()
        self._members: dict[int, _Member] = {}
        self._listener: PoolListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._started_ray = False
        self._next_id = 0
        self.restarts = 0  # times a lost worker came back (restarted by Ray) and rejoined
        self.losses = 0  # deaths reported to the router (each once)
        self.fatal: dict[int, str] = {}  # worker id -> why it could not start

    # ------------------------------------------------------------------ lifecycle
    def start(self, listener: PoolListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._started_ray = connect(self.ray_config.address, self.n_workers, self.ray_config)
        import ray  # after connect(): it sets the environment of a local cluster first
        rc = self.ray_config
        self._files = ray.put(_ship(self.config))  # held here: restarts re-read it
        opts: dict[str, Any] = {"num_cpus": rc.cpus_per_worker, "num_gpus": rc.gpus_per_worker,
                                "max_restarts": rc.max_restarts, "max_task_retries": 0,
                                "max_concurrency": 3}  # run + watch + ready/stop
        if rc.spread:
            opts["scheduling_strategy"] = "SPREAD"
        self._remote = ray.remote(SuperserveWorker).options(**opts)
        for _ in range(self.n_workers):
            self.add_worker()

    def add_worker(self) -> int:
        """Start one more actor while serving; it joins through `worker_ready`."""
        wid = self._next_id
        self._next_id += 1
        self._spawn(wid)
        self.n_workers = sum(1 for x in self._members.values() if not x.removed)
        return wid

    def remove_worker(self, wid: int) -> None:
        """Take a worker out for good while serving (not a loss: `losses` does not count it).
        The router hears `worker_lost`, so a batch still in flight is re-queued; the admin
        call drains it first (server/admin.py), so there is none."""
        m = self._members[wid]
        if m.removed:
            return
        m.removed = True
        if not self._closing:
            m.epoch += 1  # results and watches of this actor are stale from now on
            m.ready = False
            log.info("ray worker %d removed by the operator", wid)
            assert self._listener is not None
            self._listener.worker_lost(wid, "removed by the operator")
        try:
            m.actor.stop.remote()  # ends its watch call before the kill
        except Exception as e:  # noqa: BLE001 -- already dead
            log.debug("stop: %s", e)
        self._kill(m.actor)
        self.n_workers = sum(1 for x in self._members.values() if not x.removed)

    def _spawn(self, wid: int) -> None:
        if self._closing:
            return
        m = self._members.get(wid)
        actor = self._remote.remote(self.config, self._files, wid)
        if m is None:
            m = self._members[wid] = _Member(actor)
        else:  # a fresh actor after a start-up failure
            m.actor = actor
        self._bg(self._await_ready(wid, m, m.epoch))
        assert self._loop is not None
        self._loop.call_later(PLACEMENT_WARN_S, self._warn_unplaced, wid, m, actor)

    def _warn_unplaced(self, wid: int, m: _Member, actor: Any) -> None:
        """Ray waits silently for resources no node has: say so."""
        if m.actor is actor and not (m.ready or m.removed or self._closing):
            rc = self.ray_config
            log.warning("ray worker %d is not ready %.0f s after it was requested: still "
                        "warming up, or no node has %g CPUs and %g GPUs free for it (see "
                        "`ray status`)", wid, PLACEMENT_WARN_S, rc.cpus_per_worker,
                        rc.gpus_per_worker)

    def _bg(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_ready(self, wid: int, m: _Member, epoch: int) -> None:
        import ray

        try:
            kind, payload = await m.actor.ready.remote()
        except ray.exceptions.ActorUnavailableError as e:  # still restarting: ask again
            log.debug("ray worker %d not reachable yet: %s", wid, e)
            await asyncio.sleep(0.5)
            if not (self._closing or m.removed) and m.epoch == epoch:
                self._bg(self._await_ready(wid, m, epoch))
            return
        except ray.exceptions.RayActorError as e:
            if not (self._closing or m.removed):
                log.error("ray worker %d is gone for good (restarts used up, or its node "
                          "left): %s", wid, e)
                m.removed = True
            return
        if self._closing or m.removed or m.epoch != epoch:
            return
        if kind == "fatal":
            self._start_failed(wid, m, payload)
            return
        m.ready, m.info, m.start_failures = True, payload, 0
        if epoch > 0:  # back after a loss
            self.restarts += 1
        self.fatal.pop(wid, None)
        log.info("ray worker %d ready on node %s: %s", wid, payload.get("node_ip"), payload)
        self._bg(self._watch(wid, m, epoch))
        assert self._listener is not None
        self._listener.worker_ready(wid)

    def _start_failed(self, wid: int, m: _Member, message: str) -> None:
        self.fatal[wid] = message
        m.start_failures += 1
        log.error("ray worker %d could not start (%d in a row): %s", wid, m.start_failures,
                  message)
        self._kill(m.actor)
        if m.start_failures > self.ray_config.max_start_failures:
            log.error("ray worker %d: not retrying after %d failed starts", wid,
                      m.start_failures)
            m.removed = True
            return
        assert self._loop is not None
        self._loop.call_later(0.1 * (2 ** m.start_failures - 1), self._spawn, wid)

    async def _watch(self, wid: int, m: _Member, epoch: int) -> None:
        import ray

        try:
            await m.actor.watch.remote()
        except ray.exceptions.RayError as e:  # the watch only ends in an error by a death
            log.info("ray worker %d watch ended: %s", wid, type(e).__name__)
            self._lost(wid, m, epoch, f"ray actor died: {_short(e)}")

    def _lost(self, wid: int, m: _Member, epoch: int, reason: str,
              restart: bool = True) -> None:
        if m.epoch != epoch or self._closing:
            return  # this death was reported already
        m.epoch += 1
        m.ready = False
        self.losses += 1
        log.warning("ray worker %d lost: %s", wid, reason)
        assert self._listener is not None
        self._listener.worker_lost(wid, reason)
        if restart and not m.removed:
            self._bg(self._await_ready(wid, m, m.epoch))  # Ray restarts it; wait for that

    # ------------------------------------------------------------------ data path
    def submit(self, worker_id: int, task: BatchTask) -> None:
        m = self._members[worker_id]
        ref = m.actor.run.remote(task.subnet, task.images, task.load_s)
        self._bg(self._await_result(worker_id, m, m.epoch, task.batch_id, ref))

    async def _await_result(self, wid: int, m: _Member, epoch: int, batch_id: int,
                            ref: Any) -> None:
        import ray

        try:
            logits, service_s = await ref
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
            self._lost(wid, m, epoch, f"ray actor died: {_short(e)}")
            return
        except Exception as e:  # noqa: BLE001 -- the batch raised inside the actor
            if m.epoch == epoch and not self._closing:
                assert self._listener is not None
                self._listener.batch_failed(wid, batch_id, _short(e))
            return
        if m.epoch == epoch and not self._closing:
            assert self._listener is not None
            self._listener.batch_done(wid, batch_id, logits, service_s)

    # ------------------------------------------------------------------ views
    def alive(self) -> int:
        return sum(1 for m in self._members.values() if m.ready and not m.removed)

    def live_by_node(self) -> dict[str, int]:
        """Ready workers per node IP (the per-node membership view)."""
        out: dict[str, int] = {}
        for m in self._members.values():
            if m.ready and not m.removed:
                ip = str(m.info.get("node_ip", "?"))
                out[ip] = out.get(ip, 0) + 1
        return out

    def members(self) -> dict[int, dict[str, Any]]:
        return {wid: {"state": "ready" if m.ready else "starting",
                      "node": str(m.info.get("node_ip", "?")) if m.ready else None,
                      "pid": m.info.get("pid") if m.ready else None}
                for wid, m in sorted(self._members.items()) if not m.removed}

    def info(self, wid: int) -> dict[str, Any]:
        return self._members[wid].info

    def pid(self, wid: int) -> int:
        return int(self._members[wid].info["pid"])

    def kill(self, wid: int) -> None:
        """Crash a worker's actor as a fault would (Ray may restart it)."""
        import ray

        ray.kill(self._members[wid].actor, no_restart=False)

    async def close(self) -> None:
        import ray

        self._closing = True
        for m in self._members.values():
            try:
                m.actor.stop.remote()
            except Exception as e:  # noqa: BLE001 -- a dead actor: nothing to stop
                log.debug("stop: %s", e)
        for m in self._members.values():
            self._kill(m.actor)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._members.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    @staticmethod
    def _kill(actor: Any) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception as e:  # noqa: BLE001 -- already dead
            log.debug("ray.kill: %s", e)


def _short(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]


def connect(address: str | None, n_workers: int, rc: RayPoolConfig) -> bool:
    """Join the cluster at `address`, or start a local one on 127.0.0.1 when it is None.
    Returns whether a local cluster was started here (the caller shuts it down)."""
    host = (address or "").split("://")[-1].rsplit(":", 1)[0]
    if address is None or host == "localhost" or host.startswith("127."):
        # Ray's own processes connect to their node's IP; pin everything to loopback so that
        # a local cluster neither depends on nor listens on the machine's network interface
        # (read when ray is first imported, and by the processes the cluster starts)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return False
    cpus = max(os.cpu_count() or 1, int(n_workers * rc.cpus_per_worker + 0.999))
    ray.init(address="local", num_cpus=cpus, include_dashboard=False,
             object_store_memory=rc.object_store_mb * 1024 * 1024,
             _system_config={"max_direct_call_object_size": rc.inline_max_bytes},
             _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
             log_to_driver=False)
    return True

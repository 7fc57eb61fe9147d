"""RayActorPool: the WorkerPool interface over Ray actors, for workers on other machines.

Optional: `pip install ray`; ray is imported only when the pool starts. Each actor builds the
same runner as a local worker process (runtime/worker.py: torch, profile or noop) and runs
one batch per call. Results come back as ObjectRefs turned into asyncio futures, so the
router's callbacks still run on its event loop. An actor that dies (RayActorError) is
reported as `worker_lost` and replaced. The router does not know which pool it has.
Not exercised by the test suite here (ray is not installed on the development machine).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from superserve.runtime.protocol import BatchTask, PoolListener
from superserve.runtime.worker import WorkerConfig

log = logging.getLogger(__name__)

__all__ = ["RayActorPool"]


class _Actor:
    """Body of the Ray actor (wrapped with ray.remote at start)."""

    def __init__(self, cfg: WorkerConfig) -> None:
        from superserve.runtime.worker import _fake_runner, _torch_runner

        self._run, self.info = _torch_runner(cfg) if cfg.kind == "torch" else _fake_runner(cfg)

    def ready(self) -> dict[str, Any]:
        return self.info

    def run(self, subnet: int, images: Any, load_s: float) -> tuple[Any, float]:
        t0 = time.perf_counter()
        if load_s > 0:
            time.sleep(load_s)
        return self._run(subnet, images), time.perf_counter() - t0


class RayActorPool:
    def __init__(self, config: WorkerConfig, n_workers: int = 1,
                 actor_options: dict[str, Any] | None = None, address: str | None = None) -> None:
        self.config = config
        self.n_workers = n_workers
        self.actor_options = actor_options or {"num_cpus": config.threads}
        self.address = address
        self._actors: dict[int, Any] = {}
        self._ready: set[int] = set()
        self._listener: PoolListener | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, listener: PoolListener) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, ignore_reinit_error=True)
        self._remote = ray.remote(**self.actor_options)(_Actor)
        self._listener = listener
        for wid in range(self.n_workers):
            self._spawn(wid)

    def _bg(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, wid: int) -> None:
        if self._closing:
            return
        actor = self._remote.remote(self.config)
        self._actors[wid] = actor
        self._bg(self._await_ready(wid, actor))

    async def _await_ready(self, wid: int, actor: Any) -> None:
        try:
            info = await asyncio.wrap_future(actor.ready.remote().future())
        except Exception as e:
            log.error("ray worker %d could not start: %s", wid, e)
            return
        self._ready.add(wid)
        log.info("ray worker %d ready: %s", wid, info)
        assert self._listener is not None
        self._listener.worker_ready(wid)

    def submit(self, worker_id: int, task: BatchTask) -> None:
        ref = self._actors[worker_id].run.remote(task.subnet, task.images, task.load_s)
        self._bg(self._await_result(worker_id, task.batch_id, ref))

    async def _await_result(self, wid: int, batch_id: int, ref: Any) -> None:
        import ray

        assert self._listener is not None
        try:
            logits, service_s = await asyncio.wrap_future(ref.future())
        except ray.exceptions.RayActorError as e:
            self._ready.discard(wid)
            self._listener.worker_lost(wid, f"ray actor died: {e}")
            self._spawn(wid)
            return
        except Exception as e:  # the batch raised inside the actor
            self._listener.batch_failed(wid, batch_id, f"{type(e).__name__}: {e}")
            return
        self._listener.batch_done(wid, batch_id, logits, service_s)

    def alive(self) -> int:
        return len(self._ready)

    async def close(self) -> None:
        import ray

        self._closing = True
        for actor in self._actors.values():
            ray.kill(actor)
        self._actors.clear()
        self._ready.clear()
        for t in list(self._tasks):
            t.cancel()

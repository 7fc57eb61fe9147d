"""Which WorkerPool serves: local worker processes (the default) or Ray actors.

`make_pool` is the one place the server turns its config into a pool; the router never
knows which one it has. Ray is imported only when the Ray backend starts.
"""

from __future__ import annotations

from typing import Any

from superserve.errors import ConfigError
from superserve.runtime.protocol import WorkerPool
from superserve.runtime.worker import WorkerConfig

__all__ = ["BACKENDS", "make_pool"]

BACKENDS = ("local", "ray")


def make_pool(cfg: Any, worker_config: WorkerConfig) -> WorkerPool:
    """A pool of `cfg.workers` workers running `worker_config`, on `cfg.backend`.

    `cfg` is a ServeConfig (or anything with its fields); configs made before the Ray
    fields existed get the local pool."""
    backend = getattr(cfg, "backend", "local")
    if backend == "local":
        from superserve.runtime.pool import LocalProcessPool

        return LocalProcessPool(worker_config, cfg.workers)
    if backend == "ray":
        from superserve.runtime.ray_pool import RayActorPool, RayPoolConfig

        rc = RayPoolConfig(address=getattr(cfg, "ray_address", None),
                           cpus_per_worker=getattr(cfg, "ray_cpus_per_worker", 1.0),
                           gpus_per_worker=getattr(cfg, "worker_gpus", 0.0),
                           max_restarts=getattr(cfg, "ray_max_restarts", 3))
        return RayActorPool(worker_config, cfg.workers, rc)
    raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")

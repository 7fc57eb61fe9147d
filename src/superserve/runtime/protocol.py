"""The one seam between the router and execution: batches go out, results come back.

The router sees a `WorkerPool` (local processes, Ray actors, or the in-process fake) and
receives its events through the `PoolListener` callbacks, always on the router's thread
(the event loop). Workers are pull-based: a worker announces `worker_ready` once, and after
that the router knows it is free again whenever its batch ends (done, failed or lost).

Wire format between the router process and a worker process (multiprocessing Pipe, pickled
tuples). Batches cross through shared-memory slabs (runtime/shm.py) by default, so only small
descriptors travel on the pipe; with `transport="pipe"` (or when a reply does not fit its
slab) the arrays travel inline, pickled. Images and logits are float32 numpy arrays, never
tensors:

    router -> worker   ("map", "in" | "out", path, nbytes)    map a (new, larger) slab
                       ("run", batch_id, subnet_id, images, load_s)
                           images: shape tuple (the batch is in the input slab)
                                   or float32 [B,C,H,W] array (inline)
                       ("stop",)
    worker -> router   ("ready", info: dict)        once, after loading and warm-up
                       ("done", batch_id, logits, service_s)
                           logits: shape tuple (in the output slab) or float32 [B,K] array
                       ("error", batch_id, message)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["BatchTask", "PoolListener", "WorkerPool"]


@dataclass(frozen=True, slots=True)
class BatchTask:
    batch_id: int
    subnet: int  # id in the ProfileTable
    images: np.ndarray  # float32 [B, C, H, W], values in [0, 1]
    load_s: float = 0.0  # actuation delay to pay first (0 with SubNetAct)

    def message(self) -> tuple[Any, ...]:
        return ("run", self.batch_id, self.subnet, self.images, self.load_s)


class PoolListener(Protocol):
    def worker_ready(self, worker_id: int) -> None: ...

    def batch_done(self, worker_id: int, batch_id: int, logits: np.ndarray,
                   service_s: float) -> None: ...

    def batch_failed(self, worker_id: int, batch_id: int, message: str) -> None: ...

    def worker_lost(self, worker_id: int, reason: str) -> None: ...


class WorkerPool(Protocol):
    """N workers behind one interface. `submit` is only called for a worker that is ready and
    has no batch in flight. A pool may also offer `poll()`: deliver what its workers have
    reported so far, now, on the caller's thread (the local pool does; the router calls it
    between requests, at most once a millisecond)."""

    n_workers: int

    def start(self, listener: PoolListener) -> None: ...

    def submit(self, worker_id: int, task: BatchTask) -> None: ...

    def alive(self) -> int: ...

    def kill(self, worker_id: int) -> None:
        """Kill `worker_id` at once (SIGKILL, ray.kill): the router's batch watchdog uses it
        on a hung worker. The pool then reports `worker_lost` and restarts it as after any
        death. May raise if it is already gone."""
        ...

    async def close(self) -> None: ...

    # Membership while serving (server/admin.py: `superserve workers add|remove|list`).
    def add_worker(self) -> int:
        """Start one more worker; returns its id (never one used before). It joins through
        `worker_ready` once loaded."""
        ...

    def remove_worker(self, worker_id: int) -> None:
        """Stop `worker_id` for good (no restart) and forget it; reports `worker_lost` to the
        listener, so a batch still in flight is re-queued. Drain first (the router's
        `retire_worker`) so that none is. Idempotent; KeyError for an id never used."""
        ...

    def members(self) -> dict[int, dict[str, Any]]:
        """Every worker kept (not removed): id -> {"state": "ready" | "starting", "node": where
        it runs (a Ray node's IP; "local" for this machine's processes), "pid": int | None}."""
        ...

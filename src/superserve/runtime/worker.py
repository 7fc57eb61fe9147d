"""The worker process: one copy of the supernet, SubnetNorm statistics of every served subnet,
and a loop that runs `supernet(x, spec)` on each batch the router sends.

`kind` selects what a batch costs:
    torch    the real thing: torch, the supernet, inference mode, `threads` torch threads
             (a GPU when present and `device` allows it);
    profile  no compute: sleeps the profiled latency of (subnet, batch) x `latency_scale`
             (tests of the process machinery, and capacity runs without a model);
    noop     no compute, no sleep: returns at once (router-overhead benchmark).
Non-torch kinds return logits whose argmax is the subnet id. torch is imported only by the
torch kind, inside the worker process. The wire format is in runtime/protocol.py.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from superserve.errors import ConfigError
from superserve.runtime import shm
from superserve.runtime.devices import check_device, parse_cpu_list, worker_cpus
from superserve.runtime.runners import make_runner, settle_heap

log = logging.getLogger(__name__)

__all__ = ["WorkerConfig", "worker_main"]

KINDS = ("torch", "profile", "noop")


@dataclass(frozen=True)
class WorkerConfig:
    kind: str = "torch"
    model: str = "resnet"  # family name or checkpoint path (load_supernet)
    table_path: str = ""  # the ProfileTable whose subnets this worker serves
    norm_path: str = ""  # SubnetNorm statistics of those subnets; calibrated if missing
    threads: int = 1  # torch intra-op threads
    device: str = "auto"  # auto: cuda when available, else cpu
    # explicit devices (cpu, cuda, cuda:N): worker i uses devices[i mod n]; empty: the rule
    # of `device`, every visible GPU in turn (runtime/devices.worker_device)
    devices: tuple[str, ...] = ()
    latency_scale: float = 1.0  # profile kind: multiplies the profiled latency
    num_classes: int = 10
    # Model-loading baselines (INFaaS): serve separately materialized subnet models, loaded
    # from disk with torch.load whenever the batch's subnet differs from the loaded one, so
    # the switch cost is real and measured, not assumed.
    separate_models: bool = False
    # the family's weights, load_supernet(model, weights=...): a published OFA checkpoint
    # ({"state_dict": ...} or bare) or a SuperServe checkpoint; "": the model's own checkpoint
    weights: str = ""
    # the warm-up's calls at batch sizes beyond the profiled ones (runtime/warmup.py) stop
    # after this many seconds; the profiled sizes always run
    warmup_budget_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"worker kind must be one of {KINDS}, got {self.kind!r}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be an integer >= 1, got {self.threads!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not isinstance(self.devices, tuple):
            raise ConfigError(f"devices must be a tuple of device names, got {self.devices!r}")
        for d in self.devices:
            check_device(d)
        if not self.latency_scale >= 0:
            raise ConfigError(f"latency_scale must be >= 0, got {self.latency_scale!r}")
        if self.kind != "noop" and not self.table_path:
            raise ConfigError(f"a {self.kind} worker needs table_path")
        if not self.warmup_budget_s >= 0:
            raise ConfigError(f"warmup_budget_s must be >= 0, got {self.warmup_budget_s!r}")
        if not isinstance(self.weights, str):
            raise ConfigError(f"weights must be a path string (\"\": none), got {self.weights!r}")


def _ignore_group_signals() -> None:
    """Ctrl-C in a terminal, or SIGTERM to the process group, reaches the workers too. They
    must not die under the router's drain: they leave when the router sends ("stop",), or
    when the router is gone (`_exit_with_parent`). (The pool spawns them with both signals
    ignored, which covers the imports before this runs.)"""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _exit_with_parent(parent_pid: int, interval_s: float = 0.25) -> None:
    """A daemon thread that ends this process once the router process is gone (SIGKILLed
    routers close no pipes in time for a worker busy in a batch, or still loading): the
    parent pid changes when the process is re-parented. No orphans, within about a second."""
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                log.warning("router (pid %d) is gone: worker exiting", parent_pid)
                os._exit(3)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(conn: Any, cfg: WorkerConfig, worker_id: int,
                parent_pid: int | None = None) -> None:
    """Entry point of a worker process (multiprocessing 'spawn'). `parent_pid`: the router's
    pid, watched so the worker exits by itself when the router dies."""
    _ignore_group_signals()
    if parent_pid is not None:
        if os.getppid() != parent_pid:  # the router died while this process was starting
            return
        _exit_with_parent(parent_pid)
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s worker{worker_id} %(levelname)s: %(message)s")
    try:
        cpus = os.environ.get("SUPERSERVE_WORKER_CPUS")  # set by `serve --worker-cpus`
        if cpus and hasattr(os, "sched_setaffinity"):  # a CPU per torch thread
            os.sched_setaffinity(0, worker_cpus(parse_cpu_list(cpus), cfg.threads, worker_id))
        run, info = make_runner(cfg, worker_id)
    except Exception as e:  # noqa: BLE001 -- reported, so the pool can say why, not loop
        conn.send(("fatal", f"{type(e).__name__}: {e}"))
        return
    info["pid"] = os.getpid()
    info["gc_frozen"] = settle_heap()
    conn.send(("ready", info))
    _serve(conn, run, cfg)


def _serve(conn: Any, run: Any, cfg: WorkerConfig) -> None:
    """The batch loop. Images arrive either in the shared-memory input slab (the message
    carries their shape) or inline in the message (pickled); logits go back through the
    output slab when it is large enough, inline otherwise (runtime/protocol.py)."""
    slabs: dict[str, shm.Slab | None] = {"in": None, "out": None}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the router went away
        if msg[0] == "stop":
            return
        if msg[0] == "map":
            _, which, path, nbytes = msg
            try:
                slabs[which] = shm.attach(path, nbytes)
            except OSError as e:
                log.error("cannot map the %s slab %s: %s", which, path, e)
                slabs[which] = None
            continue
        _, batch_id, subnet, images, load_s = msg
        t0 = time.perf_counter()
        try:
            if isinstance(images, tuple):  # shape of a batch waiting in the input slab
                slab = slabs["in"]
                if slab is None:
                    raise RuntimeError("the batch is in a shared-memory slab this worker "
                                       "could not map")
                images = slab.view(images)
            if load_s > 0 and not cfg.separate_models:
                time.sleep(load_s)  # a simulated model load (separate_models loads for real)
            logits = np.ascontiguousarray(run(subnet, images), dtype=np.float32)
        except Exception as e:  # noqa: BLE001 -- the router fails or retries the batch
            conn.send(("error", batch_id, f"{type(e).__name__}: {e}"))
            continue
        service_s = time.perf_counter() - t0
        out = slabs["out"]
        if out is not None and out.fits(logits.nbytes):
            out.view(logits.shape)[...] = logits
            conn.send(("done", batch_id, logits.shape, service_s))
        else:
            conn.send(("done", batch_id, logits, service_s))

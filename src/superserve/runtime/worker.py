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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superserve.errors import ConfigError

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
    latency_scale: float = 1.0  # profile kind: multiplies the profiled latency
    num_classes: int = 10
    # Model-loading baselines (INFaaS): serve separately materialized subnet models, loaded
    # from disk with torch.load whenever the batch's subnet differs from the loaded one, so
    # the switch cost is real and measured, not assumed.
    separate_models: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"worker kind must be one of {KINDS}, got {self.kind!r}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be an integer >= 1, got {self.threads!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not self.latency_scale >= 0:
            raise ConfigError(f"latency_scale must be >= 0, got {self.latency_scale!r}")
        if self.kind != "noop" and not self.table_path:
            raise ConfigError(f"a {self.kind} worker needs table_path")


Runner = Callable[[int, np.ndarray], np.ndarray]  # (subnet id, images) -> logits


def probe(run: Runner, table: Any, shape: tuple[int, ...], repeats: int = 3
          ) -> list[tuple[int, int, float]]:
    """The start-up check's measurements: (subnet, batch, seconds) for the fastest, a middle
    and the slowest subnet at the smallest, a middle and the largest profiled batch, each
    the median of `repeats` timed runs (after warm-up). Well under a second on the shipped
    tables; the router compares them with the table (Router._check_probe)."""
    n = len(table)
    by_speed = sorted(range(n), key=lambda i: table.lat_s[i][0])
    subnets = sorted({by_speed[0], by_speed[n // 2], by_speed[-1]})
    sizes = table.batch_sizes
    batches = sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]})
    out = []
    for i in subnets:
        for b in batches:
            x = np.zeros((b, *shape), dtype=np.float32)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run(i, x)
                times.append(time.perf_counter() - t0)
            out.append((i, b, sorted(times)[len(times) // 2]))
    return out


def _fake_runner(cfg: WorkerConfig) -> tuple[Runner, dict[str, Any]]:
    table = None
    if cfg.kind == "profile":
        from superserve.profiling.table import ProfileTable

        table = ProfileTable.load(cfg.table_path)

    def run(subnet: int, images: np.ndarray) -> np.ndarray:
        if table is not None:
            time.sleep(table.latency_s(subnet, len(images)) * cfg.latency_scale)
        logits = np.zeros((len(images), cfg.num_classes), dtype=np.float32)
        logits[:, subnet % cfg.num_classes] = 1.0
        return logits

    info: dict[str, Any] = {"kind": cfg.kind}
    if table is not None:
        info["probe"] = probe(run, table, (1, 1, 1), repeats=1)
    return run, info


def _torch_runner(cfg: WorkerConfig) -> tuple[Runner, dict[str, Any]]:
    import torch

    from superserve.models import load_supernet
    from superserve.profiling.table import ProfileTable

    torch.set_num_threads(cfg.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    table = ProfileTable.load(cfg.table_path)
    supernet = load_supernet(cfg.model, map_location="cpu")
    specs = [supernet.space.spec_from_dict(dict(s.spec)) for s in table.subnets]
    if getattr(supernet, "uses_norm_stats", True):
        norm = Path(cfg.norm_path) if cfg.norm_path else None
        if norm is not None and norm.exists():
            from superserve.subnetact import NormStore

            supernet.norm_store = NormStore.load(norm)
        missing = [s for s in specs if not supernet.norm_store.has(s)]
        if missing:
            from superserve.data import load_mnist

            log.warning("calibrating SubnetNorm for %d served subnets (no statistics at %s)",
                        len(missing), norm)
            supernet.calibrate(missing, load_mnist().train[0], n=2000, seed=0)
    supernet.eval().to(device)
    image_shape = None
    cfg_img = getattr(getattr(supernet, "config", None), "image_size", None)
    if cfg_img:
        image_shape = (1, int(cfg_img), int(cfg_img))

    @torch.inference_mode()
    def run(subnet: int, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).to(device, non_blocking=True)
        out = supernet(x, specs[subnet])  # (B, K)
        return out.float().cpu().numpy()

    if cfg.separate_models:
        run = _separate_models_runner(supernet, specs, device)

    t0 = time.perf_counter()
    shape = image_shape or (1, 28, 28)
    # first calls of a shape allocate and build kernels (measured: up to 2x the profiled time
    # for the first seconds of serving); keep that out of serving latency: every subnet at
    # every profiled batch size, and every batch size up to the largest on one subnet
    sizes = sorted(set(table.batch_sizes) | set(range(1, table.max_batch + 1)))
    for i in range(len(specs)):
        for b in (sizes if i == len(specs) - 1 else table.batch_sizes):
            run(i, np.zeros((b, *shape), dtype=np.float32))
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    measured = probe(run, table, shape)
    info = {"kind": "torch", "device": str(device), "threads": cfg.threads,
            "family": getattr(supernet, "family", cfg.model), "subnets": len(specs),
            "image_shape": image_shape, "warmup_s": warmup_s, "probe": measured,
            "probe_s": time.perf_counter() - t0}
    return run, info


def _separate_models_runner(supernet: Any, specs: list, device: Any) -> Runner:
    """Each served subnet saved as its own model file; a batch whose subnet is not the loaded
    one first torch.loads that file (what a model-loading system pays on a switch)."""
    import tempfile

    import torch

    from superserve.subnetact import materialize

    folder = Path(tempfile.mkdtemp(prefix="superserve-models-"))
    paths = []
    for i, spec in enumerate(specs):
        paths.append(folder / f"{i}.pt")
        torch.save(materialize(supernet, spec), paths[-1])
    loaded: dict[str, Any] = {"subnet": None, "module": None, "loads": 0, "load_s": 0.0}

    @torch.inference_mode()
    def run(subnet: int, images: np.ndarray) -> np.ndarray:
        if loaded["subnet"] != subnet:
            t0 = time.perf_counter()
            loaded["module"] = torch.load(paths[subnet], weights_only=False).eval().to(device)
            loaded["subnet"] = subnet
            loaded["loads"] += 1
            loaded["load_s"] += time.perf_counter() - t0
            log.info("loaded model of subnet %d from disk in %.1f ms (load %d)", subnet,
                     (time.perf_counter() - t0) * 1e3, loaded["loads"])
        x = torch.from_numpy(images).to(device, non_blocking=True)
        return loaded["module"](x).float().cpu().numpy()

    return run


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
        if cpus and hasattr(os, "sched_setaffinity"):
            ids = [int(c) for c in cpus.split(",") if c.strip()]
            os.sched_setaffinity(0, {ids[worker_id % len(ids)]})
        run, info = _torch_runner(cfg) if cfg.kind == "torch" else _fake_runner(cfg)
    except Exception as e:  # report why, so the pool can say it instead of looping
        conn.send(("fatal", f"{type(e).__name__}: {e}"))
        return
    info["pid"] = os.getpid()
    conn.send(("ready", info))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the router went away
        if msg[0] == "stop":
            return
        _, batch_id, subnet, images, load_s = msg
        t0 = time.perf_counter()
        try:
            if load_s > 0 and not cfg.separate_models:
                time.sleep(load_s)  # a simulated model load (separate_models loads for real)
            logits = run(subnet, images)
        except Exception as e:
            conn.send(("error", batch_id, f"{type(e).__name__}: {e}"))
            continue
        conn.send(("done", batch_id, logits, time.perf_counter() - t0))

"""What a worker runs on a batch: `make_runner(cfg)` returns the runner (subnet id, images) ->
logits and the ready info the worker reports (warm-up time, start-up probe, device).

The torch runner holds one copy of the supernet and the SubnetNorm statistics of every served
subnet; the fake runners (profile, noop) cost what the table says, or nothing. Shared by the
local worker process (runtime/worker.py) and the Ray actor (runtime/ray_pool.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from superserve.runtime.worker import WorkerConfig

log = logging.getLogger(__name__)

__all__ = ["Runner", "make_runner", "probe", "probe_pairs", "settle_heap"]


Runner = Callable[[int, np.ndarray], np.ndarray]  # (subnet id, images) -> logits


def probe_pairs(table: Any) -> list[tuple[int, int]]:
    """The start-up check's (subnet, batch) pairs: the fastest, a middle and the slowest subnet
    at the smallest, a middle and the largest profiled batch."""
    n = len(table)
    by_speed = sorted(range(n), key=lambda i: table.lat_s[i][0])
    subnets = sorted({by_speed[0], by_speed[n // 2], by_speed[-1]})
    sizes = table.batch_sizes
    batches = sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]})
    return [(i, b) for i in subnets for b in batches]


def probe(run: Runner, table: Any, shape: tuple[int, ...], repeats: int = 3
          ) -> list[tuple[int, int, float]]:
    """The start-up check's measurements: (subnet, batch, seconds) for the fastest, a middle
    and the slowest subnet at the smallest, a middle and the largest profiled batch, each
    the median of `repeats` timed runs (after warm-up). Well under a second on the shipped
    tables; the router compares them with the table (Router._check_probe)."""
    out = []
    for i, b in probe_pairs(table):
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


def _torch_runner(cfg: WorkerConfig, index: int = 0, device_name: str | None = None
                  ) -> tuple[Runner, dict[str, Any]]:
    import torch

    from superserve.models import load_supernet
    from superserve.profiling.table import ProfileTable
    from superserve.runtime.devices import widen_kernel_cache
    from superserve.runtime.warmup import cover, kernel_signature, warm_plan

    # read by oneDNN when it builds its first kernel, so setting it here still counts
    widen_kernel_cache()
    torch.set_num_threads(cfg.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    from superserve.runtime.devices import Stager, worker_device

    # worker i: devices[i mod n], or the i-th visible GPU in turn (runtime/devices.py); a Ray
    # actor resolves its own (devices.ray_worker_device)
    device = torch.device(device_name or worker_device(cfg.device, cfg.devices, index,
                                                       torch.cuda.device_count()))
    if device.type == "cuda":
        torch.cuda.set_device(device)  # no stray context on cuda:0 from every worker
    table = ProfileTable.load(cfg.table_path)
    if table.device != device.type:
        log.warning("table %s was profiled on %s, this worker runs on %s: planning starts from "
                    "the start-up probe and calibration (profile on this device for a true "
                    "table: superserve profile --device)", cfg.table_path, table.device, device)
    supernet = load_supernet(cfg.model, map_location="cpu", weights=cfg.weights or None)
    specs = [supernet.space.spec_from_dict(dict(s.spec)) for s in table.subnets]
    if getattr(supernet, "uses_norm_stats", True):
        norm = Path(cfg.norm_path) if cfg.norm_path else None
        if norm is not None and norm.exists():
            from superserve.subnetact import NormStore

            supernet.norm_store = NormStore.load(norm)
        missing = [s for s in specs if not supernet.norm_store.has(s)]
        if missing:
            supernet.calibrate(missing, _calibration_images(supernet, norm, len(missing)),
                               n=2000, seed=0)
    supernet.eval().to(device)  # weights, buffers and SubnetNorm statistics (NormStore._apply)
    stager = Stager(device)  # CUDA: pinned buffer + copy stream; CPU: a zero-copy view
    image_shape = tuple(supernet.input_spec.shape)  # (C, H, W): the family's input contract

    @torch.inference_mode()
    def run(subnet: int, images: np.ndarray) -> np.ndarray:
        x = stager.to_device(images)
        out = supernet(x, specs[subnet])  # (B, K)
        return out.float().cpu().numpy()

    if cfg.separate_models:
        run = _separate_models_runner(supernet, specs, device)

    t0 = time.perf_counter()
    shape = image_shape
    # first calls of a shape build kernels (3-7 ms each on a CPU); keep that out of serving
    # latency: every subnet at every profiled size, and a few subnets whose layer shapes cover
    # all the others' at every size up to the largest (runtime/warmup.py)
    def forward(spec: Any) -> Callable[[int], Any]:
        return lambda b: supernet(stager.to_device(np.zeros((b, *shape), np.float32)), spec)

    with torch.inference_mode():
        sigs = [kernel_signature(forward(s)) for s in specs]
    covering = cover(sigs, [table.latency_s(i, table.max_batch) for i in range(len(specs))])
    base, extra = warm_plan(len(specs), table.batch_sizes, table.max_batch, covering)
    for i, b in base:
        run(i, np.zeros((b, *shape), dtype=np.float32))
    t_extra, done = time.perf_counter(), 0
    for i, b in extra:
        if time.perf_counter() - t_extra > cfg.warmup_budget_s:
            break
        run(i, np.zeros((b, *shape), dtype=np.float32))
        done += 1
    warmup_s = time.perf_counter() - t0
    if done < len(extra):
        log.warning("warm-up: the budget (%.0f s) ran out after %d of %d calls at batch sizes "
                    "beyond the profiled ones; the first batches of the others pay their kernel "
                    "builds (warmup_budget_s)", cfg.warmup_budget_s, done, len(extra))
    log.info("warm-up: every subnet at the profiled batch sizes, subnets %s at every size up to "
             "%d (their layer shapes cover all %d subnets'), in %.1f s", covering,
             table.max_batch, len(specs), warmup_s)
    t0 = time.perf_counter()
    measured = probe(run, table, shape)
    # the threads and CPUs this process really runs with (local worker and Ray actor alike)
    info = {"kind": "torch", "device": str(device), "threads": cfg.threads,
            "torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "onednn_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "family": getattr(supernet, "family", cfg.model), "subnets": len(specs),
            "image_shape": image_shape, "warmup_s": warmup_s,
            "warmup_covering": covering, "warmup_extra_calls": [done, len(extra)],
            "probe": measured,
            "probe_s": time.perf_counter() - t0}
    return run, info


def settle_heap() -> int:
    """For a process that serves from now on (the worker, the Ray actor), once its runner is
    built. Collect, then freeze what exists now (the supernet, its serving plans, torch's
    modules: ~170,000 objects for the shipped resnet) out of the cyclic GC's reach, as the
    server process does: a full collection walks only what was made after. In the worker,
    the first collection after the warm-up was a full one (the warm-up left the older
    generations due) that took 74-146 ms on this VM (2026-11-30, measured with gc
    callbacks). In those 20 s runs it came only at shutdown, ~26 s after ready, once enough
    objects had piled up; a longer run meets it while serving, where the batch in flight
    and the queue behind it would wait that long. Returns the objects frozen."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _calibration_images(supernet: Any, norm: Path | None, missing: int) -> Any:
    """Images for the SubnetNorm statistics of served subnets that have none: the family's
    own calibration data (FamilyInfo.calibration_data), or a clear error."""
    from superserve.errors import ConfigError
    from superserve.models import get_family

    family = supernet.family
    info = get_family(family)
    if info.calibration_data is None:
        raise ConfigError(
            f"{missing} served subnet(s) of {family} have no SubnetNorm statistics (none at "
            f"{norm}) and the family ships no calibration data: profile with your data, "
            f"`superserve profile --model {family} --weights W --data DIR --out T.json` writes "
            "them beside the table (T.norm.pt)")
    log.warning("calibrating SubnetNorm for %d served subnets on %s's own data (no "
                "statistics at %s)", missing, family, norm)
    return info.calibration_data(supernet)


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


def make_runner(cfg: WorkerConfig, index: int = 0, device: str | None = None
                ) -> tuple[Runner, dict[str, Any]]:
    """The runner for `cfg.kind` and the info its worker reports when ready. `index`: the
    worker's number, which picks its device (runtime/devices.worker_device) unless `device`
    names it already (a Ray actor: devices.ray_worker_device)."""
    if cfg.kind == "torch":
        return _torch_runner(cfg, index, device)
    return _fake_runner(cfg)

"""Offline phase: Pareto search, latency/accuracy profiling, and the ProfileTable.

Only the table (and these path helpers) are imported here, without torch; the search driver
and the profiler import torch and are imported explicitly (`superserve.profiling.profiler`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from superserve.profiling.table import ProfileTable, SubnetProfile

__all__ = ["ProfileTable", "SubnetProfile", "default_table_path", "ensure_table", "norm_path"]

log = logging.getLogger(__name__)

TABLES = Path(__file__).resolve().parent.parent / "assets" / "tables"
FAMILIES = ("resnet", "vit")


def default_table_path(family: str) -> Path:
    """The shipped table of a family's default checkpoint (2-core CPU, 1 thread per worker)."""
    return TABLES / f"{family}.json"


def norm_path(table_path: str | Path) -> Path:
    """Where the SubnetNorm statistics of a table's served subnets live: beside the table."""
    p = Path(table_path)
    return p.with_name(p.name.removesuffix(".json") + ".norm.pt")


def ensure_table(model: str, threads: int = 1, device: str = "cpu",
                 cache_dir: str | Path | None = None, config: Any = None
                 ) -> tuple[ProfileTable, Path]:
    """The ProfileTable for `model` (family name or checkpoint path) on this device and thread
    count: the shipped one when checkpoint hash, device and threads match, else a cached one,
    else profile now (`config`: a ProfileConfig; default: the default one with `threads`) and
    cache it in `cache_dir` (default ~/.cache/superserve). Returns (table, its path); the
    SubnetNorm statistics of its subnets lie at norm_path(path)."""
    from superserve.models import file_sha256
    from superserve.models.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(model)  # a family's shipped checkpoint, or the path
    sha = file_sha256(ckpt)
    candidates = [default_table_path(model)] if model in FAMILIES else []
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "superserve"
    cached = cache / f"{sha[:16]}-{device}-t{threads}.json"
    candidates.append(cached)
    for path in candidates:
        if not path.is_file():
            continue
        table = ProfileTable.load(path)
        bad = table.mismatches(checkpoint_sha256=sha, device=device.partition(":")[0],
                               threads=threads)  # a table records the device type
        if not bad:
            return table, path
        log.info("not using %s: %s", path, "; ".join(bad))
    from dataclasses import replace

    from superserve.profiling.profiler import ProfileConfig, run_profile

    cfg = replace(config if config is not None else ProfileConfig(), threads=threads,
                  device=device)
    if device != "cpu":
        import torch

        from superserve.errors import ConfigError
        from superserve.runtime.devices import worker_device

        try:
            worker_device("cpu", (device,), 0, torch.cuda.device_count())
        except ConfigError as e:
            raise ConfigError(f"no ProfileTable for {model!r} on device={device!r} with "
                              f"threads={threads}, and it cannot be profiled here: {e}") from None
    log.info("no matching ProfileTable for %s (%s, %d threads): profiling into %s",
             model, device, threads, cached)
    cache.mkdir(parents=True, exist_ok=True)
    return run_profile(str(ckpt), cached, cfg), cached

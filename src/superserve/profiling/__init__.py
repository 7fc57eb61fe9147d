"""Offline phase: Pareto search, latency/accuracy profiling, and the ProfileTable.

Only the table (and these path helpers) are imported here, without torch; the search driver
and the profiler import torch and are imported explicitly (`superserve.profiling.profiler`).
"""

from __future__ import annotations

from pathlib import Path

from superserve.profiling.table import ProfileTable, SubnetProfile

__all__ = ["ProfileTable", "SubnetProfile", "default_table_path", "ensure_table", "norm_path"]

TABLES = Path(__file__).resolve().parent.parent / "assets" / "tables"


def default_table_path(family: str) -> Path:
    """The shipped table of a family's default checkpoint (2-core CPU, 1 thread per worker)."""
    return TABLES / f"{family}.json"


def norm_path(table_path: str | Path) -> Path:
    """Where the SubnetNorm statistics of a table's served subnets live: beside the table."""
    p = Path(table_path)
    return p.with_name(p.name.removesuffix(".json") + ".norm.pt")


def ensure_table(model: str, threads: int = 1, device: str = "cpu",
                 cache_dir: str | Path | None = None) -> tuple[ProfileTable, Path]:
    """The ProfileTable for `model` (family name or checkpoint) on this device and thread
    count: the shipped one when checkpoint hash, device and threads match, else a cached one,
    else profile now and cache. Returns (table, its path)."""
    from superserve.models import checkpoint_path, file_sha256

    ckpt = checkpoint_path(model) if model in ("resnet", "vit") else Path(model)
    sha = file_sha256(ckpt)
    candidates = []
    if model in ("resnet", "vit"):
        candidates.append(default_table_path(model))
    cache = Path(cache_dir or Path.home() / ".cache" / "superserve")
    cached = cache / f"{sha[:16]}-{device}-t{threads}.json"
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            t = ProfileTable.load(path)
            if t.checkpoint_sha256 == sha and t.device == device and t.threads == threads:
                return t, path
    from superserve.profiling.profiler import ProfileConfig, run_profile

    cache.mkdir(parents=True, exist_ok=True)
    table = run_profile(str(ckpt), cached, ProfileConfig(threads=threads))
    return table, cached

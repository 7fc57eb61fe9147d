"""Re-time an existing ProfileTable on this machine (`superserve profile --latency-only`).

The offline search and the accuracies are the expensive, machine-independent part of a table;
latencies belong to the machine that serves. Re-timing keeps the subnets, their specs and
accuracies (and the SubnetNorm statistics file beside the table) and measures every subnet at
every profiled batch size here, interleaved round-robin (timing.measure_interleaved), so a
burst of noise slows one round of every subnet instead of all runs of one.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from superserve.profiling.table import ProfileTable
from superserve.profiling.timing import measure_interleaved

log = logging.getLogger(__name__)

__all__ = ["machine_description", "retime_table", "speed_factor"]

Progress = Callable[[str, int, int], None]


def machine_description() -> str:
    """What a table was timed on, in words: CPU model, CPUs, OS (a GPU where one is used)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def _load(table_path: str | Path, model: str, threads: int, device: str
          ) -> tuple[ProfileTable, Any, list[Any], Any]:
    """The table, the supernet on `device` with the table's SubnetNorm statistics, the
    table's subnet specs, and the torch device."""
    import torch

    from superserve.models import load_supernet
    from superserve.profiling import norm_path

    table = ProfileTable.load(table_path)
    torch.set_num_threads(threads)
    net = load_supernet(model, map_location="cpu")
    if net.family != table.family:
        from superserve.errors import ConfigError

        raise ConfigError(f"table {table_path} profiles family {table.family!r}, but model "
                          f"{model!r} is a {net.family!r} supernet")
    specs = [net.space.spec_from_dict(dict(s.spec)) for s in table.subnets]
    src_norm = norm_path(table_path)
    if getattr(net, "uses_norm_stats", False) and Path(src_norm).exists():
        from superserve.subnetact import NormStore

        net.norm_store = NormStore.load(src_norm)
    dev = torch.device(device)
    net.eval().to(dev)
    return table, net, specs, dev


def _time_batch(net: Any, specs: list[Any], b: int, dev: Any, repeats: int, warmup: int
                ) -> list[tuple[float, float]]:
    """(median, p99) seconds of each spec's forward at batch size `b`, interleaved."""
    import numpy as np
    import torch

    spec_in = net.input_spec  # the family's input contract: (C, H, W), elastic resolutions
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    inputs: dict[int, Any] = {}  # per resolution (a spec of an elastic family picks one)
    for spec in specs:
        r = getattr(spec, "r", None) or spec_in.height
        if r not in inputs:
            inputs[r] = torch.from_numpy(np.random.default_rng(b).random(
                (b, spec_in.channels, r, r), dtype=np.float32)).to(dev)

    def call(spec: Any = None) -> None:
        x = inputs[getattr(spec, "r", None) or spec_in.height]
        with torch.inference_mode():
            net(x, spec)
        sync()

    return measure_interleaved([lambda s=s: call(s) for s in specs], repeats, warmup)


def speed_factor(table_path: str | Path, model: str, pairs: list[tuple[int, int]],
                 threads: int = 1, repeats: int = 7, warmup: int = 2, device: str = "cpu"
                 ) -> tuple[float, list[tuple[int, int, float]]]:
    """How much slower (> 1) or faster this machine runs the table's subnets: the median of
    measured / profiled over `pairs` of (subnet index, batch size), each the median of
    `repeats` interleaved runs after `warmup`; and the measurements (subnet, batch,
    seconds). A few seconds for a handful of pairs of the shipped tables."""
    table, net, specs, dev = _load(table_path, model, threads, device)
    measured = []
    for b in sorted({b for _, b in pairs}):
        idx = sorted({i for i, bb in pairs if bb == b})
        for i, (median, _) in zip(idx, _time_batch(net, [specs[i] for i in idx], b, dev,
                                                   repeats, warmup)):
            measured.append((i, b, median))
    ratios = sorted(sec / table.latency_s(i, b) for i, b, sec in measured)
    return ratios[len(ratios) // 2], measured


def retime_table(table_path: str | Path, model: str, out: str | Path, threads: int = 1,
                 repeats: int = 20, warmup: int = 3, device: str = "cpu",
                 progress: Progress | None = None) -> ProfileTable:
    """Measure every subnet of the table at `table_path` on this machine and write a table
    with the same subnets and accuracies and the new latencies to `out` (its SubnetNorm
    statistics copied beside it)."""
    import torch

    from superserve.profiling import norm_path

    t_start = time.perf_counter()
    table, net, specs, dev = _load(table_path, model, threads, device)
    src_norm = norm_path(table_path)
    timed: list[dict[int, tuple[float, float]]] = [{} for _ in specs]
    for j, b in enumerate(table.batch_sizes):
        for i, r in enumerate(_time_batch(net, specs, b, dev, repeats, warmup)):
            timed[i][b] = r
        if progress is not None:
            progress("retime", j + 1, len(table.batch_sizes))
    subnets = [replace(s, latency_ms={b: v[0] * 1e3 for b, v in timed[i].items()},
                       latency_p99_ms={b: v[1] * 1e3 for b, v in timed[i].items()})
               for i, s in enumerate(table.subnets)]
    old = {(i, b): table.latency_s(i, b) for i in range(len(table)) for b in table.batch_sizes}
    ratios = sorted(timed[i][b][0] / old[i, b] for i, b in old)
    prov = {**dict(table.provenance), "machine": machine_description(),
            "retimed": {"from": str(table_path), "from_machine":
                        table.provenance.get("machine", "unknown"),
                        "seconds": round(time.perf_counter() - t_start, 1),
                        "repeats": repeats, "threads": threads,
                        "median_ratio_new_over_old": ratios[len(ratios) // 2],
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    new = ProfileTable.build(table.family, subnets, table.batch_sizes, device=dev.type,
                             threads=threads, checkpoint_sha256=table.checkpoint_sha256,
                             torch_version=str(torch.__version__), config=dict(table.config),
                             provenance=prov, load_ms=table.load_ms)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new.save(out)
    if Path(src_norm).exists() and Path(src_norm).resolve() != Path(norm_path(out)).resolve():
        shutil.copyfile(src_norm, norm_path(out))
    log.info("re-timed %d subnets x %d batch sizes: median new/old %.2f", len(specs),
             len(table.batch_sizes), ratios[len(ratios) // 2])
    return new

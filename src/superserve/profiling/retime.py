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
    from superserve.runtime.devices import widen_kernel_cache

    table = ProfileTable.load(table_path)
    widen_kernel_cache()  # every round runs every (subnet, batch): keep all their kernels
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


def _time_pairs(net: Any, specs: list[Any], pairs: list[tuple[int, int]], dev: Any,
                repeats: int, warmup: int, on_round: Progress | None = None
                ) -> list[tuple[float, float]]:
    """(median, p99) seconds of the forward of each (spec index, batch size) in `pairs`, all
    of them interleaved round-robin: a machine that speeds up or slows down during the run
    (a co-tenant, frequency scaling) moves every pair's rounds alike, so the table's shape
    across batch sizes is measured as well as across subnets. Timing one batch size after
    another (as until 2026-11-30) put a drift of the host between the batch sizes."""
    import numpy as np
    import torch

    spec_in = net.input_spec  # the family's input contract: (C, H, W), elastic resolutions
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    inputs: dict[tuple[int, int], Any] = {}  # per (resolution, batch): a spec may pick one

    def x_for(spec: Any, b: int) -> Any:
        r = getattr(spec, "r", None) or spec_in.height
        if (r, b) not in inputs:
            inputs[r, b] = torch.from_numpy(np.random.default_rng(b).random(
                (b, spec_in.channels, r, r), dtype=np.float32)).to(dev)
        return inputs[r, b]

    def call(spec: Any, x: Any) -> None:
        with torch.inference_mode():
            net(x, spec)
        sync()

    args = [(specs[i], x_for(specs[i], b)) for i, b in pairs]
    fns = [lambda a=a: call(*a) for a in args]
    rounds = None if on_round is None else (lambda k, n: on_round("retime", k, n))
    return measure_interleaved(fns, repeats, warmup, on_round=rounds)


def speed_factor(table_path: str | Path, model: str, pairs: list[tuple[int, int]],
                 threads: int = 1, repeats: int = 7, warmup: int = 2, device: str = "cpu"
                 ) -> tuple[float, list[tuple[int, int, float]]]:
    """How much slower (> 1) or faster this machine runs the table's subnets: the median of
    measured / profiled over `pairs` of (subnet index, batch size), each the median of
    `repeats` interleaved runs after `warmup`; and the measurements (subnet, batch,
    seconds). A few seconds for a handful of pairs of the shipped tables."""
    table, net, specs, dev = _load(table_path, model, threads, device)
    order = sorted(set(pairs), key=lambda p: (p[1], p[0]))
    measured = [(i, b, median) for (i, b), (median, _) in
                zip(order, _time_pairs(net, specs, order, dev, repeats, warmup))]
    ratios = sorted(sec / table.latency_s(i, b) for i, b, sec in measured)
    return ratios[len(ratios) // 2], measured


def retime_table(table_path: str | Path, model: str, out: str | Path, threads: int = 1,
                 repeats: int = 20, warmup: int = 3, device: str = "cpu",
                 progress: Progress | None = None, monotone: bool = False,
                 keep_level: bool = False) -> ProfileTable:
    """Measure every subnet of the table at `table_path` at every batch size on this machine
    and write a table with the same subnets and accuracies and the new latencies to `out`
    (its SubnetNorm statistics copied beside it). `progress("retime", round, repeats)` after
    each timed round. `monotone`: fit the latencies to P1/P2 before saving
    (`ProfileTable.monotone`; the violations as measured stay in the provenance), as
    `superserve profile --monotone` does for a new table.

    `keep_level`: keep the source table's level and take only the shape from this machine.
    Every new latency is multiplied by one factor, the median over subnets of old / new at the
    largest batch size. There a forward is almost all arithmetic, so the factor is the speed
    of this machine against the one that profiled the source. The result is the source
    machine's speed with this code path's costs across batch sizes.

    This is for a table timed on a costlier code path than the one that serves it. The shipped
    tables were timed on the module path. Serving plans (models/base.py) take 40% less at
    batch 1 and about none at 32. The provenance records the factor and the batch size."""
    import torch

    from superserve.profiling import norm_path

    t_start = time.perf_counter()
    table, net, specs, dev = _load(table_path, model, threads, device)
    src_norm = norm_path(table_path)
    timed: list[dict[int, tuple[float, float]]] = [{} for _ in specs]
    pairs = [(i, b) for b in table.batch_sizes for i in range(len(specs))]
    for (i, b), r in zip(pairs, _time_pairs(net, specs, pairs, dev, repeats, warmup,
                                            progress)):
        timed[i][b] = r
    old = {(i, b): table.latency_s(i, b) for i in range(len(table)) for b in table.batch_sizes}
    ratios = sorted(timed[i][b][0] / old[i, b] for i, b in old)
    level = None
    if keep_level:
        top = table.batch_sizes[-1]
        at_top = sorted(old[i, top] / timed[i][top][0] for i in range(len(specs)))
        k = at_top[len(at_top) // 2]
        timed = [{b: (m * k, p * k) for b, (m, p) in t.items()} for t in timed]
        level = {"kept_at_batch": top, "factor": k,
                 "what": "every latency x factor: the source machine's level, this machine's "
                         "shape across batch sizes (median old / new at the largest batch)"}
    subnets = [replace(s, latency_ms={b: v[0] * 1e3 for b, v in timed[i].items()},
                       latency_p99_ms={b: v[1] * 1e3 for b, v in timed[i].items()})
               for i, s in enumerate(table.subnets)]
    here = machine_description()
    # with the level kept, the latencies are the source machine's speed: its name stays
    prov = {**dict(table.provenance),
            "machine": table.provenance.get("machine", "unknown") if keep_level else here,
            "retimed": {"from": str(table_path), "from_machine":
                        table.provenance.get("machine", "unknown"), "timed_on": here,
                        "seconds": round(time.perf_counter() - t_start, 1),
                        "repeats": repeats, "threads": threads,
                        "interleaved": "every (subnet, batch size) once per round",
                        "median_ratio_new_over_old": ratios[len(ratios) // 2],
                        **({} if level is None else {"level": level}),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    # the source's fit was of its own latencies: these are fitted only if asked (below)
    prov["monotone_fit"] = False
    prov.pop("violations_before_monotone_fit", None)
    new = ProfileTable.build(table.family, subnets, table.batch_sizes, device=dev.type,
                             threads=threads, checkpoint_sha256=table.checkpoint_sha256,
                             torch_version=str(torch.__version__), config=dict(table.config),
                             provenance=prov, load_ms=table.load_ms)
    if monotone:
        new = new.monotone()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new.save(out)
    if Path(src_norm).exists() and Path(src_norm).resolve() != Path(norm_path(out)).resolve():
        shutil.copyfile(src_norm, norm_path(out))
    log.info("re-timed %d subnets x %d batch sizes: median new/old %.2f", len(specs),
             len(table.batch_sizes), ratios[len(ratios) // 2])
    return new

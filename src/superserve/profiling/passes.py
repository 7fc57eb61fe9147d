"""The profiler's measuring passes over a supernet (torch): a subnet's scores on a split, the
batch-1 latency predictor's fit, the time to load a materialized subnet, and what device the
latencies were timed on. profiler.py strings them together."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from superserve.profiling.scoring import Scores, scores_from_logits
from superserve.profiling.timing import LatencyModel, measure_interleaved

if TYPE_CHECKING:
    from superserve.profiling.config import ProfileConfig

__all__ = ["device_description", "fit_latency", "layers", "load_times", "scores"]

Progress = Callable[[str, int, int], None]


def layers(net, spec) -> int:
    return net.num_layers(spec)  # the model contract (superserve.models.contract.Supernet)


def scores(net, spec, x: torch.Tensor, y: torch.Tensor, chunk: int = 250) -> Scores:
    # chunks: one 1000-image batch runs ~3x slower on this CPU than four of 250 (cache misses)
    chunk = min(chunk, getattr(net, "eval_batch_size", chunk))  # ImageNet-size inputs: smaller
    dev = next(net.parameters()).device
    with torch.inference_mode():
        return scores_from_logits(torch.cat([net(x[i:i + chunk].to(dev), spec).cpu()
                                             for i in range(0, len(x), chunk)]), y)


def fit_latency(net, cfg: ProfileConfig, xtr: torch.Tensor, x1: torch.Tensor,
                 step: Progress, sync: Callable[[], Any] | None = None) -> LatencyModel:
    rng = random.Random(cfg.seed)
    space = net.space
    probe = list(dict.fromkeys([space.largest(), space.smallest()] +
                               [space.sample(rng) for _ in range(cfg.predictor_samples)]))
    # the statistics' values do not change the time; any calibration lets the forward run
    net.calibrate([s for s in probe if not net.norm_store.has(s)], xtr, n=8, seed=cfg.seed)
    torch.set_num_threads(cfg.threads)
    step("latency model", 0, len(probe))
    with torch.inference_mode():
        meds = measure_interleaved([lambda s=s: net(x1, s) for s in probe], cfg.probe_repeats,
                                   2, sync=sync)
    step("latency model", len(probe), len(probe))
    return LatencyModel.fit([(layers(net, s), net.flops(s) / 1e6) for s in probe],
                            [m for m, _ in meds])


def device_description(dev: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H200)': what the table's latencies were timed on."""
    if dev.type != "cuda":
        return str(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def load_times(net, specs, x1: torch.Tensor) -> list[float]:
    """ms to torch.load each materialized subnet from disk into a ready module on x1's device
    (one forward included: what a model-loading baseline such as INFaaS pays on a switch, as
    runtime/runners._separate_models_runner does it)."""
    from superserve.subnetact.materialize import materialize

    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, s in enumerate(specs):
            path = Path(d) / f"{i}.pt"
            torch.save(materialize(net, s), path)
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                m = torch.load(path, weights_only=False).eval().to(x1.device)
                with torch.inference_mode():
                    m(x1).cpu()
                ts.append(time.perf_counter() - t0)
            out.append(statistics.median(ts) * 1e3)
    return out

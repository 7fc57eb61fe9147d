"""The offline phase end to end: search -> calibrate -> profile -> ProfileTable.

1. Latency predictor (timing.LatencyModel): batch-1 latency ~ layers + MFLOPs, fitted on a few
   subnets measured with the worker's torch threads.
2. Evolutionary Pareto search (search.py) on (score, predicted latency). Each candidate gets a
   quick SubnetNorm calibration (`search_calib_images` training images) and is scored on the
   validation split; the score is the temperature-calibrated log-likelihood (scoring.py),
   continuous where top-1 on 500 images is not.
3. A fitted accuracy predictor (predictor.py: ridge on the spec encoding, cross-validated)
   learns the score from every measured candidate; a second, large evolutionary search on
   (predicted score, predicted latency) costs no forward passes and gives a dense frontier.
   Measured scores alone give ~20 strict Pareto points: noise lets neighbours dominate.
4. That frontier, thinned evenly in log latency to `max_subnets` (both ends always in), is
   calibrated for real (`calib_images` training images), scored on validation and test, and
   timed at every batch size (warm-up, repeats, median and p99, the worker's threads; subnets
   interleaved so a burst of noise hits all of them) on `device`, the one the workers will
   serve on: the model and its SubnetNorm statistics move there, a batch reaches it the way a
   worker's does (runtime/devices.Stager) and, on a GPU, every timed call ends with a
   synchronisation; the table records the device.
5. `accuracy` is validation top-1 from the predicted score by a straight line fitted over
   every search candidate, so it rises along the frontier; the raw validation top-1
   (`val_top1`, 0.2-point steps), the measured score and test top-1 (`test_accuracy`) are
   stored beside it, and the provenance reports how well prediction and measurement agree.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superserve.profiling.config import ProfileConfig
from superserve.profiling.passes import Progress, device_description, fit_latency, load_times
from superserve.profiling.passes import layers as _layers
from superserve.profiling.passes import scores as _scores
from superserve.profiling.predictor import AccuracyPredictor, SpecEncoder, spearman
from superserve.profiling.scoring import Scores
from superserve.profiling.search import Candidate, evolve, pareto_front, thin_front
from superserve.profiling.table import ProfileTable, SubnetProfile
from superserve.profiling.timing import measure, measure_interleaved

log = logging.getLogger(__name__)

__all__ = ["ProfileConfig", "measure", "profile_supernet", "run_profile"]



def profile_supernet(net, cfg: ProfileConfig = ProfileConfig(), progress: Progress | None = None,
                     meta: dict[str, Any] | None = None, data: Any = None,
                     journal: Any = None,
                     on_estimate: Callable[[dict[str, float]], None] | None = None
                     ) -> tuple[ProfileTable, Any]:
    """Returns (table, NormStore of exactly the served subnets, or None for LayerNorm models).
    `on_estimate` receives the phases' estimated seconds (profiling/budget.py) before the work
    starts."""
    from superserve.data import load_digits8, load_mnist
    from superserve.profiling.budget import (
        CostModel,
        after_search_seconds,
        estimate_seconds,
        frontier_positions,
        phase_summary,
        repeats_for,
        search_may_continue,
        warmup_for,
    )
    from superserve.runtime.devices import Stager, widen_kernel_cache, worker_device

    widen_kernel_cache()  # before this process's first convolution, if it is (run_profile)
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    worker_device("cpu", (cfg.device,), 0, torch.cuda.device_count())  # ConfigError if absent
    dev = torch.device(cfg.device)
    home = next(net.parameters()).device
    stager = Stager(dev)  # batches reach the device as a worker's do
    sync = stager.synchronize if dev.type == "cuda" else None
    step: Progress = progress or (lambda *a: None)
    if data is None:  # `data`: the user's splits (models.imagefolder); else the training set's
        dataset = getattr(net, "train_config", {}).get("dataset", "mnist")
        data = load_mnist(cfg.seed) if dataset == "mnist" else load_digits8(cfg.seed)
    xtr = torch.from_numpy(data.train[0])
    xva, yva = torch.from_numpy(data.val[0]), torch.from_numpy(data.val[1])
    xte, yte = torch.from_numpy(data.test[0]), torch.from_numpy(data.test[1])
    x1 = xva[:1].to(dev)
    # the search split: candidates are scored on a seeded part of the validation split; the
    # measured frontier on all of it
    pick = np.random.default_rng(cfg.seed).choice(len(xva), min(cfg.search_val_images,
                                                                len(xva)), replace=False)
    xse, yse = xva[torch.from_numpy(np.sort(pick))], yva[torch.from_numpy(np.sort(pick))]
    search_cfg = cfg.search_config()
    phase_s: dict[str, float] = {}
    try:
        net.to(dev)  # weights, buffers and SubnetNorm statistics (NormStore follows)
        t0 = time.perf_counter()
        cost = CostModel.measure(net, cfg.eval_threads, cfg.threads, seed=cfg.seed, sync=sync)
        est = estimate_seconds(cost, cfg, len(xtr), len(xva), len(xte))
        phase_s["estimate"] = time.perf_counter() - t0
        if on_estimate is not None:
            on_estimate(est)
        # 1. latency predictor
        t0 = time.perf_counter()
        lat_model = fit_latency(net, cfg, xtr, x1, step, sync)
        phase_s["latency_model"] = time.perf_counter() - t0

        # 2. evolutionary search on (score, predicted latency)
        torch.set_num_threads(cfg.eval_threads)
        found: dict[Any, Scores] = {}
        so_far: list[Candidate] = []
        spent = {"calibrate": 0.0, "evaluate": 0.0}

        def evaluate(spec) -> tuple[float, float]:
            c = _evaluate(spec)
            so_far.append(Candidate(spec, *c))
            return c

        def _evaluate(spec) -> tuple[float, float]:
            hit = journal.get(spec) if journal is not None else None  # a resumed profile
            if hit is not None:
                found[spec] = hit
                return hit.score, lat_model.predict(_layers(net, spec), net.flops(spec) / 1e6)
            t = time.perf_counter()
            net.calibrate([spec], xtr, n=cfg.search_calib_images, seed=cfg.seed)
            t2 = time.perf_counter()
            found[spec] = _scores(net, spec, xse, yse)
            spent["calibrate"] += t2 - t
            spent["evaluate"] += time.perf_counter() - t2
            if journal is not None:
                journal.add(spec, found[spec])
            return found[spec].score, lat_model.predict(_layers(net, spec), net.flops(spec) / 1e6)

        ends_s = [lat_model.predict(_layers(net, s), net.flops(s) / 1e6)
                  for s in (net.space.smallest(), net.space.largest())]

        def after_search_s() -> float:  # re-priced for the frontier the search has found
            where = frontier_positions(so_far, *ends_s, cfg.max_subnets)
            return after_search_seconds(cost, cfg, len(xtr), len(xva), len(xte),
                                        where)["after_search_s"]

        within = search_may_continue(cfg.time_budget_s, cfg.min_search_candidates, t_start,
                                     after_search_s, est["search_candidate_s"])
        stopped_at: list[int] = []

        def may_continue(evaluated: int) -> bool:
            if within(evaluated):
                return True
            stopped_at.append(evaluated)
            return False

        cands = evolve(net.space, evaluate, search_cfg, progress=lambda i, n: step("search", i, n),
                       may_continue=may_continue)
        front = pareto_front(cands)
        fronts = {"score": len(front),
                  "top1": len(pareto_front([Candidate(c.spec, found[c.spec].top1, c.cost)
                                            for c in cands])),
                  "p_true": len(pareto_front([Candidate(c.spec, found[c.spec].p_true, c.cost)
                                              for c in cands]))}
        phase_s["search"] = time.perf_counter() - t0 - phase_s["latency_model"]
        budget_stopped = bool(stopped_at)
        est_after_search = after_search_s()  # the provenance: what the stop rule last assumed
        if on_estimate is not None and cands:  # re-estimated at the search's measured pace
            pace = phase_s["search"] / len(cands) / max(est["search_candidate_s"], 1e-9)
            on_estimate({"remaining_s": est_after_search * min(4.0, max(0.5, pace)),
                         "elapsed_s": time.perf_counter() - t_start})
        phase_s["search_calibrate"], phase_s["search_evaluate"] = spent["calibrate"], spent["evaluate"]

        # 2b. fitted accuracy predictor over every measured candidate, and the frontier on it
        t0 = time.perf_counter()
        enc = SpecEncoder(net.space.largest().to_dict())

        def features(specs) -> np.ndarray:
            return enc.encode([s.to_dict() for s in specs], [net.flops(s) / 1e6 for s in specs],
                              [net.params(s) for s in specs])

        predictor = AccuracyPredictor.fit(features([c.spec for c in cands]),
                                          [found[c.spec].score for c in cands], seed=cfg.seed)

        def predicted(spec) -> tuple[float, float]:
            return (float(predictor.predict(features([spec]))[0]),
                    lat_model.predict(_layers(net, spec), net.flops(spec) / 1e6))

        pcands = evolve(net.space, predicted, cfg.predictor_search)
        pfront = pareto_front(pcands)
        fronts["predicted_score"] = len(pfront)
        ends = {net.space.smallest(), net.space.largest()}
        picked = thin_front(pfront, cfg.max_subnets)
        picked += [c for c in pcands if c.spec in ends and c not in picked]
        picked.sort(key=lambda c: (c.score, c.cost))
        specs = [c.spec for c in picked]
        pred_score = [c.score for c in picked]
        phase_s["predictor_search"] = time.perf_counter() - t0

        # 3a. calibrate the frontier for real and score it
        t0 = time.perf_counter()
        final: list[tuple[Scores, Scores]] = []
        for i, s in enumerate(specs):
            net.calibrate([s], xtr, n=cfg.calib_images, seed=cfg.seed)
            final.append((_scores(net, s, xva, yva), _scores(net, s, xte, yte)))
            step("calibrate + score", i + 1, len(specs))
        phase_s["final_calibrate_and_score"] = time.perf_counter() - t0

        # 3b. time every batch size with the worker's threads: every (subnet, batch size)
        # interleaved, so a host that drifts during the phase moves them all alike (timing
        # one batch size after another put the drift between the batch sizes)
        t0 = time.perf_counter()
        torch.set_num_threads(cfg.threads)
        timed: list[dict[int, tuple[float, float]]] = [{} for _ in specs]
        pairs = [(k, b) for b in cfg.batch_sizes for k in range(len(specs))]
        xs = {b: xtr[torch.arange(b) % len(xtr)] for b in cfg.batch_sizes}  # images repeat
        with torch.inference_mode():
            # what a worker pays: the host batch to the device, forward, logits back
            res = measure_interleaved(
                [lambda s=specs[k], xb=xs[b]: net(stager.to_device(xb), s).float().cpu()
                 for k, b in pairs],
                [repeats_for(b, cfg.repeats, cfg.min_repeats) for _, b in pairs],
                [warmup_for(b, cfg.warmup) for _, b in pairs], sync=sync,
                on_round=lambda i, n: step("profile rounds", i, n))
        for (k, b), r in zip(pairs, res):
            timed[k][b] = r
        phase_s["profile"] = time.perf_counter() - t0

        # served: the predicted frontier, in order of predicted latency with the predicted
        # score strictly rising (the forced ends included only if they keep it rising);
        # noisy measured latencies are left raw (P1/P2 violations are reported) and
        # `ProfileTable.monotone()` fits them
        measured = [final[k][0].score for k in range(len(specs))]
        kept, best = [], float("-inf")
        for k in sorted(range(len(specs)), key=lambda k: picked[k].cost):
            if pred_score[k] > best:
                kept.append(k)
                best = pred_score[k]
        if net.space.largest() not in [specs[k] for k in kept]:
            log.warning("the largest subnet is not on the predicted frontier: not served")
        measured_front = pareto_front([Candidate(s, measured[k], timed[k][cfg.batch_sizes[0]][0])
                                       for k, s in enumerate(specs)])
        fronts["measured_after_calibration"] = len(measured_front)

        # 4. accuracy from the predicted score: validation top-1 ~ score, a straight line
        # fitted over every search candidate
        sc = np.array([found[c.spec].score for c in cands])
        t1 = np.array([found[c.spec].top1 for c in cands])
        slope, intercept = (np.polyfit(sc, t1, 1) if len(cands) > 2 and np.ptp(sc) > 0
                            else (0.0, float(np.mean(t1))))
        if slope <= 0:  # a degenerate fit would invert the frontier: keep the raw top-1
            log.warning("accuracy fit has slope %.3g <= 0; using raw validation top-1", slope)
        rho = spearman(pred_score, measured)
        t0 = time.perf_counter()
        load_ms = load_times(net, [specs[k] for k in kept], x1)
        phase_s["load_times"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads_before)
        net.to(home)

    subnets = []
    for i, k in enumerate(kept):
        s, (val, test) = specs[k], final[k]
        acc = float(np.clip(intercept + slope * pred_score[k], 0.0, 1.0)) if slope > 0 else val.top1
        subnets.append(SubnetProfile(
            id=i, spec=s.to_dict(), accuracy=acc, test_accuracy=test.top1,
            latency_ms={b: v[0] * 1e3 for b, v in timed[k].items()},
            latency_p99_ms={b: v[1] * 1e3 for b, v in timed[k].items()},
            flops=int(net.flops(s)), params=int(net.params(s)), load_ms=load_ms[i],
            score=val.score, val_top1=val.top1))
    served = net.norm_store.subset([specs[k] for k in kept]) if net.uses_norm_stats else None
    elapsed = time.perf_counter() - t_start
    from superserve.profiling.retime import machine_description

    provenance = dict(meta or {})
    provenance.update({
        "machine": machine_description(),
        "device": device_description(dev),
        "profile_seconds": round(elapsed, 1),
        "phase_seconds": {k: round(v, 1) for k, v in phase_s.items()},
        "candidates_evaluated": len(cands),
        "search": {**asdict(search_cfg), "stopped_by_time_budget": budget_stopped,
                   "time_budget_s": cfg.time_budget_s, "search_val_images": len(xse)},
        "estimate_seconds": {k: round(v, 3) for k, v in est.items()},
        "estimate_vs_actual": phase_summary(est, phase_s),
        "after_search_estimate_s": round(est_after_search, 1),
        "cost_model": cost.to_dict(),
        "pareto_points_score": fronts["score"], "pareto_points_top1": fronts["top1"],
        "pareto_points_p_true": fronts["p_true"],
        "pareto_points_predicted_score": fronts["predicted_score"],
        "pareto_points_measured_after_calibration": fronts["measured_after_calibration"],
        "score": "minus temperature-calibrated NLL of the true class on the validation split",
        "accuracy_predictor": {**predictor.to_dict(),
                               "spearman_predicted_vs_measured": rho,
                               },
        "measured": len(specs), "served_after_measurement": len(kept),
        "latency_predictor": lat_model.to_dict(),
        "accuracy_fit": {"slope": float(slope), "intercept": float(intercept),
                         "what": "accuracy = validation top-1 predicted from the predicted "
                                 "score (linear fit of top-1 on score over all candidates)"},
    })
    log.info("profiled %s: %d candidates, front %d (top-1 front %d), served %d, %.0f s",
             net.family, len(cands), fronts["score"], fronts["top1"], len(kept), elapsed)
    table = ProfileTable.build(
        net.family, subnets, cfg.batch_sizes, device=dev.type, threads=cfg.threads,
        torch_version=str(torch.__version__), config=cfg.to_dict(), provenance=provenance,
        load_ms=float(statistics.median(load_ms)) if load_ms else None)
    return table, served


def run_profile(model: str, out: str | Path, cfg: ProfileConfig = ProfileConfig(),
                progress: Progress | None = None, weights: str | Path | None = None,
                data: Any = None, model_config: dict[str, Any] | None = None,
                resume: bool = True,
                on_estimate: Callable[[dict[str, float]], None] | None = None) -> ProfileTable:
    """Profile a checkpoint (or family name) and write the table + the served subnets'
    SubnetNorm statistics beside it. `resume`: keep the search's scores in a journal beside
    `out` and reuse them after an interrupt (profiling.journal); `on_estimate` receives the
    estimated phase times before the work starts."""
    from superserve.data import load_digits8, load_mnist
    from superserve.models import file_sha256, load_supernet
    from superserve.models.checkpoint import provenance, resolve_checkpoint
    from superserve.profiling import norm_path
    from superserve.profiling.journal import SearchJournal, journal_path
    from superserve.runtime.devices import widen_kernel_cache

    widen_kernel_cache()  # timed as the worker runs: its kernels stay built (runtime/devices)
    net = load_supernet(model, weights=weights, model_config=model_config)
    ckpt = Path(weights) if weights is not None else resolve_checkpoint(model)
    meta = provenance()
    if data is not None:
        meta["data"] = getattr(data, "name", "user data")
    if data is None:  # the same default profile_supernet takes, resolved here for the journal
        dataset = getattr(net, "train_config", {}).get("dataset", "mnist")
        data = load_mnist(cfg.seed) if dataset == "mnist" else load_digits8(cfg.seed)
    sizes = [len(data.train[0]), len(data.val[0]), len(data.test[0])]
    sha = file_sha256(ckpt)
    journal = None
    if resume:
        journal = SearchJournal(journal_path(out), {
            "checkpoint_sha256": sha, "family": net.family, "model": net.config.to_dict(),
            "data": getattr(data, "name", ""), "sizes": sizes, "seed": cfg.seed,
            "search_calib_images": cfg.search_calib_images,
            "search_val_images": cfg.search_val_images})
        meta["resumed_candidates"] = journal.resumed
    table, served = profile_supernet(net, cfg, progress, meta=meta, data=data, journal=journal,
                                     on_estimate=on_estimate)
    table = ProfileTable.build(table.family, table.subnets, table.batch_sizes, device=table.device,
                               threads=table.threads, checkpoint_sha256=sha,
                               torch_version=table.torch_version,
                               config={**table.config, "checkpoint": str(ckpt)},
                               provenance=table.provenance, load_ms=table.load_ms)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.save(out)
    if served is not None:
        served.save(norm_path(out))
    if journal is not None:
        journal.finish()
    return table

"""Supernet training: the sandwich rule with in-place distillation (BigNAS / US-Nets).

Every step trains the largest subnet on the labels, then the smallest and `num_random` random
subnets on the largest's (detached) soft predictions, accumulating all gradients into one
update of the shared weights. Afterwards SubnetNorm statistics are calibrated for the largest
and smallest subnets and test accuracy is measured (the test split is used for nothing else).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from superserve.data import Splits, load_digits8, load_mnist
from superserve.models.checkpoint import build_supernet
from superserve.models.configs import TrainConfig
from superserve.subnetact.norm import NormMode

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "augment", "evaluate", "train_supernet"]


@dataclass
class TrainResult:
    model: torch.nn.Module
    metrics: dict[str, Any]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine per image: shift +-2/28 of the side, rotation +-10 deg, scale 0.9-1.1."""
    b = x.shape[0]
    r = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)
    ang, scale = r(-10.0, 10.0) * math.pi / 180, r(0.9, 1.1)
    tx, ty = r(-4 / 28, 4 / 28), r(-4 / 28, 4 / 28)  # normalised coords: 2/28 of [-1, 1] span
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.inference_mode()
def evaluate(model: torch.nn.Module, spec, x: np.ndarray, y: np.ndarray,
             mode: NormMode | None = None, batch_size: int = 250) -> float:
    """Top-1 accuracy of `spec` (SubnetNorm statistics unless `mode` says otherwise)."""
    model.eval()
    xt, correct = torch.from_numpy(x), 0
    for i in range(0, len(xt), batch_size):
        xb = xt[i:i + batch_size]
        logits = model(xb, spec) if mode is None else model.forward_mode(xb, spec, mode)
        correct += int((logits.argmax(1).numpy() == y[i:i + batch_size]).sum())
    return correct / len(y)


def _data(cfg: TrainConfig) -> Splits:
    return load_mnist(cfg.seed) if cfg.dataset == "mnist" else load_digits8(cfg.seed)


def train_supernet(cfg: TrainConfig, progress: Callable[[int, int, float], None] | None = None
                   ) -> TrainResult:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = _data(cfg)
    model_cfg = dict(cfg.model)
    model_cfg.setdefault("image_size", data.image_size)
    model = build_supernet(cfg.family, model_cfg)
    space = model.space
    xtr = torch.from_numpy(data.train[0])
    ytr = torch.from_numpy(data.train[1])
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else
        0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    largest, smallest = space.largest(), space.smallest()
    kd_ramp = int(cfg.kd_warmup_frac * total)
    t0, step, loss_ema = time.perf_counter(), 0, float("nan")
    model.train()
    while step < total:
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), cfg.batch_size):
            if step >= total:
                break
            idx = perm[i:i + cfg.batch_size]
            xb, yb = xtr[idx], ytr[idx]
            if cfg.augment:
                xb = augment(xb, gen)
            opt.zero_grad(set_to_none=True)
            logits = model(xb, largest)  # (B, K)
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            loss.backward()
            soft = F.softmax(logits.detach(), 1)
            kd_w = cfg.kd_weight * min(1.0, step / kd_ramp) if kd_ramp else cfg.kd_weight
            for spec in [smallest] + [space.sample(rng) for _ in range(cfg.num_random)]:
                out = model(xb, spec)
                kd = F.cross_entropy(out, soft) * kd_w
                if cfg.student_label_weight:
                    kd = kd + cfg.student_label_weight * F.cross_entropy(out, yb)
                kd.backward()
            opt.step()
            sched.step()
            step += 1
            lv = float(loss.detach())
            loss_ema = lv if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * lv
            if progress is not None:
                progress(step, total, loss_ema)
    train_s = time.perf_counter() - t0
    model.eval()
    model.calibrate([largest, smallest], data.train[0], n=cfg.calib_images, seed=cfg.seed)
    xte, yte = data.test
    metrics: dict[str, Any] = {
        "dataset": data.name, "train_images": len(xtr), "test_images": len(yte),
        "steps": step, "train_seconds": round(train_s, 1),
        "val_accuracy_largest": evaluate(model, largest, *data.val),
        "val_accuracy_smallest": evaluate(model, smallest, *data.val),
        "test_accuracy_largest": evaluate(model, largest, xte, yte),
        "test_accuracy_smallest": evaluate(model, smallest, xte, yte),
    }
    if model.uses_norm_stats:
        metrics["test_accuracy_smallest_shared_bn"] = evaluate(model, smallest, xte, yte,
                                                               NormMode.SHARED)
        metrics["test_accuracy_largest_shared_bn"] = evaluate(model, largest, xte, yte,
                                                              NormMode.SHARED)
    log.info("trained %s in %.0f s: %s", cfg.family, train_s, metrics)
    return TrainResult(model, metrics)

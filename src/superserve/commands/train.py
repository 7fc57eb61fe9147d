"""`superserve train --family resnet|vit [--out PATH] [--quick]`."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", required=True, choices=["resnet", "vit"])
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint path (default: the shipped checkpoint of the family)")
    p.add_argument("--quick", action="store_true",
                   help="a small supernet on the 8x8 digits: under a minute (tests, smoke runs)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--seed", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from superserve.models.checkpoint import checkpoint_path, save_checkpoint
    from superserve.models.configs import default_train_config
    from superserve.models.train import train_supernet

    cfg = default_train_config(args.family, quick=args.quick)
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    out = args.out or checkpoint_path(args.family)
    bar = tqdm(total=None, desc=f"train {args.family}", unit="step", dynamic_ncols=True,
               mininterval=1.0, disable=None)  # disable=None: no bar when not a terminal

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.3f}")

    result = train_supernet(cfg, progress)
    bar.close()
    save_checkpoint(out, result.model, cfg.to_dict(), result.metrics)
    Path(out).with_suffix(".metrics.json").write_text(json.dumps(result.metrics, indent=1) + "\n")
    print(json.dumps({"checkpoint": str(out), **result.metrics}, indent=1))
    return 0

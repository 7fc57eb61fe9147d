"""Checkpoints: weights + the configs that built them + SubnetNorm statistics + provenance.

    {"schema_version": 1, "family": ..., "model_config": {...}, "train_config": {...},
     "state_dict": {...}, "norm_stats": NormStore state, "metrics": {...},
     "provenance": {"git_commit", "torch_version", "device", "created", "host_threads"}}
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from superserve.errors import CheckpointError, ConfigError

SCHEMA_VERSION = 1
ASSETS = Path(__file__).resolve().parent.parent / "assets"

__all__ = ["SCHEMA_VERSION", "build_supernet", "checkpoint_path", "file_sha256", "load_checkpoint",
           "load_supernet", "provenance", "save_checkpoint"]


def checkpoint_path(family: str) -> Path:
    """The shipped checkpoint of a family."""
    return ASSETS / "checkpoints" / f"{family}.pt"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(device: str = "cpu") -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"git_commit": commit or "unknown", "torch_version": str(torch.__version__),
            "device": device, "cpu_count": os.cpu_count(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def build_supernet(family: str, model_config: dict[str, Any] | None = None) -> torch.nn.Module:
    from superserve.models.resnet import ResNetConfig, ResNetSupernet
    from superserve.models.vit import ViTConfig, ViTSupernet

    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in (model_config or {}).items()}
    try:
        if family == "resnet":
            return ResNetSupernet(ResNetConfig(**kw))
        if family == "vit":
            return ViTSupernet(ViTConfig(**kw))
    except TypeError as e:
        raise ConfigError(f"bad {family} model config {model_config}: {e}") from e
    raise ConfigError(f"unknown model family {family!r}; expected 'resnet' or 'vit'")


def save_checkpoint(path: str | Path, model: torch.nn.Module, train_config: dict[str, Any],
                    metrics: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "schema_version": SCHEMA_VERSION,
        "family": model.family,
        "model_config": model.config.to_dict(),
        "train_config": train_config,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "norm_stats": model.norm_store.state(),
        "metrics": metrics,
        "provenance": provenance(),
    }, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt file
        raise CheckpointError(f"{p} is not a readable checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{p}: unsupported checkpoint schema_version "
                              f"{ckpt.get('schema_version') if isinstance(ckpt, dict) else None!r}")
    return ckpt


def load_supernet(name_or_path: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """A ready (eval-mode) supernet from a family name ('resnet', 'vit') or a file."""
    from superserve.subnetact.norm import NormStore

    path = checkpoint_path(str(name_or_path)) if str(name_or_path) in ("resnet", "vit") \
        else Path(name_or_path)
    ckpt = load_checkpoint(path)
    model = build_supernet(ckpt["family"], ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    model.norm_store = NormStore.from_state(ckpt["norm_stats"])
    model.checkpoint_path = str(path)
    model.metrics = ckpt.get("metrics", {})
    model.train_config = ckpt.get("train_config", {})
    model.provenance = ckpt.get("provenance", {})
    return model.to(map_location).eval()

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
           "load_supernet", "provenance", "resolve_checkpoint", "save_checkpoint"]


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
                                check=False, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"git_commit": commit or "unknown", "torch_version": str(torch.__version__),
            "device": device, "cpu_count": os.cpu_count(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def build_supernet(family: str, model_config: dict[str, Any] | None = None) -> torch.nn.Module:
    """A freshly initialised supernet of a registered family (superserve.models.registry:
    built-in, an entry point, or `pkg.module:factory`)."""
    from superserve.models.registry import get_family

    info = get_family(family)
    try:
        return info.build(dict(model_config or {}))
    except TypeError as e:
        raise ConfigError(f"bad {family} model config {model_config}: {e}") from e


def save_checkpoint(path: str | Path, model: torch.nn.Module, train_config: dict[str, Any],
                    metrics: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "schema_version": SCHEMA_VERSION,
        "family": model.family,
        "factory": _factory_ref(model.family),
        "model_config": model.config.to_dict(),
        "train_config": train_config,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "norm_stats": model.norm_store.state(),
        "metrics": metrics,
        "provenance": provenance(),
    }, path)


def _factory_ref(family: str) -> str | None:
    """How a fresh process finds a family that is not built in: its pkg.module:factory."""
    from superserve.models.registry import get_family

    origin = get_family(family).origin
    return origin if ":" in origin and not origin.startswith("entry point") else None


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


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The checkpoint file a model name stands for: a family's shipped checkpoint, or the path."""
    from superserve.models.registry import get_family, is_family

    name = str(name_or_path)
    if is_family(name) and not Path(name).is_file():
        info = get_family(name)
        if info.default_checkpoint is None:
            raise ConfigError(f"family {info.name!r} ships no checkpoint: pass its weights "
                              "(--weights FILE)")
        return Path(info.default_checkpoint)
    return Path(name)


def load_supernet(name_or_path: str | Path, map_location: str = "cpu",
                  weights: str | Path | None = None,
                  model_config: dict[str, Any] | None = None) -> torch.nn.Module:
    """A ready (eval-mode) supernet from a family name (its shipped checkpoint), a SuperServe
    checkpoint file, or a family name plus `weights`: a SuperServe checkpoint, or a file in the
    family's own layout (its FamilyInfo.load_weights, e.g. a published OFA checkpoint)."""
    from superserve.models.registry import get_family
    from superserve.subnetact.norm import NormStore

    if weights is not None:
        info = get_family(str(name_or_path))
        wpath = Path(weights)
        if not wpath.is_file():
            raise CheckpointError(f"no weights file at {wpath}")
        if info.load_weights is None or _is_superserve_checkpoint(wpath):
            model = load_supernet(wpath, map_location)
            if model.family != info.name:
                raise CheckpointError(f"{wpath} holds family {model.family!r}, not {info.name!r}")
            return model
        model = build_supernet(info.name, model_config)
        info.load_weights(model, str(wpath))
        model.checkpoint_path = str(wpath)
        model.metrics, model.train_config, model.provenance = {}, {}, {}
        return model.to(map_location).eval()
    path = resolve_checkpoint(name_or_path)
    ckpt = load_checkpoint(path)
    if ckpt.get("factory"):
        get_family(ckpt["factory"])  # imports and registers a user's family
    model = build_supernet(ckpt["family"], ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    model.norm_store = NormStore.from_state(ckpt["norm_stats"])
    model.checkpoint_path = str(path)
    model.metrics = ckpt.get("metrics", {})
    model.train_config = ckpt.get("train_config", {})
    model.provenance = ckpt.get("provenance", {})
    return model.to(map_location).eval()


def _is_superserve_checkpoint(path: Path) -> bool:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- not ours to judge here: the family's loader reports the real error
        return False
    return isinstance(ckpt, dict) and "schema_version" in ckpt and "family" in ckpt

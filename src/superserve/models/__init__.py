"""Supernet families, the public model contract, the family registry, checkpoints, training.

A family plugs in without editing the package: see superserve.models.contract (the contract),
superserve.models.registry (built-in names, the `superserve.models` entry-point group,
`pkg.module:factory`) and docs/models.md (a worked example).

Names are imported on first use (PEP 562), so the contract, the registry and the image
preprocessing import without torch (the server process uses them).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "FamilyInfo", "InputSpec", "SubnetSpace", "Supernet",
           "build_supernet", "checkpoint_path", "family_names", "file_sha256", "get_family",
           "is_family", "load_checkpoint", "load_supernet", "model_input_spec",
           "register_family", "save_checkpoint"]

_WHERE = {
    "build_supernet": "checkpoint", "checkpoint_path": "checkpoint", "file_sha256": "checkpoint",
    "load_checkpoint": "checkpoint", "load_supernet": "checkpoint",
    "save_checkpoint": "checkpoint",
    "FamilyInfo": "contract", "InputSpec": "contract", "SubnetSpace": "contract",
    "Supernet": "contract",
    "ENTRY_POINT_GROUP": "registry", "family_names": "registry", "get_family": "registry",
    "is_family": "registry", "model_input_spec": "registry", "register_family": "registry",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

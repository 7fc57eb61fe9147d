"""Supernet families, the public model contract, the family registry, checkpoints, training.

A family plugs in without editing the package: see superserve.models.contract (the contract),
superserve.models.registry (built-in names, the `superserve.models` entry-point group,
`pkg.module:factory`) and docs/models.md (a worked example).
"""

from superserve.models.checkpoint import (
    build_supernet,
    checkpoint_path,
    file_sha256,
    load_checkpoint,
    load_supernet,
    save_checkpoint,
)
from superserve.models.contract import FamilyInfo, InputSpec, SubnetSpace, Supernet
from superserve.models.registry import (
    ENTRY_POINT_GROUP,
    family_names,
    get_family,
    is_family,
    register_family,
)

__all__ = ["ENTRY_POINT_GROUP", "FamilyInfo", "InputSpec", "SubnetSpace", "Supernet",
           "build_supernet", "checkpoint_path", "family_names", "file_sha256", "get_family",
           "is_family", "load_checkpoint", "load_supernet", "register_family", "save_checkpoint"]

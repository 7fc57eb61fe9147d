"""The `ofa` package's reference networks (OFAResNets, OFAMobileNetV3), importable without
torchvision.

`ofa` imports torchvision only in its ImageNet data loader, and there is no usable CPU
torchvision here; the conformance tests and benchmarks/ofa_latency.py compare our families with
the reference networks, which need none of it. `reference_networks()` puts inert stand-ins for
the torchvision modules that loader touches into `sys.modules` (only when torchvision is not
importable already) and returns the two classes.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["reference_networks", "stub_torchvision"]

_STUBBED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
            "torchvision.datasets")


def stub_torchvision() -> None:
    if "torchvision" in sys.modules:
        return

    def stub(name: str) -> types.ModuleType:
        m = types.ModuleType(name)

        def getattr_(attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {"__init__": lambda self, *a, **k: None})

        m.__getattr__ = getattr_  # type: ignore[method-assign]
        return m

    for name in _STUBBED:
        sys.modules[name] = stub(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])


def reference_networks() -> tuple[type, type]:
    """(OFAMobileNetV3, OFAResNets) from the installed `ofa` package."""
    stub_torchvision()
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAResNets

    return OFAMobileNetV3, OFAResNets

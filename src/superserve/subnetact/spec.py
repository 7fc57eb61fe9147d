"""Subnet specifications: frozen, hashable values that travel with every batch.

`supernet(x, spec)` runs the subnet `spec` describes; nothing about the choice is stored on the
shared modules, so batches of different subnets may run at once (threads, overlapping calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from superserve.errors import InvalidSpecError

__all__ = ["ResNetSpec", "SubnetSpec", "ViTSpec", "spec_from_dict"]


@dataclass(frozen=True, slots=True)
class ResNetSpec:
    """OFA-ResNet-style subnet.

    depths[s]: blocks run in stage s (LayerSelect: the first depths[s] blocks);
    widths[s]: output-channel multiplier of stage s (WeightSlice);
    expands[s][b]: bottleneck width / stage output width of block b of stage s (WeightSlice);
    len(expands[s]) == depths[s].
    """

    depths: tuple[int, ...]
    widths: tuple[float, ...]
    expands: tuple[tuple[float, ...], ...]
    family: str = "resnet"

    def to_dict(self) -> dict[str, Any]:
        return {"family": "resnet", "depths": list(self.depths), "widths": list(self.widths),
                "expands": [list(e) for e in self.expands]}

    def short(self) -> str:
        return "d" + "".join(map(str, self.depths)) + "-w" + ",".join(f"{w:g}" for w in self.widths)


@dataclass(frozen=True, slots=True)
class ViTSpec:
    """DynaBERT/AutoFormer-style vision-transformer subnet.

    depth: layers kept, by DynaBERT's rule (LayerSelect); heads[i] / mlp[i]: attention heads
    and MLP hidden units of the i-th kept layer (WeightSlice: the first heads / units).
    """

    depth: int
    heads: tuple[int, ...]
    mlp: tuple[int, ...]
    family: str = "vit"

    def to_dict(self) -> dict[str, Any]:
        return {"family": "vit", "depth": self.depth, "heads": list(self.heads),
                "mlp": list(self.mlp)}

    def short(self) -> str:
        return f"L{self.depth}-h{sum(self.heads)}-m{sum(self.mlp)}"


SubnetSpec = Union[ResNetSpec, ViTSpec]


def _tuple(d: Mapping[str, Any], key: str, cast: type) -> tuple:
    if key not in d:
        raise InvalidSpecError(f"spec lacks the field {key!r}")
    v = d[key]
    if not isinstance(v, (list, tuple)):
        raise InvalidSpecError(f"spec field {key!r} must be a list, got {v!r}")
    try:
        return tuple(cast(e) for e in v)
    except (TypeError, ValueError) as e:
        raise InvalidSpecError(f"spec field {key!r} has a bad element in {v!r}") from e


def spec_from_dict(d: Mapping[str, Any]) -> SubnetSpec:
    """Parse a spec from its `to_dict()` form (structure only; the search space validates
    the values)."""
    if not isinstance(d, Mapping):
        raise InvalidSpecError(f"a spec must be a JSON object, got {type(d).__name__}")
    family = d.get("family")
    if family == "resnet":
        expands = d.get("expands")
        if not isinstance(expands, (list, tuple)):
            raise InvalidSpecError(f"spec field 'expands' must be a list of lists, got {expands!r}")
        try:
            ex = tuple(tuple(float(v) for v in e) for e in expands)
        except (TypeError, ValueError) as e:
            raise InvalidSpecError(f"spec field 'expands' is malformed: {expands!r}") from e
        return ResNetSpec(depths=_tuple(d, "depths", int), widths=_tuple(d, "widths", float),
                          expands=ex)
    if family == "vit":
        if "depth" not in d:
            raise InvalidSpecError("spec lacks the field 'depth'")
        try:
            depth = int(d["depth"])
        except (TypeError, ValueError) as e:
            raise InvalidSpecError(f"spec field 'depth' must be an integer, got {d['depth']!r}") from e
        return ViTSpec(depth=depth, heads=_tuple(d, "heads", int), mlp=_tuple(d, "mlp", int))
    raise InvalidSpecError(f"spec field 'family' must be 'resnet' or 'vit', got {family!r}")

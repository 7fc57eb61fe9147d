"""Subnet specifications: frozen, hashable values that travel with every batch.

`supernet(x, spec)` runs the subnet `spec` describes; nothing about the choice is stored on the
shared modules, so batches of different subnets may run at once (threads, overlapping calls).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from superserve.errors import InvalidSpecError

__all__ = ["OFAMBv3Spec", "OFAResNetSpec", "ResNetSpec", "Spec", "SubnetSpec", "ViTSpec",
           "register_spec_type", "spec_from_dict", "spec_types"]


@runtime_checkable
class Spec(Protocol):
    """What every subnet spec is (the public contract; see docs/models.md): a frozen, hashable
    value naming its family, with a JSON form `to_dict()` that carries "family" and a short
    human label. A family's space validates the values; `spec_from_dict` parses the structure
    by the "family" key with the parser registered for it."""

    family: str

    def to_dict(self) -> dict[str, Any]: ...

    def short(self) -> str: ...


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


@dataclass(frozen=True, slots=True)
class OFAResNetSpec:
    """OFA-ResNet50 subnet in OFA's own terms (`OFAResNets.set_active_subnet(d, e, w)`).

    d: 5 ints: d[0] == max depth keeps the input stem's middle (residual) conv, any other value
       skips it; d[1:] per stage, blocks run = base depth (2, 2, 4, 2) + d (LayerSelect);
    e: 18 floats, the expand ratio of every block (inactive blocks' entries are ignored);
    w: 6 ints, indices into the width multipliers: input stem 0+1, input stem 2, 4 stages;
    r: input resolution (elastic resolution; SubnetNorm statistics are per (subnet, r)).
    """

    d: tuple[int, ...]
    e: tuple[float, ...]
    w: tuple[int, ...]
    r: int = 224
    family: str = "ofa_resnet50"

    def __post_init__(self) -> None:  # lists (JSON, OFA's own dicts) become hashable tuples
        for name in ("d", "e", "w"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return {"family": "ofa_resnet50", "d": list(self.d), "e": list(self.e),
                "w": list(self.w), "r": self.r}

    def short(self) -> str:
        return "d" + "".join(map(str, self.d)) + "-w" + "".join(map(str, self.w)) + f"-r{self.r}"


@dataclass(frozen=True, slots=True)
class OFAMBv3Spec:
    """OFA-MobileNetV3 subnet in OFA's own terms (`OFAMobileNetV3.set_active_subnet(ks, e, d)`).

    ks, e: 20 entries, kernel size and expand ratio of every elastic block (inactive blocks'
    entries are ignored); d: 5 ints, blocks run per stage (LayerSelect); r: input resolution.
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int = 224
    family: str = "ofa_mbv3"

    def __post_init__(self) -> None:
        for name in ("ks", "e", "d"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return {"family": "ofa_mbv3", "ks": list(self.ks), "e": list(self.e), "d": list(self.d),
                "r": self.r}

    def short(self) -> str:
        return "d" + "".join(map(str, self.d)) + f"-k{sum(self.ks)}-e{sum(self.e)}-r{self.r}"


SubnetSpec = ResNetSpec | ViTSpec | OFAResNetSpec | OFAMBv3Spec | Spec


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


def _int(d: Mapping[str, Any], key: str, default: int | None = None) -> int:
    if key not in d and default is not None:
        return default
    try:
        return int(d[key])
    except KeyError as e:
        raise InvalidSpecError(f"spec lacks the field {key!r}") from e
    except (TypeError, ValueError) as e:
        raise InvalidSpecError(f"spec field {key!r} must be an integer, got {d[key]!r}") from e


def _resnet(d: Mapping[str, Any]) -> ResNetSpec:
    expands = d.get("expands")
    if not isinstance(expands, (list, tuple)):
        raise InvalidSpecError(f"spec field 'expands' must be a list of lists, got {expands!r}")
    try:
        ex = tuple(tuple(float(v) for v in e) for e in expands)
    except (TypeError, ValueError) as e:
        raise InvalidSpecError(f"spec field 'expands' is malformed: {expands!r}") from e
    return ResNetSpec(depths=_tuple(d, "depths", int), widths=_tuple(d, "widths", float),
                      expands=ex)


def _vit(d: Mapping[str, Any]) -> ViTSpec:
    return ViTSpec(depth=_int(d, "depth"), heads=_tuple(d, "heads", int), mlp=_tuple(d, "mlp", int))


def _ofa_resnet(d: Mapping[str, Any]) -> OFAResNetSpec:
    return OFAResNetSpec(d=_tuple(d, "d", int), e=_tuple(d, "e", float), w=_tuple(d, "w", int),
                         r=_int(d, "r", 224))


def _ofa_mbv3(d: Mapping[str, Any]) -> OFAMBv3Spec:
    return OFAMBv3Spec(ks=_tuple(d, "ks", int), e=_tuple(d, "e", int), d=_tuple(d, "d", int),
                       r=_int(d, "r", 224))


# family name -> parser of its to_dict() form; user families add theirs (register_spec_type)
_PARSERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "resnet": _resnet, "vit": _vit, "ofa_resnet50": _ofa_resnet, "ofa_mbv3": _ofa_mbv3}


def register_spec_type(family: str, parse: Callable[[Mapping[str, Any]], Any]) -> None:
    """Make `spec_from_dict` parse `{"family": family, ...}` with `parse` (for example a spec
    dataclass's `from_dict`). Called by the model registry when a family is registered."""
    if not family or not isinstance(family, str):
        raise InvalidSpecError(f"a spec family must be a non-empty string, got {family!r}")
    _PARSERS[family] = parse


def _from_registry(family: str) -> Callable[[Mapping[str, Any]], Any] | None:
    """A family not seen in this process yet (an installed plugin's entry point): ask the model
    registry, which registers its parser. Imported here only: this module stays torch-free."""
    try:
        from superserve.models.registry import get_family

        get_family(family)
    except Exception:  # noqa: BLE001 -- unknown or broken: the caller reports the family
        return None
    return _PARSERS.get(family)


def spec_types() -> list[str]:
    return sorted(_PARSERS)


def spec_from_dict(d: Mapping[str, Any]) -> SubnetSpec:
    """Parse a spec from its `to_dict()` form (structure only; the search space validates
    the values)."""
    if not isinstance(d, Mapping):
        raise InvalidSpecError(f"a spec must be a JSON object, got {type(d).__name__}")
    family = d.get("family")
    parse = _PARSERS.get(family) if isinstance(family, str) else None
    if parse is None and isinstance(family, str) and family:
        parse = _from_registry(family)
    if parse is None:
        raise InvalidSpecError(f"spec field 'family' must be one of {spec_types()}, got "
                               f"{family!r} (a user family registers its spec type first)")
    spec = parse(d)
    if not isinstance(spec, Spec):
        raise InvalidSpecError(f"the {family!r} spec parser returned {type(spec).__name__}, "
                               "not a spec (to_dict, short, family)")
    return spec

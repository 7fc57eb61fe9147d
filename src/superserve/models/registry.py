"""The family registry: a family name -> FamilyInfo, without editing the package.

Three ways in, all resolved by `get_family(name)`:

1. built in: "resnet", "vit" (MNIST-5k, shipped checkpoints), "ofa_resnet50", "ofa_mbv3"
   (OFA's ImageNet supernets; the user brings the weights);
2. the entry-point group `superserve.models` of any installed distribution, e.g. in its
   pyproject.toml:  [project.entry-points."superserve.models"]  my_net = "my_pkg.family:FAMILY"
3. `pkg.module:factory` given directly (`--model my_pkg.family:FAMILY`).

The object named is a `FamilyInfo`, or a zero-argument callable returning one, or a factory
`factory(**config) -> Supernet` (the family is then named by the built supernet's `family`).
Registering a family also registers its spec parser, so tables and SubnetNorm files of that
family parse (`superserve.subnetact.spec_from_dict`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from superserve.errors import ConfigError
from superserve.models.contract import FamilyInfo, InputSpec

__all__ = ["ENTRY_POINT_GROUP", "family_names", "get_family", "is_family", "refresh_entry_points",
           "register_family"]

# This module imports without torch (the server process reads a family's input contract from
# it): torch-importing modules are imported inside the functions that need them.

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "superserve.models"

_FAMILIES: dict[str, FamilyInfo] = {}
_LOADED_ENTRY_POINTS = False


def _build_resnet(cfg: Mapping[str, Any]):
    from superserve.models.resnet import ResNetConfig, ResNetSupernet

    return ResNetSupernet(ResNetConfig(**_tuples(cfg)))


def _build_vit(cfg: Mapping[str, Any]):
    from superserve.models.vit import ViTConfig, ViTSupernet

    return ViTSupernet(ViTConfig(**_tuples(cfg)))


def _build_ofa_resnet50(cfg: Mapping[str, Any]):
    from superserve.models.ofa_resnet import OFAResNet50, OFAResNetConfig

    return OFAResNet50(OFAResNetConfig(**_tuples(cfg)))


def _build_ofa_mbv3(cfg: Mapping[str, Any]):
    from superserve.models.ofa_mbv3 import OFAMBv3Config, OFAMobileNetV3

    return OFAMobileNetV3(OFAMBv3Config(**_tuples(cfg)))


def _load_ofa_weights(net, path: str) -> None:
    from superserve.models.ofa_weights import load_ofa_weights

    load_ofa_weights(net, path)


def register_spec_type(name: str, parse: Any) -> None:
    from superserve.subnetact.spec import register_spec_type as register

    register(name, parse)


def _mnist_input(cfg: Mapping[str, Any]) -> InputSpec:
    return InputSpec.mnist(int(cfg.get("image_size", 28)), int(cfg.get("num_classes", 10)))


def _ofa_input(cfg: Mapping[str, Any]) -> InputSpec:
    # the defaults of OFAResNetConfig / OFAMBv3Config (tests/test_images.py pins them equal)
    return InputSpec.imagenet(int(cfg.get("image_size", 224)),
                              tuple(cfg.get("resolutions", (128, 160, 192, 224))),
                              int(cfg.get("num_classes", 1000)))


def _mnist_calibration(net: Any) -> Any:
    """The MNIST families calibrate on their own training data (the checkpoint says which)."""
    from superserve.data import load_digits8, load_mnist

    dataset = getattr(net, "train_config", {}).get("dataset", "mnist")
    return (load_mnist() if dataset == "mnist" else load_digits8()).train[0]


def _tuples(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in (cfg or {}).items()}


def _builtins() -> None:
    # superserve.models.checkpoint.checkpoint_path, without importing torch
    shipped = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"

    for info in (
        FamilyInfo("resnet", _build_resnet, default_checkpoint=str(shipped / "resnet.pt"),
                   description="OFA-ResNet-style CNN on MNIST-5k (BatchNorm: SubnetNorm)",
                   input_spec=_mnist_input, calibration_data=_mnist_calibration),
        FamilyInfo("vit", _build_vit, default_checkpoint=str(shipped / "vit.pt"),
                   description="DynaBERT/AutoFormer-style ViT on MNIST-5k (LayerNorm)",
                   input_spec=_mnist_input, calibration_data=_mnist_calibration),
        FamilyInfo("ofa_resnet50", _build_ofa_resnet50, load_weights=_load_ofa_weights,
                   description="OFA-ResNet50 (ImageNet; depth 0-2, expand 0.2/0.25/0.35, "
                               "width 0.65/0.8/1.0); weights: the user's OFA checkpoint",
                   input_spec=_ofa_input),
        FamilyInfo("ofa_mbv3", _build_ofa_mbv3, load_weights=_load_ofa_weights,
                   description="OFA-MobileNetV3 w1.2 (ImageNet; kernel 3/5/7, expand 3/4/6, "
                               "depth 2-4); weights: the user's OFA checkpoint",
                   input_spec=_ofa_input),
    ):
        _FAMILIES.setdefault(info.name, info)


def register_family(info: FamilyInfo, *, replace: bool = False) -> FamilyInfo:
    """Add a family (and its spec parser). A name already taken is an error unless `replace`."""
    if not isinstance(info, FamilyInfo):
        raise ConfigError(f"register_family needs a FamilyInfo, got {type(info).__name__}")
    if not info.name or ":" in info.name or "/" in info.name:
        raise ConfigError(f"a family name must be non-empty without ':' or '/', got {info.name!r}")
    _ensure()
    old = _FAMILIES.get(info.name)
    if old is not None and old is not info and not replace:
        raise ConfigError(f"family {info.name!r} is already registered ({old.origin})")
    _FAMILIES[info.name] = info
    if info.parse_spec is not None:
        register_spec_type(info.name, info.parse_spec)
    return info


def _ensure() -> None:
    global _LOADED_ENTRY_POINTS
    if not _FAMILIES:
        _builtins()
    if _LOADED_ENTRY_POINTS:
        return
    _LOADED_ENTRY_POINTS = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _FAMILIES:
            log.warning("entry point %s = %s ignored: family %r exists", ep.name, ep.value,
                        ep.name)
            continue
        # loaded lazily: importing a user's package happens only when its family is asked for
        _FAMILIES[ep.name] = FamilyInfo(ep.name, build=_lazy(ep), origin=f"entry point {ep.value}")


def _lazy(ep: metadata.EntryPoint):
    def build(cfg: Mapping[str, Any]):
        return _resolve_object(ep.load(), ep.value, ep.name).build(cfg)

    build.entry_point = ep  # type: ignore[attr-defined]
    return build


def _resolve_object(obj: Any, ref: str, name: str | None = None) -> FamilyInfo:
    if isinstance(obj, FamilyInfo):
        info = obj
    elif callable(obj):
        made = obj()
        if isinstance(made, FamilyInfo):
            info = made
        elif hasattr(made, "forward_ctx") and hasattr(made, "space"):
            info = FamilyInfo(str(getattr(made, "family", name or ref)),
                              build=lambda cfg, f=obj: f(**dict(cfg or {})))
        else:
            raise ConfigError(f"{ref} returned {type(made).__name__}: expected a FamilyInfo or "
                              "a supernet (forward_ctx, space)")
    else:
        raise ConfigError(f"{ref} is a {type(obj).__name__}: expected a FamilyInfo or a callable")
    if info.origin == "builtin":
        info = FamilyInfo(**{**info.__dict__, "origin": ref})
    return info


def is_family(name: str) -> bool:
    """Whether `name` names a family (registered, an entry point, or pkg.module:factory)."""
    _ensure()
    if name in _FAMILIES:
        return True
    return ":" in name and not name.startswith((".", "/")) and "/" not in name.split(":")[0]


def get_family(name: str) -> FamilyInfo:
    """The FamilyInfo for a name or a `pkg.module:factory` reference (imported and registered)."""
    _ensure()
    info = _FAMILIES.get(name)
    if info is not None:
        ep = getattr(info.build, "entry_point", None)
        if ep is not None:  # first use of an entry-point family: load the real FamilyInfo
            info = _resolve_object(ep.load(), f"entry point {ep.value}", name)
            _FAMILIES[name] = info
            if info.parse_spec is not None:
                register_spec_type(info.name, info.parse_spec)
        return info
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import model factory {name!r}: {e}") from e
        info = _resolve_object(obj, name)
        existing = _FAMILIES.get(info.name)
        if existing is not None and existing.origin != info.origin:
            raise ConfigError(f"{name} defines family {info.name!r}, which is already "
                              f"registered ({existing.origin})")
        return register_family(info, replace=True)
    raise ConfigError(f"unknown model family {name!r}; known: {', '.join(family_names())} "
                      f"(or pkg.module:factory, or the {ENTRY_POINT_GROUP!r} entry-point group)")


def refresh_entry_points() -> None:
    """Scan the entry-point group again (after installing a plugin in a running process)."""
    global _LOADED_ENTRY_POINTS
    _LOADED_ENTRY_POINTS = False
    _ensure()


def family_names() -> list[str]:
    _ensure()
    return list(_FAMILIES)


def model_input_spec(model: str, weights: str = "") -> InputSpec:
    """The input contract of what `load_supernet(model, weights=...)` builds. A family name
    whose FamilyInfo declares `input_spec` is answered without torch (the default config: what
    the shipped checkpoints and a foreign-layout weight file build); anything else (a
    checkpoint path, a SuperServe checkpoint as weights, a family without `input_spec`) loads
    the supernet once."""
    _ensure()
    info = _FAMILIES.get(model)
    pure = info is not None and info.input_spec is not None and not Path(model).is_file()
    if pure and (not weights or info.load_weights is not None and not _superserve_file(weights)):
        return info.input_spec({})
    from superserve.models.checkpoint import load_supernet

    return load_supernet(model, weights=weights or None).input_spec


def _superserve_file(path: str) -> bool:
    """Whether a weights file is a SuperServe checkpoint (its model config may differ from the
    family's default), read from the zip's member names without torch."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") and b"schema_version" in z.read(n)
                       for n in z.namelist()[:64])
    except (OSError, zipfile.BadZipFile, KeyError):
        return False

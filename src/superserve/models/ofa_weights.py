"""OFA's published weight files into our OFA families, and what both families share.

A published OFA checkpoint is `{"state_dict": {...}}` or a bare state dict, in one of the key
layouts OFA has used (`.mobile_inverted_conv.` for `.conv.`, `.bn.bn.` or `.bn.`,
`.conv.conv.weight` or `.conv.weight`, `.linear.linear.` or `.linear.`; an optional `module.`
prefix from DataParallel). Keys are brought to one canonical layout, which our modules' own
state-dict names follow, and loaded strictly: a missing or unexpected tensor is an error that
names it. Nothing is downloaded: the user passes the file.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from superserve.errors import CheckpointError, InvalidSpecError
from superserve.models.contract import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "canonical_key", "load_ofa_weights",
           "make_divisible", "ofa_state_dict", "prepare_input"]

log = logging.getLogger(__name__)

CHANNEL_DIVISIBLE = 8


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE) -> int:
    """OFA's (TF slim's) channel rounding: nearest multiple of `divisor`, never below 90%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def canonical_key(key: str) -> str:
    key = key.removeprefix("module.")
    for old, new in ((".mobile_inverted_conv.", ".conv."), (".bn.bn.", ".bn."),
                     (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear.")):
        key = key.replace(old, new)
    return key


def ofa_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The tensors of a published OFA file (already loaded), keys in the canonical layout."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"an OFA checkpoint is a state dict or {{'state_dict': ...}}, "
                              f"got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"OFA checkpoint entry {k!r} is not a tensor")
        if k.endswith("num_batches_tracked"):
            continue
        out[canonical_key(str(k))] = v
    return out


def load_ofa_weights(net: torch.nn.Module, path: str | Path) -> None:
    """Load a published OFA checkpoint file into `net` (an OFA family of matching config), and
    store the file's BN running statistics as the SubnetNorm statistics of the largest subnet
    (every other subnet is calibrated: superserve profile, or net.calibrate)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no OFA checkpoint at {p}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise CheckpointError(f"{p} is not a readable torch file: {e}") from e
    load_ofa_state_dict(net, ofa_state_dict(raw), source=str(p))


def load_ofa_state_dict(net: torch.nn.Module, sd: Mapping[str, torch.Tensor],
                        source: str = "state dict") -> None:
    sd = {canonical_key(k): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit {net.family} with config {net.config.to_dict()}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    bad = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own
           if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch (key, file, model): {bad[:5]}")
    net.load_state_dict(sd, strict=True)
    net.norm_store = type(net.norm_store)(net.norm_store.dtype)
    net.store_shared_stats([net.space.largest()])
    log.info("loaded OFA weights from %s into %s", source, net.family)


def prepare_input(x: torch.Tensor, r: int, mean: torch.Tensor, std: torch.Tensor
                  ) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> normalised, resized to the subnet's resolution r when it
    differs (elastic resolution: the batch is preprocessed before its subnet is chosen)."""
    if x.shape[-1] != r or x.shape[-2] != r:
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


# ----------------------------------------------------------------------------- spaces
def check_choices(name: str, values: Sequence, n: int, choices: Sequence, what: str = "values"
                  ) -> None:
    """A spec field of `n` entries, each one of `choices` (InvalidSpecError otherwise)."""
    if len(values) != n or any(v not in choices for v in values):
        raise InvalidSpecError(f"{name} must be {n} {what} from {list(choices)}, got "
                               f"{list(values)}")


def check_resolution(r: int, resolutions: Sequence[int]) -> None:
    if r not in resolutions:
        raise InvalidSpecError(f"r={r} is not one of {list(resolutions)}")


def crossover_spec(a: object, b: object, rng: random.Random) -> object:
    """Uniform crossover of two OFA specs of one type, in field order: tuple fields
    element-wise, the others (the resolution) whole; `family` is kept."""
    mixed = {}
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        if f.name == "family":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        mixed[f.name] = (tuple(u if rng.random() < 0.5 else v for u, v in zip(x, y))
                         if isinstance(x, tuple) else (x if rng.random() < 0.5 else y))
    return dataclasses.replace(a, **mixed)  # type: ignore[type-var]

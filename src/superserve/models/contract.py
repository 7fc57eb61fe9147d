"""The public model contract: what a supernet family gives SuperServe (docs/models.md).

A family is a name plus a factory that builds a `Supernet` from a config dict. The supernet is
an `nn.Module` that

- has a subnet `space` (`SubnetSpace`: largest, smallest, sample, validate, spec_from_dict,
  mutate, crossover, size) whose specs are frozen, hashable values (`superserve.subnetact.Spec`);
- runs a subnet per call: `forward(x, spec)` and `forward_ctx(x, spec, ctx)` (LayerSelect and
  WeightSlice inside; nothing about the spec is stored on the module);
- keeps SubnetNorm statistics in `norm_store` and computes them with `calibrate(specs, images)`
  (families without BatchNorm set `uses_norm_stats = False`);
- declares its input with an `InputSpec` value (shape, value range, mean/std, resize and crop,
  labels): preprocessing is data, not code in the server;
- reports `flops(spec)`, `params(spec)` and `num_layers(spec)` (the profiler's latency model);
- saves and loads as a checkpoint (`config.to_dict()`, `state_dict()`); families whose users
  hold weights in another layout (OFA's published files) add `load_weights(path)`.

`SupernetMixin` (superserve.models.base) implements forward / calibrate / norm_store for a
module that defines `forward_ctx`; the shipped families and the worked example use it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from superserve.errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FamilyInfo", "InputSpec", "SubnetSpace",
           "Supernet", "read_labels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class InputSpec:
    """What one input image is, after preprocessing, and how to get there from a decoded image.

    The tensor a supernet takes is (B, channels, height, width), float32, `value_range` before
    normalisation; the model normalises with mean/std itself (so FP32 tensor clients send raw
    pixel values in [0, 1]). An image decoder resizes the shorter side to `resize` (0: no
    resize), centre-crops `height` x `width` and scales to [0, 1].
    """

    channels: int  # 1 (grey) or 3 (RGB)
    height: int
    width: int
    mean: tuple[float, ...]  # per channel, applied by the model: (x - mean) / std
    std: tuple[float, ...]
    resize: int = 0  # shorter side before the centre crop (ImageNet: 256 for a 224 crop); 0: none
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"
    value_range: tuple[float, float] = (0.0, 1.0)  # the pixel values the model expects
    labels: tuple[str, ...] | None = None  # class names by output index, when known
    resolutions: tuple[int, ...] = ()  # elastic input resolutions (the spec picks one; the
    # model resizes the batch to it); empty: fixed height x width
    num_classes: int = 0  # outputs per image (with `labels`: what the server's metadata and
    # the classification extension say); 0: unknown

    def __post_init__(self) -> None:
        if self.channels < 1 or self.height < 1 or self.width < 1:
            raise ConfigError(f"channels, height and width must be >= 1, got "
                              f"{(self.channels, self.height, self.width)}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ConfigError(f"{name} needs {self.channels} values, got {getattr(self, name)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be > 0, got {self.std}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ConfigError(f"interpolation must be bilinear, bicubic or nearest, got "
                              f"{self.interpolation!r}")
        if self.num_classes < 0 or self.labels is not None and self.num_classes and \
                len(self.labels) != self.num_classes:
            raise ConfigError(f"num_classes={self.num_classes} does not fit "
                              f"{len(self.labels or ())} labels")
        if self.resize and self.resize < min(self.height, self.width):
            raise ConfigError(f"resize={self.resize} is smaller than the crop "
                              f"{self.height}x{self.width}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image: (C, H, W)."""
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_labels(self, labels: Sequence[str], source: str = "labels") -> InputSpec:
        """This input with class names `labels` (output index order), one per output."""
        labels = tuple(labels)
        if self.num_classes and len(labels) != self.num_classes:
            raise ConfigError(f"{source} names {len(labels)} classes but the model has "
                              f"{self.num_classes} outputs: one class name per line, in "
                              "output-index order")
        return replace(self, labels=labels, num_classes=self.num_classes or len(labels))

    @classmethod
    def mnist(cls, size: int = 28, num_classes: int = 10) -> InputSpec:
        """Grey digits: 1 x size x size, MNIST mean/std, labels "0".."9" (no resize: a larger
        image is scaled to `size` and centre-cropped)."""
        return cls(1, size, size, (MNIST_MEAN,), (MNIST_STD,),
                   labels=tuple(str(i) for i in range(num_classes)), num_classes=num_classes)

    @classmethod
    def imagenet(cls, size: int = 224, resolutions: Sequence[int] = (),
                 num_classes: int = 1000) -> InputSpec:
        """An ImageNet model's input: RGB, shorter side to ceil(size / 0.875), centre crop
        size x size, ImageNet mean/std (OFA's and timm's evaluation transform)."""
        return cls(3, size, size, IMAGENET_MEAN, IMAGENET_STD, resize=math.ceil(size / 0.875),
                   resolutions=tuple(resolutions), num_classes=num_classes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def read_labels(path: str | Path) -> tuple[str, ...]:
    """A labels file as Triton's classification extension reads one: one class name per line,
    line i naming output i. Trailing empty lines are ignored; an empty line among the names
    is an error (it would shift every index after it)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"labels file {p}: cannot read it: {e}") from None
    lines = [ln.rstrip() for ln in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"labels file {p} is empty: one class name per line")
    empty = [i + 1 for i, ln in enumerate(lines) if not ln]
    if empty:
        raise ConfigError(f"labels file {p}: line {empty[0]} is empty (line i names output "
                          "i - 1; an empty line would shift the rest)")
    return tuple(lines)


@runtime_checkable
class SubnetSpace(Protocol):
    """The subnets a supernet can run, and the moves the Pareto search makes among them."""

    def largest(self) -> Any: ...

    def smallest(self) -> Any: ...

    def sample(self, rng: random.Random) -> Any: ...

    def size(self) -> int: ...

    def validate(self, spec: Any) -> Any: ...  # returns the spec or raises InvalidSpecError

    def spec_from_dict(self, d: Mapping[str, Any]) -> Any: ...

    def mutate(self, spec: Any, rng: random.Random, prob: float = 0.1) -> Any: ...

    def crossover(self, a: Any, b: Any, rng: random.Random) -> Any: ...


@runtime_checkable
class Supernet(Protocol):
    """What the profiler, the worker and the server use of a model (all of it, no shortcut)."""

    family: str
    space: SubnetSpace
    input_spec: InputSpec
    uses_norm_stats: bool
    norm_store: Any  # superserve.subnetact.NormStore

    def __call__(self, x: Any, spec: Any) -> Any: ...  # (B, C, H, W) -> (B, classes)

    def forward_ctx(self, x: Any, spec: Any, ctx: Any) -> Any: ...

    def calibrate(self, specs: Iterable[Any], images: Any, n: int = 2000, seed: int = 0,
                  batch_size: int | None = None) -> None: ...

    def flops(self, spec: Any) -> int: ...

    def params(self, spec: Any) -> int: ...

    def num_layers(self, spec: Any) -> int: ...


@dataclass(frozen=True)
class FamilyInfo:
    """A registered family: how to build it, parse its specs and find its weights.

    build: config dict (the checkpoint's `model_config`; {} for the defaults) -> Supernet;
    parse_spec: `to_dict()` form -> spec (registered with superserve.subnetact.spec);
    load_weights: (supernet, path) -> None for weight files in a foreign layout (optional);
    default_checkpoint: a shipped SuperServe checkpoint (optional);
    origin: where it came from ("builtin", "entry point <name>", "pkg.module:factory");
    input_spec: config dict -> InputSpec without building the model (optional: the server
        process reads the input contract from it and imports no torch; without it the server
        builds the supernet once to read `input_spec`);
    calibration_data: supernet -> images (N, C, H, W) float32 for SubnetNorm statistics of
        served subnets that have none (optional: without it a worker refuses to serve a
        subnet without statistics and says to run `superserve profile --data DIR`).
    """

    name: str
    build: Callable[[Mapping[str, Any]], Any]
    parse_spec: Callable[[Mapping[str, Any]], Any] | None = None
    load_weights: Callable[[Any, str], None] | None = None
    default_checkpoint: str | None = None
    description: str = ""
    origin: str = "builtin"
    tags: Sequence[str] = ()
    input_spec: Callable[[Mapping[str, Any]], InputSpec] | None = None
    calibration_data: Callable[[Any], Any] | None = None

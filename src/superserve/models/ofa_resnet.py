"""OFA-ResNet50 on SubNetAct: the paper's CNN (OFAResNets, depth 0-2, expand 0.2/0.25/0.35,
width multiplier 0.65/0.8/1.0), loading OFA's published state-dict layout.

    x (B, 3, H, W) in [0, 1] -> resize to r, normalise (ImageNet mean/std)
    -> input stem: conv3x3 s2 (3 -> c0) BN ReLU, [conv3x3 (c0 -> c0) BN ReLU + x], conv3x3
       (c0 -> c2) BN ReLU; the middle one runs iff d[0] is the largest depth  (B, c2, r/2, r/2)
    -> maxpool 3x3 s2
    -> 4 stages, stage s runs its first base[s] + d[s+1] bottlenecks (LayerSelect):
       residual = [avgpool s] conv1x1 (cin -> out) BN (first block) or identity;
       conv1x1 (cin -> mid) BN ReLU, conv3x3 s (mid -> mid) BN ReLU, conv1x1 (mid -> out) BN,
       + residual, ReLU; out = width option w[s+2] of the stage, mid = md(round(out * e))
    -> global average pool -> linear (out -> 1000)                         (B, 1000)

Every conv slices its one full weight (WeightSlice); every BN takes the spec's statistics from
the NormStore (SubnetNorm, float32 here). The spec (OFAResNetSpec) is OFA's `d`/`e`/`w` plus the
resolution `r`. Checked against the reference package `ofa` in tests/test_ofa_conformance.py.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from superserve.errors import ConfigError, InvalidSpecError
from superserve.models.base import SupernetMixin
from superserve.models.contract import InputSpec
from superserve.models.ofa_weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_choices,
    check_resolution,
    crossover_spec,
    make_divisible,
    prepare_input,
)
from superserve.subnetact.norm import NormContext
from superserve.subnetact.ops import ConvBN, SlicedLinear
from superserve.subnetact.spec import OFAResNetSpec, spec_from_dict

__all__ = ["OFAResNet50", "OFAResNetConfig", "OFAResNetSpace"]

BASE_DEPTHS = (2, 2, 4, 2)  # blocks per stage at depth 0 (OFA's ResNets.BASE_DEPTH_LIST)
STAGE_WIDTHS = (256, 512, 1024, 2048)
STAGE_STRIDES = (1, 2, 2, 2)


@dataclass(frozen=True)
class OFAResNetConfig:
    num_classes: int = 1000
    depth_choices: tuple[int, ...] = (0, 1, 2)  # extra blocks per stage (OFA's depth_list)
    expand_choices: tuple[float, ...] = (0.2, 0.25, 0.35)  # OFA's expand_ratio_list
    width_choices: tuple[float, ...] = (0.65, 0.8, 1.0)  # OFA's width_mult_list
    resolutions: tuple[int, ...] = (128, 160, 192, 224)  # elastic input resolution
    image_size: int = 224  # the input contract's crop (the batch is resized to the spec's r)

    def __post_init__(self) -> None:
        for name in ("depth_choices", "expand_choices", "width_choices", "resolutions"):
            v = getattr(self, name)
            if not v or list(v) != sorted(set(v)):
                raise ConfigError(f"{name} must be non-empty and strictly increasing, got {v}")
        if self.depth_choices[0] < 0:
            raise ConfigError(f"depth_choices must be >= 0, got {self.depth_choices}")
        if self.resolutions[0] < 32:
            raise ConfigError(f"resolutions must be >= 32, got {self.resolutions}")

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        return tuple(b + self.depth_choices[-1] for b in BASE_DEPTHS)

    def to_dict(self) -> dict:
        return asdict(self)


class OFAResNetSpace:
    """The OFAResNetSpecs a config allows. Entries of `e` for blocks a spec does not run are
    set to the smallest expand ratio by sample/mutate/crossover, so one subnet has one spec."""

    def __init__(self, config: OFAResNetConfig) -> None:
        self.config = config
        self.num_blocks = sum(config.stage_blocks)
        starts, n = [], 0
        for b in config.stage_blocks:
            starts.append(n)
            n += b
        self.stage_start = tuple(starts)

    def active_blocks(self, spec: OFAResNetSpec) -> list[int]:
        return [self.stage_start[s] + b for s in range(4) for b in range(BASE_DEPTHS[s] + spec.d[s + 1])]

    def canonical(self, spec: OFAResNetSpec) -> OFAResNetSpec:
        c = self.config
        active = set(self.active_blocks(spec))
        e = tuple(v if i in active else c.expand_choices[0] for i, v in enumerate(spec.e))
        d0 = spec.d[0] if spec.d[0] == c.depth_choices[-1] else c.depth_choices[0]
        return OFAResNetSpec((d0,) + tuple(spec.d[1:]), e, spec.w, spec.r)

    def largest(self) -> OFAResNetSpec:
        c = self.config
        return OFAResNetSpec((c.depth_choices[-1],) * 5, (c.expand_choices[-1],) * self.num_blocks,
                             (len(c.width_choices) - 1,) * 6, c.resolutions[-1])

    def smallest(self) -> OFAResNetSpec:
        c = self.config
        return OFAResNetSpec((c.depth_choices[0],) * 5, (c.expand_choices[0],) * self.num_blocks,
                             (0,) * 6, c.resolutions[0])

    def sample(self, rng: random.Random) -> OFAResNetSpec:
        c = self.config
        d = (rng.choice((c.depth_choices[0], c.depth_choices[-1])),) + tuple(
            rng.choice(c.depth_choices) for _ in range(4))
        return self.canonical(OFAResNetSpec(
            d, tuple(rng.choice(c.expand_choices) for _ in range(self.num_blocks)),
            tuple(rng.randrange(len(c.width_choices)) for _ in range(6)), rng.choice(c.resolutions)))

    def size(self) -> int:
        c = self.config
        n = 2 * len(c.width_choices) ** 6 * len(c.resolutions)
        for s in range(4):
            n *= sum(len(c.expand_choices) ** (BASE_DEPTHS[s] + d) for d in c.depth_choices)
        return n

    def validate(self, spec: OFAResNetSpec) -> OFAResNetSpec:
        c = self.config
        if not isinstance(spec, OFAResNetSpec):
            raise InvalidSpecError(f"an ofa_resnet50 supernet needs an OFAResNetSpec, got "
                                   f"{type(spec).__name__}")
        check_choices("d", spec.d, 5, c.depth_choices)
        check_choices("e", spec.e, self.num_blocks, c.expand_choices)
        check_choices("w", spec.w, 6, range(len(c.width_choices)),
                      what=f"indices into {list(c.width_choices)}, i.e.")
        check_resolution(spec.r, c.resolutions)
        return spec

    def spec_from_dict(self, d: dict) -> OFAResNetSpec:
        return self.validate(spec_from_dict(d))  # type: ignore[arg-type]

    def mutate(self, spec: OFAResNetSpec, rng: random.Random, prob: float = 0.1) -> OFAResNetSpec:
        c = self.config
        pick = lambda v, choices: rng.choice(choices) if rng.random() < prob else v
        d = tuple(pick(v, c.depth_choices) for v in spec.d)
        e = tuple(pick(v, c.expand_choices) for v in spec.e)
        w = tuple(pick(v, range(len(c.width_choices))) for v in spec.w)
        return self.canonical(OFAResNetSpec(d, e, w, pick(spec.r, c.resolutions)))

    def crossover(self, a: OFAResNetSpec, b: OFAResNetSpec, rng: random.Random) -> OFAResNetSpec:
        return self.canonical(crossover_spec(a, b, rng))  # type: ignore[arg-type]


class _Residual(nn.Module):
    """The input stem's middle layer: x + ReLU(BN(conv(x))) (OFA's ResidualBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels, 3, 1)

    def forward(self, x: torch.Tensor, ctx: NormContext) -> torch.Tensor:
        return x + F.relu(self.conv(x, ctx, x.shape[1]), inplace=True)


class _Bottleneck(nn.Module):
    """One elastic bottleneck (OFA's DynamicResNetBottleneckBlock, avgpool_conv shortcut)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = ConvBN(cin, mid, 1)
        self.conv2 = ConvBN(mid, mid, 3, stride)
        self.conv3 = ConvBN(mid, cout, 1)
        self.downsample = ConvBN(cin, cout, 1) if downsample else None

    def forward(self, x: torch.Tensor, mid: int, out: int, ctx: NormContext) -> torch.Tensor:
        if self.downsample is None:
            res = x
        else:
            xs = x if self.stride == 1 else F.avg_pool2d(x, self.stride, self.stride, 0, True)
            res = self.downsample(xs, ctx, out)
        h = F.relu(self.conv1(x, ctx, mid), inplace=True)  # in place: a fresh BN output
        h = F.relu(self.conv2(h, ctx, mid), inplace=True)
        h = self.conv3(h, ctx, out)
        return F.relu(h + res, inplace=True)


class _Classifier(nn.Module):
    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.linear = SlicedLinear(cin, classes)


class OFAResNet50(SupernetMixin, nn.Module):
    family = "ofa_resnet50"
    norm_dtype = torch.float32
    eval_batch_size = 32  # 224 px: 32 images of activations per forward, not 200

    def __init__(self, config: OFAResNetConfig = OFAResNetConfig()) -> None:
        super().__init__()
        self._init_norm()
        self.config = c = config
        self.space = OFAResNetSpace(config)
        self.stem_out = [make_divisible(64 * w) for w in c.width_choices]  # c2 options
        self.stem_mid = [make_divisible(ch // 2) for ch in self.stem_out]  # c0 options
        self.stage_out = [[make_divisible(base * w) for w in c.width_choices] for base in STAGE_WIDTHS]
        c0, c2 = max(self.stem_mid), max(self.stem_out)
        self.input_stem = nn.ModuleList([ConvBN(3, c0, 3, 2), _Residual(c0), ConvBN(c0, c2, 3, 1)])
        blocks, cin = [], self.stem_out
        for s, n in enumerate(c.stage_blocks):
            out = self.stage_out[s]
            mid = make_divisible(round(max(out) * c.expand_choices[-1]))
            for b in range(n):
                stride = STAGE_STRIDES[s] if b == 0 else 1
                blocks.append(_Bottleneck(max(cin), mid, max(out), stride,
                                          downsample=not (stride == 1 and cin == out)))
                cin = out
        self.blocks = nn.ModuleList(blocks)
        self.classifier = _Classifier(max(cin), c.num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def input_spec(self) -> InputSpec:
        s = self.config.image_size
        return InputSpec.imagenet(s, self.config.resolutions, self.config.num_classes)

    def _plan(self, spec: OFAResNetSpec) -> list[tuple[int, int, int]]:
        """(block index, mid, out) of every block the spec runs, in order (LayerSelect)."""
        plan = []
        for s in range(4):
            out = self.stage_out[s][spec.w[s + 2]]
            for b in range(BASE_DEPTHS[s] + spec.d[s + 1]):
                i = self.space.stage_start[s] + b
                plan.append((i, make_divisible(round(out * spec.e[i])), out))
        return plan

    def forward_ctx(self, x: torch.Tensor, spec: OFAResNetSpec, ctx: NormContext) -> torch.Tensor:
        """x: (B, 3, H, W) in [0, 1] -> logits (B, classes)."""
        h = prepare_input(x, spec.r, self.mean, self.std)
        c0, c2 = self.stem_mid[spec.w[0]], self.stem_out[spec.w[1]]
        h = F.relu(self.input_stem[0](h, ctx, c0), inplace=True)  # (B, c0, r/2, r/2)
        if spec.d[0] == self.config.depth_choices[-1]:
            h = self.input_stem[1](h, ctx)
        h = F.relu(self.input_stem[2](h, ctx, c2), inplace=True)
        h = F.max_pool2d(h, 3, 2, 1)  # (B, c2, r/4, r/4)
        for i, mid, out in self._plan(spec):
            h = self.blocks[i](h, mid, out, ctx)
        h = h.mean(3).mean(2)  # (B, C_last)
        return self.classifier.linear(h)

    def num_layers(self, spec: OFAResNetSpec) -> int:
        return 2 + (spec.d[0] == self.config.depth_choices[-1]) + len(self._plan(spec))

    def _count(self, spec: OFAResNetSpec) -> tuple[int, int]:
        """(multiply-accumulates, parameters) of a subnet at its resolution r, by formula."""
        c0, c2 = self.stem_mid[spec.w[0]], self.stem_out[spec.w[1]]
        size = math.ceil(spec.r / 2)
        layers = [(3, c0, 3, size)]
        if spec.d[0] == self.config.depth_choices[-1]:
            layers.append((c0, c0, 3, size))
        layers.append((c0, c2, 3, size))
        size, cin = math.ceil(size / 2), c2
        bn = c0 * (1 + (len(layers) == 3)) + c2
        for i, mid, out in self._plan(spec):
            blk = self.blocks[i]
            so = math.ceil(size / blk.stride)
            layers += [(cin, mid, 1, size), (mid, mid, 3, so), (mid, out, 1, so)]
            bn += 2 * mid + out
            if blk.downsample is not None:
                layers.append((cin, out, 1, so))
                bn += out
            size, cin = so, out
        macs = sum(i * o * k * k * s * s for i, o, k, s in layers) + cin * self.config.num_classes
        params = sum(i * o * k * k for i, o, k, _ in layers) + 2 * bn + \
            (cin + 1) * self.config.num_classes
        return macs, params

    def flops(self, spec: OFAResNetSpec) -> int:
        return 2 * self._count(spec)[0]

    def params(self, spec: OFAResNetSpec) -> int:
        return self._count(spec)[1]

"""OFA-MobileNetV3 (w1.2) on SubNetAct: kernel 3/5/7, expand 3/4/6, depth 2-4 per stage,
loading OFA's published state-dict layout (OFAMobileNetV3).

    x (B, 3, H, W) in [0, 1] -> resize to r, normalise (ImageNet mean/std)
    -> first_conv 3x3 s2 (3 -> 24) BN h-swish
    -> blocks[0]: depthwise 3x3 (24) BN ReLU, 1x1 (24 -> 24) BN, + x             (fixed)
    -> 5 stages (widths 32/48/96/136/192, strides 2/2/2/1/2), stage s runs its first d[s] of
       4 blocks (LayerSelect); block i (kernel ks[i], expand e[i]), mid = md(round(cin * e)):
         1x1 (cin -> mid) BN act, depthwise k x k stride (mid) BN act, [squeeze-excite],
         1x1 (mid -> out) BN, + x when stride 1 and cin == out
    -> final_expand 1x1 (192 -> 1152) BN h-swish -> global pool
    -> feature_mix 1x1 (1152 -> 1536) h-swish -> linear (1536 -> 1000)      (B, 1000)

The depthwise kernel is elastic as in OFA (centre crop + learned transform, ElasticDepthwise);
1x1 convs and SE slice their full weights (WeightSlice); every BN takes the spec's statistics
from the NormStore (SubnetNorm). The spec (OFAMBv3Spec) is OFA's `ks`/`e`/`d` plus the
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
from superserve.subnetact.norm import ElasticBN, NormContext
from superserve.subnetact.ops import ConvBN, ElasticDepthwise, SlicedConv2d, SlicedLinear
from superserve.subnetact.spec import OFAMBv3Spec, spec_from_dict

__all__ = ["OFAMBv3Config", "OFAMBv3Space", "OFAMobileNetV3"]

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)  # OFA's base_stage_width
STRIDES = (2, 2, 2, 1, 2)  # the 5 elastic stages
ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
SE = (False, True, False, True, True)


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    """In place: x is always a fresh BN output. An out-of-place activation allocates a new
    activation-sized tensor per layer, and at batch 8 x 224 px the page faults of those fresh
    allocations cost ~6% of the whole forward (OFA's own modules use inplace=True)."""
    return F.relu(x, inplace=True) if name == "relu" else F.hardswish(x, inplace=True)


@dataclass(frozen=True)
class OFAMBv3Config:
    num_classes: int = 1000
    width_mult: float = 1.2
    kernel_choices: tuple[int, ...] = (3, 5, 7)  # OFA's ks_list
    expand_choices: tuple[int, ...] = (3, 4, 6)  # OFA's expand_ratio_list
    depth_choices: tuple[int, ...] = (2, 3, 4)  # OFA's depth_list
    resolutions: tuple[int, ...] = (128, 160, 192, 224)  # elastic input resolution
    image_size: int = 224

    def __post_init__(self) -> None:
        for name in ("kernel_choices", "expand_choices", "depth_choices", "resolutions"):
            v = getattr(self, name)
            if not v or list(v) != sorted(set(v)) or v[0] < 1:
                raise ConfigError(f"{name} must be positive and strictly increasing, got {v}")
        if any(k % 2 == 0 for k in self.kernel_choices):
            raise ConfigError(f"kernel_choices must be odd, got {self.kernel_choices}")
        if not self.width_mult > 0:
            raise ConfigError(f"width_mult must be > 0, got {self.width_mult!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class OFAMBv3Space:
    """The OFAMBv3Specs a config allows. Entries of `ks`/`e` for blocks a spec does not run are
    set to the smallest choice by sample/mutate/crossover, so one subnet has one spec."""

    def __init__(self, config: OFAMBv3Config) -> None:
        self.config = config
        self.max_depth = config.depth_choices[-1]
        self.num_blocks = 5 * self.max_depth

    def active_blocks(self, spec: OFAMBv3Spec) -> list[int]:
        return [s * self.max_depth + b for s in range(5) for b in range(spec.d[s])]

    def canonical(self, spec: OFAMBv3Spec) -> OFAMBv3Spec:
        c = self.config
        act = set(self.active_blocks(spec))
        ks = tuple(v if i in act else c.kernel_choices[0] for i, v in enumerate(spec.ks))
        e = tuple(v if i in act else c.expand_choices[0] for i, v in enumerate(spec.e))
        return OFAMBv3Spec(ks, e, spec.d, spec.r)

    def largest(self) -> OFAMBv3Spec:
        c = self.config
        return OFAMBv3Spec((c.kernel_choices[-1],) * self.num_blocks,
                           (c.expand_choices[-1],) * self.num_blocks,
                           (self.max_depth,) * 5, c.resolutions[-1])

    def smallest(self) -> OFAMBv3Spec:
        c = self.config
        return OFAMBv3Spec((c.kernel_choices[0],) * self.num_blocks,
                           (c.expand_choices[0],) * self.num_blocks,
                           (c.depth_choices[0],) * 5, c.resolutions[0])

    def sample(self, rng: random.Random) -> OFAMBv3Spec:
        c = self.config
        n = self.num_blocks
        return self.canonical(OFAMBv3Spec(
            tuple(rng.choice(c.kernel_choices) for _ in range(n)),
            tuple(rng.choice(c.expand_choices) for _ in range(n)),
            tuple(rng.choice(c.depth_choices) for _ in range(5)), rng.choice(c.resolutions)))

    def size(self) -> int:
        c = self.config
        per_block = len(c.kernel_choices) * len(c.expand_choices)
        return sum(per_block ** d for d in c.depth_choices) ** 5 * len(c.resolutions)

    def validate(self, spec: OFAMBv3Spec) -> OFAMBv3Spec:
        c = self.config
        if not isinstance(spec, OFAMBv3Spec):
            raise InvalidSpecError(f"an ofa_mbv3 supernet needs an OFAMBv3Spec, got "
                                   f"{type(spec).__name__}")
        check_choices("d", spec.d, 5, c.depth_choices)
        check_choices("ks", spec.ks, self.num_blocks, c.kernel_choices)
        check_choices("e", spec.e, self.num_blocks, c.expand_choices)
        check_resolution(spec.r, c.resolutions)
        return spec

    def spec_from_dict(self, d: dict) -> OFAMBv3Spec:
        return self.validate(spec_from_dict(d))  # type: ignore[arg-type]

    def mutate(self, spec: OFAMBv3Spec, rng: random.Random, prob: float = 0.1) -> OFAMBv3Spec:
        c = self.config
        pick = lambda v, choices: rng.choice(choices) if rng.random() < prob else v
        return self.canonical(OFAMBv3Spec(tuple(pick(v, c.kernel_choices) for v in spec.ks),
                                          tuple(pick(v, c.expand_choices) for v in spec.e),
                                          tuple(pick(v, c.depth_choices) for v in spec.d),
                                          pick(spec.r, c.resolutions)))

    def crossover(self, a: OFAMBv3Spec, b: OFAMBv3Spec, rng: random.Random) -> OFAMBv3Spec:
        return self.canonical(crossover_spec(a, b, rng))  # type: ignore[arg-type]


class _SE(nn.Module):
    """Squeeze-excite with sliced weights (OFA's DynamicSE): mid = md(C // 4)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Module()
        mid = make_divisible(channels // 4)
        self.fc.reduce = SlicedConv2d(channels, mid, 1, bias=True)
        self.fc.expand = SlicedConv2d(mid, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = x.mean(3, keepdim=True).mean(2, keepdim=True)  # (B, C, 1, 1)
        y = F.relu(self.fc.reduce(y, make_divisible(c // 4)))
        return x * F.hardsigmoid(self.fc.expand(y, c))


class _DepthConv(nn.Module):
    def __init__(self, channels: int, kernel_sizes, stride: int, se: bool) -> None:
        super().__init__()
        self.conv = ElasticDepthwise(channels, kernel_sizes, stride)
        self.bn = ElasticBN(channels)
        self.se = _SE(channels) if se else None


class _MBConv(nn.Module):
    """An inverted bottleneck: expand 1x1, depthwise k x k, [SE], project 1x1 (OFA's names)."""

    def __init__(self, cin: int, cout: int, kernel_sizes, max_expand: float, stride: int,
                 act: str, se: bool) -> None:
        super().__init__()
        mid = make_divisible(round(cin * max_expand))
        self.act, self.stride, self.residual = act, stride, stride == 1 and cin == cout
        self.inverted_bottleneck = ConvBN(cin, mid, 1) if max_expand != 1 else None
        self.depth_conv = _DepthConv(mid, kernel_sizes, stride, se)
        self.point_linear = ConvBN(mid, cout, 1)

    def forward(self, x: torch.Tensor, k: int, e: float, ctx: NormContext) -> torch.Tensor:
        h = x
        if self.inverted_bottleneck is not None:
            h = _act(self.act, self.inverted_bottleneck(h, ctx, make_divisible(round(x.shape[1] * e))))
        dc = self.depth_conv
        h = _act(self.act, dc.bn(dc.conv(h, k), ctx))
        if dc.se is not None:
            h = dc.se(h)
        h = self.point_linear(h, ctx)
        return h + x if self.residual else h


class _Block(nn.Module):
    """OFA's ResidualBlock wrapper: the MBConv sits under `.conv` in the state dict."""

    def __init__(self, conv: _MBConv) -> None:
        super().__init__()
        self.conv = conv


class OFAMobileNetV3(SupernetMixin, nn.Module):
    family = "ofa_mbv3"
    norm_dtype = torch.float32
    eval_batch_size = 32  # 224 px: 32 images of activations per forward, not 200

    def __init__(self, config: OFAMBv3Config = OFAMBv3Config()) -> None:
        super().__init__()
        self._init_norm()
        self.config = c = config
        self.space = OFAMBv3Space(config)
        widths = [make_divisible(b * c.width_mult) for b in BASE_WIDTHS[:-2]]
        final_expand = make_divisible(BASE_WIDTHS[-2] * c.width_mult)
        last = make_divisible(BASE_WIDTHS[-1] * c.width_mult)
        self.first_conv = ConvBN(3, widths[0], 3, 2)
        blocks = [_Block(_MBConv(widths[0], widths[1], (3,), 1, 1, "relu", False))]
        cin = widths[1]
        for s in range(5):
            for b in range(self.space.max_depth):
                blocks.append(_Block(_MBConv(cin, widths[s + 2], c.kernel_choices,
                                             c.expand_choices[-1], STRIDES[s] if b == 0 else 1,
                                             ACTS[s], SE[s])))
                cin = widths[s + 2]
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = ConvBN(cin, final_expand, 1)
        self.feature_mix_layer = ConvBN(final_expand, last, 1, bn=False)
        self.classifier = nn.Module()
        self.classifier.linear = SlicedLinear(last, c.num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def input_spec(self) -> InputSpec:
        s = self.config.image_size
        return InputSpec.imagenet(s, self.config.resolutions, self.config.num_classes)

    def forward_ctx(self, x: torch.Tensor, spec: OFAMBv3Spec, ctx: NormContext) -> torch.Tensor:
        """x: (B, 3, H, W) in [0, 1] -> logits (B, classes)."""
        h = prepare_input(x, spec.r, self.mean, self.std)
        h = F.hardswish(self.first_conv(h, ctx), inplace=True)  # (B, 24, r/2, r/2)
        h = self.blocks[0].conv(h, 3, 1, ctx)
        for i in self.space.active_blocks(spec):  # LayerSelect
            h = self.blocks[1 + i].conv(h, spec.ks[i], spec.e[i], ctx)
        h = F.hardswish(self.final_expand_layer(h, ctx), inplace=True)  # (B, 1152, r/32, r/32)
        h = h.mean(3, keepdim=True).mean(2, keepdim=True)
        h = F.hardswish(self.feature_mix_layer(h, ctx), inplace=True)  # (B, 1536, 1, 1)
        return self.classifier.linear(h.flatten(1))

    def num_layers(self, spec: OFAMBv3Spec) -> int:
        return 4 + sum(spec.d)

    def _count(self, spec: OFAMBv3Spec) -> tuple[int, int]:
        """(multiply-accumulates, parameters) at resolution r, by formula."""
        size = math.ceil(spec.r / 2)
        c0 = self.first_conv.conv.weight.shape[0]
        macs, params = 27 * c0 * size * size, 27 * c0 + 2 * c0
        b0 = self.blocks[0].conv.point_linear.conv.weight.shape[0]
        macs += (9 * c0 + c0 * b0) * size * size
        params += 9 * c0 + c0 * b0 + 2 * (c0 + b0)
        cin = b0
        for i in self.space.active_blocks(spec):
            blk = self.blocks[1 + i].conv
            out = blk.point_linear.conv.weight.shape[0]
            mid = make_divisible(round(cin * spec.e[i]))
            k = spec.ks[i]
            so = math.ceil(size / blk.stride)
            macs += cin * mid * size * size + k * k * mid * so * so + mid * out * so * so
            params += cin * mid + k * k * mid + mid * out + 2 * (2 * mid + out)
            if blk.depth_conv.se is not None:
                sm = make_divisible(mid // 4)
                macs += 2 * mid * sm
                params += 2 * mid * sm + mid + sm
            size, cin = so, out
        fe = self.final_expand_layer.conv.weight.shape[0]
        last = self.feature_mix_layer.conv.weight.shape[0]
        k = self.config.num_classes
        macs += cin * fe * size * size + fe * last + last * k
        params += cin * fe + 2 * fe + fe * last + (last + 1) * k
        return macs, params

    def flops(self, spec: OFAMBv3Spec) -> int:
        return 2 * self._count(spec)[0]

    def params(self, spec: OFAMBv3Spec) -> int:
        return self._count(spec)[1]

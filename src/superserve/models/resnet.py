"""OFA-ResNet-style supernet: elastic depth per stage, width per stage, expand ratio per block.

    x (B, 1, H, W) in [0, 1] -> normalise -> stem conv3x3 + BN + ReLU        (B, C0, H, W)
    -> stage s = 0..S-1: the first depths[s] bottleneck blocks (LayerSelect)  (B, w_s*C_s, ...)
       block: 1x1 (in -> mid) BN ReLU, 3x3 stride (mid -> mid) BN ReLU, 1x1 (mid -> out) BN,
              + shortcut (first block: 1x1 stride conv + BN; others: identity), ReLU
       mid = ceil(expand * out), out = ceil(width_s * C_s)                  (WeightSlice)
    -> global average pool -> linear(out -> classes)                          (B, classes)

Every conv / linear allocates its largest weight once and slices weight[:out, :in] per call;
BN statistics come per spec from the NormStore (SubnetNorm).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superserve.errors import ConfigError, InvalidSpecError
from superserve.models.base import ServingPlan, SupernetMixin
from superserve.models.contract import InputSpec
from superserve.subnetact.norm import BN_EPS, ElasticBN, NormContext
from superserve.subnetact.spec import ResNetSpec, spec_from_dict

__all__ = ["ResNetConfig", "ResNetSpace", "ResNetSupernet"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class ResNetConfig:
    image_size: int = 28  # input H = W
    num_classes: int = 10
    stem_channels: int = 16  # stem conv output (not elastic)
    stage_channels: tuple[int, ...] = (24, 48, 96, 192)  # full output channels per stage
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)  # stride of each stage's first block
    depth_choices: tuple[int, ...] = (1, 2, 3, 4)  # blocks per stage; max = blocks allocated
    width_choices: tuple[float, ...] = (0.5, 0.75, 1.0)  # stage output-channel multipliers
    expand_choices: tuple[float, ...] = (0.25, 0.5, 0.75)  # bottleneck mid / stage output

    def __post_init__(self) -> None:
        if len(self.stage_channels) != len(self.stage_strides):
            raise ConfigError(f"stage_channels {self.stage_channels} and stage_strides "
                              f"{self.stage_strides} must have the same length")
        for name in ("depth_choices", "width_choices", "expand_choices"):
            v = getattr(self, name)
            if not v or list(v) != sorted(set(v)):
                raise ConfigError(f"{name} must be non-empty and strictly increasing, got {v}")
        if self.depth_choices[0] < 1:
            raise ConfigError(f"depth_choices must be >= 1, got {self.depth_choices}")
        if not all(0 < w <= 1 for w in self.width_choices + self.expand_choices):
            raise ConfigError("width_choices and expand_choices must lie in (0, 1]")

    @property
    def max_depth(self) -> int:
        return self.depth_choices[-1]

    def to_dict(self) -> dict:
        return asdict(self)


class ResNetSpace:
    """The set of ResNetSpecs a ResNetConfig allows."""

    def __init__(self, config: ResNetConfig) -> None:
        self.config = config
        self.num_stages = len(config.stage_channels)

    def largest(self) -> ResNetSpec:
        c = self.config
        d = c.max_depth
        return ResNetSpec((d,) * self.num_stages, (c.width_choices[-1],) * self.num_stages,
                          tuple((c.expand_choices[-1],) * d for _ in range(self.num_stages)))

    def smallest(self) -> ResNetSpec:
        c = self.config
        d = c.depth_choices[0]
        return ResNetSpec((d,) * self.num_stages, (c.width_choices[0],) * self.num_stages,
                          tuple((c.expand_choices[0],) * d for _ in range(self.num_stages)))

    def sample(self, rng: random.Random) -> ResNetSpec:
        c = self.config
        depths = tuple(rng.choice(c.depth_choices) for _ in range(self.num_stages))
        return ResNetSpec(depths, tuple(rng.choice(c.width_choices) for _ in depths),
                          tuple(tuple(rng.choice(c.expand_choices) for _ in range(d))
                                for d in depths))

    def size(self) -> int:
        c = self.config
        per_stage = sum(len(c.expand_choices) ** d for d in c.depth_choices)
        return (per_stage * len(c.width_choices)) ** self.num_stages

    def validate(self, spec: ResNetSpec) -> ResNetSpec:
        c = self.config
        if not isinstance(spec, ResNetSpec):
            raise InvalidSpecError(f"a resnet supernet needs a ResNetSpec, got {type(spec).__name__}")
        if len(spec.depths) != self.num_stages:
            raise InvalidSpecError(f"depths has {len(spec.depths)} stages; this supernet has "
                                   f"{self.num_stages}")
        if len(spec.widths) != self.num_stages or len(spec.expands) != self.num_stages:
            raise InvalidSpecError(f"widths and expands need {self.num_stages} stages")
        for s, (d, w, ex) in enumerate(zip(spec.depths, spec.widths, spec.expands)):
            if d not in c.depth_choices:
                raise InvalidSpecError(f"depths[{s}]={d} is not one of {list(c.depth_choices)}")
            if w not in c.width_choices:
                raise InvalidSpecError(f"widths[{s}]={w} is not one of {list(c.width_choices)}")
            if len(ex) != d:
                raise InvalidSpecError(f"expands[{s}] has {len(ex)} entries; depths[{s}]={d}")
            for b, e in enumerate(ex):
                if e not in c.expand_choices:
                    raise InvalidSpecError(f"expands[{s}][{b}]={e} is not one of "
                                           f"{list(c.expand_choices)}")
        return spec

    def spec_from_dict(self, d: dict) -> ResNetSpec:
        spec = spec_from_dict(d)
        return self.validate(spec)  # type: ignore[arg-type]

    def mutate(self, spec: ResNetSpec, rng: random.Random, prob: float = 0.1) -> ResNetSpec:
        c = self.config
        depths, widths, expands = list(spec.depths), list(spec.widths), [list(e) for e in spec.expands]
        for s in range(self.num_stages):
            if rng.random() < prob:
                depths[s] = rng.choice(c.depth_choices)
            if rng.random() < prob:
                widths[s] = rng.choice(c.width_choices)
            ex = expands[s][:depths[s]]
            ex += [rng.choice(c.expand_choices) for _ in range(depths[s] - len(ex))]
            expands[s] = [rng.choice(c.expand_choices) if rng.random() < prob else e for e in ex]
        return ResNetSpec(tuple(depths), tuple(widths), tuple(tuple(e) for e in expands))

    def crossover(self, a: ResNetSpec, b: ResNetSpec, rng: random.Random) -> ResNetSpec:
        picks = [rng.random() < 0.5 for _ in range(self.num_stages)]
        pa = lambda s: a if picks[s] else b
        return ResNetSpec(tuple(pa(s).depths[s] for s in range(self.num_stages)),
                          tuple(pa(s).widths[s] for s in range(self.num_stages)),
                          tuple(pa(s).expands[s] for s in range(self.num_stages)))

    def layout(self, spec: ResNetSpec) -> list[tuple[int, int, int, int]]:
        """(stage, block, mid, out) of every active block, in forward order."""
        out = []
        for s, (d, w) in enumerate(zip(spec.depths, spec.widths)):
            o = math.ceil(w * self.config.stage_channels[s])
            for b in range(d):
                out.append((s, b, math.ceil(spec.expands[s][b] * o), o))
        return out


class _Bottleneck(nn.Module):
    """Full-size weights of one elastic bottleneck block."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Parameter(torch.empty(mid, cin, 1, 1))
        self.conv2 = nn.Parameter(torch.empty(mid, mid, 3, 3))
        self.conv3 = nn.Parameter(torch.empty(cout, mid, 1, 1))
        self.bn1, self.bn2, self.bn3 = ElasticBN(mid), ElasticBN(mid), ElasticBN(cout)
        self.shortcut = nn.Parameter(torch.empty(cout, cin, 1, 1)) if shortcut else None
        self.bn_sc = ElasticBN(cout) if shortcut else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if w is not None:
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN gamma: each block starts as identity (stabler sandwich training)
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor, mid: int, out: int, ctx: NormContext) -> torch.Tensor:
        cin = x.shape[1]
        h = F.conv2d(x, self.conv1[:mid, :cin])
        h = F.relu(self.bn1(h, ctx))
        h = F.conv2d(h, self.conv2[:mid, :mid], None, self.stride, 1)
        h = F.relu(self.bn2(h, ctx))
        h = F.conv2d(h, self.conv3[:out, :mid])
        h = self.bn3(h, ctx)
        if self.shortcut is not None:
            sc = self.bn_sc(F.conv2d(x, self.shortcut[:out, :cin], None, self.stride), ctx)
        else:
            sc = x
        return F.relu(h + sc)


class ResNetSupernet(SupernetMixin, nn.Module):
    family = "resnet"

    def __init__(self, config: ResNetConfig = ResNetConfig()) -> None:
        super().__init__()
        self._init_norm()
        self.config = config
        self.space = ResNetSpace(config)
        c0 = config.stem_channels
        self.stem = nn.Parameter(torch.empty(c0, 1, 3, 3))
        self.stem_bn = ElasticBN(c0)
        self.blocks = nn.ModuleList()
        cin = c0
        for cout, stride in zip(config.stage_channels, config.stage_strides):
            mid = math.ceil(config.expand_choices[-1] * cout)
            stage = nn.ModuleList(
                _Bottleneck(cin if b == 0 else cout, mid, cout, stride if b == 0 else 1, b == 0)
                for b in range(config.max_depth))
            self.blocks.append(stage)
            cin = cout
        self.head_w = nn.Parameter(torch.empty(config.num_classes, cin))
        self.head_b = nn.Parameter(torch.zeros(config.num_classes))
        nn.init.kaiming_normal_(self.stem, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.head_w, std=0.01)

    def layout(self, spec: ResNetSpec) -> list[tuple[int, int, int, int]]:
        return self.space.layout(spec)

    def forward_ctx(self, x: torch.Tensor, spec: ResNetSpec, ctx: NormContext) -> torch.Tensor:
        """x: (B, 1, H, W) in [0, 1] -> logits (B, classes)."""
        h = (x - MNIST_MEAN) / MNIST_STD
        h = F.conv2d(h, self.stem, None, 1, 1)
        h = F.relu(self.stem_bn(h, ctx))  # (B, C0, H, W)
        for s, b, mid, out in self.space.layout(spec):
            h = self.blocks[s][b](h, mid, out, ctx)
        h = h.mean((2, 3))  # (B, C_last)
        return F.linear(h, self.head_w[:, :h.shape[1]], self.head_b)

    def serving_plan(self, spec: ResNetSpec, stats: Any) -> ServingPlan | None:
        """`forward_ctx` in eval mode as one flat function (SupernetMixin.serving_plan): the
        sliced weights, BN affines and SubnetNorm statistics of every active layer are taken
        as views once, the same ops run in the same order on them. On this family's shipped
        subnets it costs 28-48% less CPU than the module path at batch 1, 13-30% at 8 and 31%
        in the serving pattern (`benchmarks/serving_plan.py`): a batch of a small subnet is
        mostly Python. None for a subclass with its own `forward_ctx` (the plan would not be
        its forward)."""
        if type(self).forward_ctx is not ResNetSupernet.forward_ctx:
            return None
        means, variances = stats
        layout = self.space.layout(spec)
        n_bn = 1 + sum(3 + (self.blocks[s][b].shortcut is not None) for s, b, _, _ in layout)
        if len(means) != n_bn or len(variances) != n_bn:
            return None  # statistics of another layout: the module path says what is wrong
        order = iter(zip(means, variances))

        def bn(layer: ElasticBN, c: int) -> tuple[torch.Tensor, ...]:
            mean, var = next(order)  # in the order forward_ctx reads them
            return layer.weight[:c].detach(), layer.bias[:c].detach(), mean, var

        c0 = self.config.stem_channels
        stem, stem_bn = self.stem.detach(), bn(self.stem_bn, c0)
        blocks = []
        cin = c0
        for s, b, mid, out in layout:
            blk = self.blocks[s][b]
            w1, n1 = blk.conv1[:mid, :cin].detach(), bn(blk.bn1, mid)
            w2, n2 = blk.conv2[:mid, :mid].detach(), bn(blk.bn2, mid)
            w3, n3 = blk.conv3[:out, :mid].detach(), bn(blk.bn3, out)
            sc = (None if blk.shortcut is None
                  else (blk.shortcut[:out, :cin].detach(), bn(blk.bn_sc, out)))
            blocks.append((w1, n1, w2, n2, blk.stride, w3, n3, sc))
            cin = out
        head_w, head_b = self.head_w[:, :cin].detach(), self.head_b.detach()
        conv, norm, relu, eps = torch.conv2d, torch.batch_norm, torch.relu, BN_EPS
        backend = torch.backends.cudnn

        def run(x: torch.Tensor) -> torch.Tensor:
            cudnn = backend.enabled  # what F.batch_norm passes, as it stands at the call
            h = (x - MNIST_MEAN) / MNIST_STD
            h = relu(norm(conv(h, stem, None, 1, 1), *stem_bn, False, 0.0, eps, cudnn))
            for w1, n1, w2, n2, stride, w3, n3, sc in blocks:
                t = relu(norm(conv(h, w1), *n1, False, 0.0, eps, cudnn))
                t = relu(norm(conv(t, w2, None, stride, 1), *n2, False, 0.0, eps, cudnn))
                t = norm(conv(t, w3), *n3, False, 0.0, eps, cudnn)
                if sc is not None:
                    h = norm(conv(h, sc[0], None, stride), *sc[1], False, 0.0, eps, cudnn)
                h = relu(t + h)
            return F.linear(h.mean((2, 3)), head_w, head_b)

        return run

    @property
    def input_spec(self) -> InputSpec:
        """(B, 1, H, W) grey digits in [0, 1]; the model normalises with MNIST's mean/std."""
        s = self.config.image_size
        return InputSpec.mnist(s, self.config.num_classes)

    def num_layers(self, spec: ResNetSpec) -> int:
        return sum(spec.depths)

    def materialize(self, spec: ResNetSpec) -> nn.Module:
        from superserve.subnetact.materialize import _materialize_resnet

        return _materialize_resnet(self, spec)

    # FLOPs / params of a subnet, by formula (multiply-accumulates x 2 per image)
    def flops(self, spec: ResNetSpec) -> int:
        c = self.config
        size = c.image_size
        total = 2 * 9 * c.stem_channels * size * size
        cin = c.stem_channels
        for s, b, mid, out in self.space.layout(spec):
            stride = c.stage_strides[s] if b == 0 else 1
            out_size = math.ceil(size / stride)
            total += 2 * (cin * mid * size * size + 9 * mid * mid * out_size ** 2
                          + mid * out * out_size ** 2)
            if b == 0:
                total += 2 * cin * out * out_size ** 2
            size, cin = out_size, out
        return total + 2 * cin * c.num_classes

    def params(self, spec: ResNetSpec) -> int:
        c = self.config
        total = 9 * c.stem_channels + 2 * c.stem_channels
        cin = c.stem_channels
        for s, b, mid, out in self.space.layout(spec):
            total += cin * mid + 9 * mid * mid + mid * out + 2 * (2 * mid + out)
            if b == 0:
                total += cin * out + 2 * out
            cin = out
        return total + cin * c.num_classes + c.num_classes

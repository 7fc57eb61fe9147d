"""DynaBERT/AutoFormer-style vision-transformer supernet: elastic depth, heads, MLP width.

    x (B, 1, H, W) in [0, 1] -> normalise -> patch conv (p x p, stride p) -> (B, T, D)
    -> [cls] + tokens + position embedding                                   (B, T+1, D)
    -> kept layers i = 0..depth-1, layer floor(i * L / depth)  (DynaBERT's LayerSelect rule)
       pre-LN attention with the first heads[i] heads, pre-LN MLP with the first mlp[i] units
    -> LayerNorm -> cls token -> linear                                      (B, classes)

The embedding width D stays fixed; LayerNorm needs no per-subnet statistics.
The qkv weight is stored head-major, (H, 3, head_dim, D), so the first h heads are one
contiguous slice: no copy per call.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from superserve.errors import ConfigError, InvalidSpecError
from superserve.models.base import ServingPlan, SupernetMixin
from superserve.models.contract import InputSpec
from superserve.subnetact.norm import NormContext
from superserve.subnetact.spec import ViTSpec, spec_from_dict

__all__ = ["ViTConfig", "ViTSpace", "ViTSupernet", "kept_layers"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 28
    patch_size: int = 7
    num_classes: int = 10
    embed_dim: int = 128  # D, fixed
    head_dim: int = 16
    num_layers: int = 6  # L, layers allocated
    depth_choices: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # layers kept
    head_choices: tuple[int, ...] = (1, 2, 4, 8)  # heads per kept layer (max = allocated)
    mlp_choices: tuple[int, ...] = (128, 256, 384, 512)  # MLP hidden units (max = allocated)
    stem_channels: int = 0  # > 0: a 3x3 conv + GELU before the patch projection (hybrid ViT)
    pool: str = "cls"  # classify from the "cls" token or the "mean" of the patch tokens

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} is not a multiple of "
                              f"patch_size={self.patch_size}")
        for name in ("depth_choices", "head_choices", "mlp_choices"):
            v = getattr(self, name)
            if not v or list(v) != sorted(set(v)) or v[0] < 1:
                raise ConfigError(f"{name} must be positive and strictly increasing, got {v}")
        if self.pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.depth_choices[-1] > self.num_layers:
            raise ConfigError(f"depth_choices {self.depth_choices} exceed num_layers={self.num_layers}")

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


def kept_layers(depth: int, num_layers: int) -> list[int]:
    """DynaBERT: with depth multiplier m = depth / L keep layer floor(i / m), i < round(m L)."""
    return [math.floor(i * num_layers / depth) for i in range(depth)]


class ViTSpace:
    def __init__(self, config: ViTConfig) -> None:
        self.config = config

    def largest(self) -> ViTSpec:
        c = self.config
        d = c.depth_choices[-1]
        return ViTSpec(d, (c.head_choices[-1],) * d, (c.mlp_choices[-1],) * d)

    def smallest(self) -> ViTSpec:
        c = self.config
        d = c.depth_choices[0]
        return ViTSpec(d, (c.head_choices[0],) * d, (c.mlp_choices[0],) * d)

    def sample(self, rng: random.Random) -> ViTSpec:
        c = self.config
        d = rng.choice(c.depth_choices)
        return ViTSpec(d, tuple(rng.choice(c.head_choices) for _ in range(d)),
                       tuple(rng.choice(c.mlp_choices) for _ in range(d)))

    def size(self) -> int:
        c = self.config
        return sum((len(c.head_choices) * len(c.mlp_choices)) ** d for d in c.depth_choices)

    def validate(self, spec: ViTSpec) -> ViTSpec:
        c = self.config
        if not isinstance(spec, ViTSpec):
            raise InvalidSpecError(f"a vit supernet needs a ViTSpec, got {type(spec).__name__}")
        if spec.depth not in c.depth_choices:
            raise InvalidSpecError(f"depth={spec.depth} is not one of {list(c.depth_choices)}")
        if len(spec.heads) != spec.depth or len(spec.mlp) != spec.depth:
            raise InvalidSpecError(f"heads and mlp need depth={spec.depth} entries, got "
                                   f"{len(spec.heads)} and {len(spec.mlp)}")
        for i, (h, m) in enumerate(zip(spec.heads, spec.mlp)):
            if h not in c.head_choices:
                raise InvalidSpecError(f"heads[{i}]={h} is not one of {list(c.head_choices)}")
            if m not in c.mlp_choices:
                raise InvalidSpecError(f"mlp[{i}]={m} is not one of {list(c.mlp_choices)}")
        return spec

    def spec_from_dict(self, d: dict) -> ViTSpec:
        return self.validate(spec_from_dict(d))  # type: ignore[arg-type]

    def mutate(self, spec: ViTSpec, rng: random.Random, prob: float = 0.1) -> ViTSpec:
        c = self.config
        d = rng.choice(c.depth_choices) if rng.random() < prob else spec.depth
        heads = list(spec.heads[:d]) + [rng.choice(c.head_choices) for _ in range(d - spec.depth)]
        mlp = list(spec.mlp[:d]) + [rng.choice(c.mlp_choices) for _ in range(d - spec.depth)]
        heads = [rng.choice(c.head_choices) if rng.random() < prob else h for h in heads]
        mlp = [rng.choice(c.mlp_choices) if rng.random() < prob else m for m in mlp]
        return ViTSpec(d, tuple(heads), tuple(mlp))

    def crossover(self, a: ViTSpec, b: ViTSpec, rng: random.Random) -> ViTSpec:
        d = a.depth if rng.random() < 0.5 else b.depth

        def gene(i: int, field: str) -> int:
            pool = [getattr(p, field)[i] for p in (a, b) if i < p.depth]
            return rng.choice(pool)

        return ViTSpec(d, tuple(gene(i, "heads") for i in range(d)),
                       tuple(gene(i, "mlp") for i in range(d)))


class _Layer(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        heads, d, hd, m = c.head_choices[-1], c.embed_dim, c.head_dim, c.mlp_choices[-1]
        self.ln1 = nn.LayerNorm(d)
        self.qkv_w = nn.Parameter(torch.empty(heads, 3, hd, d))  # head-major
        self.qkv_b = nn.Parameter(torch.zeros(heads, 3, hd))
        self.proj_w = nn.Parameter(torch.empty(d, heads * hd))
        self.proj_b = nn.Parameter(torch.zeros(d))
        self.ln2 = nn.LayerNorm(d)
        self.fc1_w = nn.Parameter(torch.empty(m, d))
        self.fc1_b = nn.Parameter(torch.zeros(m))
        self.fc2_w = nn.Parameter(torch.empty(d, m))
        self.fc2_b = nn.Parameter(torch.zeros(d))
        self.head_dim = hd
        for w in (self.qkv_w, self.proj_w, self.fc1_w, self.fc2_w):
            nn.init.trunc_normal_(w, std=0.02)

    def forward(self, x: torch.Tensor, heads: int, mlp: int) -> torch.Tensor:
        B, T, D = x.shape
        hd = self.head_dim
        y = self.ln1(x)
        qkv = F.linear(y, self.qkv_w[:heads].reshape(heads * 3 * hd, D),
                       self.qkv_b[:heads].reshape(-1))  # (B, T, h*3*hd)
        q, k, v = qkv.view(B, T, heads, 3, hd).permute(3, 0, 2, 1, 4)  # 3 x (B, h, T, hd)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, hd)
        a = a.transpose(1, 2).reshape(B, T, heads * hd)
        x = x + F.linear(a, self.proj_w[:, :heads * hd], self.proj_b)
        y = F.gelu(F.linear(self.ln2(x), self.fc1_w[:mlp], self.fc1_b[:mlp]))  # (B, T, m)
        return x + F.linear(y, self.fc2_w[:, :mlp], self.fc2_b)


class ViTSupernet(SupernetMixin, nn.Module):
    family = "vit"
    uses_norm_stats = False

    def __init__(self, config: ViTConfig = ViTConfig()) -> None:
        super().__init__()
        self._init_norm()
        self.config = config
        self.space = ViTSpace(config)
        c = config
        cin = c.stem_channels or 1
        self.stem_w = nn.Parameter(torch.empty(c.stem_channels, 1, 3, 3)) if c.stem_channels \
            else None
        self.stem_b = nn.Parameter(torch.zeros(c.stem_channels)) if c.stem_channels else None
        self.patch_w = nn.Parameter(torch.empty(c.embed_dim, cin, c.patch_size, c.patch_size))
        self.patch_b = nn.Parameter(torch.zeros(c.embed_dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos = nn.Parameter(torch.zeros(1, c.num_tokens, c.embed_dim))
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c.num_layers))
        self.ln = nn.LayerNorm(c.embed_dim)
        self.head_w = nn.Parameter(torch.empty(c.num_classes, c.embed_dim))
        self.head_b = nn.Parameter(torch.zeros(c.num_classes))
        for w in (self.patch_w, self.pos, self.cls, self.head_w):
            nn.init.trunc_normal_(w, std=0.02)
        if self.stem_w is not None:
            nn.init.kaiming_normal_(self.stem_w, nonlinearity="relu")
        self._kept = {d: kept_layers(d, c.num_layers) for d in c.depth_choices}

    def forward_ctx(self, x: torch.Tensor, spec: ViTSpec, ctx: NormContext) -> torch.Tensor:
        c = self.config
        h = (x - MNIST_MEAN) / MNIST_STD
        if self.stem_w is not None:
            h = F.gelu(F.conv2d(h, self.stem_w, self.stem_b, 1, 1))  # (B, S, H, W)
        h = F.conv2d(h, self.patch_w, self.patch_b, c.patch_size)  # (B, D, H/p, W/p)
        h = h.flatten(2).transpose(1, 2)  # (B, T, D)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos  # (B, T+1, D)
        for layer, heads, mlp in zip(self._kept[spec.depth], spec.heads, spec.mlp):
            h = self.layers[layer](h, heads, mlp)
        h = h[:, 1:].mean(1) if c.pool == "mean" else h[:, 0]  # (B, D)
        return F.linear(self.ln(h), self.head_w, self.head_b)  # (B, classes)

    def serving_plan(self, spec: ViTSpec, stats: object) -> ServingPlan | None:
        """`forward_ctx` in eval mode as one flat function (SupernetMixin.serving_plan): every
        kept layer's head and MLP slices of the shared weights and its LayerNorm affines are
        taken as views once; the same ops run in the same order on them, with no module
        calls and no slicing per batch (`benchmarks/serving_plan.py --model vit`). None for
        a subclass with its own `forward_ctx` or layers (the plan would not be its forward)."""
        if type(self).forward_ctx is not ViTSupernet.forward_ctx or \
                any(type(m) is not _Layer for m in self.layers):
            return None
        c = self.config
        D, hd, p = c.embed_dim, c.head_dim, c.patch_size

        def ln(m: nn.LayerNorm) -> tuple:
            return (m.normalized_shape, m.weight.detach(), m.bias.detach(), m.eps)

        layers = []
        for i, heads, mlp in zip(self._kept[spec.depth], spec.heads, spec.mlp):
            L = self.layers[i]
            a = heads * hd
            layers.append((heads, a, ln(L.ln1),
                           L.qkv_w[:heads].reshape(heads * 3 * hd, D).detach(),
                           L.qkv_b[:heads].reshape(-1).detach(),
                           L.proj_w[:, :a].detach(), L.proj_b.detach(), ln(L.ln2),
                           L.fc1_w[:mlp].detach(), L.fc1_b[:mlp].detach(),
                           L.fc2_w[:, :mlp].detach(), L.fc2_b.detach()))
        stem = None if self.stem_w is None else (self.stem_w.detach(), self.stem_b.detach())
        patch_w, patch_b = self.patch_w.detach(), self.patch_b.detach()
        cls, pos = self.cls.detach(), self.pos.detach()
        final, head_w, head_b = ln(self.ln), self.head_w.detach(), self.head_b.detach()
        mean_pool = c.pool == "mean"
        linear, layer_norm, gelu, sdpa = F.linear, F.layer_norm, F.gelu, \
            F.scaled_dot_product_attention

        def run(x: torch.Tensor) -> torch.Tensor:
            h = (x - MNIST_MEAN) / MNIST_STD
            if stem is not None:
                h = gelu(F.conv2d(h, stem[0], stem[1], 1, 1))
            h = F.conv2d(h, patch_w, patch_b, p).flatten(2).transpose(1, 2)
            h = torch.cat([cls.expand(h.shape[0], -1, -1), h], 1) + pos
            B, T, _ = h.shape
            for heads, a, ln1, qkv_w, qkv_b, proj_w, proj_b, ln2, w1, b1, w2, b2 in layers:
                qkv = linear(layer_norm(h, *ln1), qkv_w, qkv_b)
                q, k, v = qkv.view(B, T, heads, 3, hd).permute(3, 0, 2, 1, 4)
                att = sdpa(q, k, v).transpose(1, 2).reshape(B, T, a)
                h = h + linear(att, proj_w, proj_b)
                h = h + linear(gelu(linear(layer_norm(h, *ln2), w1, b1)), w2, b2)
            h = h[:, 1:].mean(1) if mean_pool else h[:, 0]
            return linear(layer_norm(h, *final), head_w, head_b)

        return run

    @property
    def input_spec(self) -> InputSpec:
        """(B, 1, H, W) grey digits in [0, 1]; the model normalises with MNIST's mean/std."""
        s = self.config.image_size
        return InputSpec.mnist(s, self.config.num_classes)

    def num_layers(self, spec: ViTSpec) -> int:
        return spec.depth

    def materialize(self, spec: ViTSpec) -> nn.Module:
        from superserve.subnetact.materialize import _materialize_vit

        return _materialize_vit(self, spec)

    def flops(self, spec: ViTSpec) -> int:
        c = self.config
        t, d, hd = c.num_tokens, c.embed_dim, c.head_dim
        cin = c.stem_channels or 1
        total = 2 * (t - 1) * d * cin * c.patch_size ** 2 + 2 * 9 * c.stem_channels * c.image_size ** 2
        for heads, mlp in zip(spec.heads, spec.mlp):
            a = heads * hd
            total += 2 * t * (3 * a * d + a * d + 2 * d * mlp) + 2 * 2 * t * t * a
        return total + 2 * d * c.num_classes

    def params(self, spec: ViTSpec) -> int:
        c = self.config
        d, hd = c.embed_dim, c.head_dim
        total = d * (c.stem_channels or 1) * c.patch_size ** 2 + d + d + c.num_tokens * d + 2 * d \
            + d * c.num_classes + c.num_classes + 10 * c.stem_channels
        for heads, mlp in zip(spec.heads, spec.mlp):
            a = heads * hd
            total += 3 * a * d + 3 * a + a * d + d + 2 * d * mlp + mlp + d + 4 * d
        return total

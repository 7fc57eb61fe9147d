"""SubNetAct operators as reusable modules, for families built outside the two MNIST supernets
(the OFA families, a user's family).

- WeightSlice: `SlicedConv2d`, `SlicedLinear` allocate their largest weight once and use
  `weight[:out, :in]` per call (views: nothing copied or loaded when the subnet changes);
  `ElasticDepthwise` also shrinks its kernel (OFA's elastic kernel: centre crop, then a learned
  linear transform per size step, 7 -> 5 -> 3).
- LayerSelect: a stage runs `select(blocks, depth)`, its first `depth` blocks.
- SubnetNorm: `ElasticBN` (superserve.subnetact.norm) takes its statistics from the per-call
  NormContext.

Every forward takes the subnet's choices as arguments; no module holds an "active" subnet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from superserve.subnetact.norm import ElasticBN, NormContext

__all__ = ["ConvBN", "ElasticDepthwise", "SlicedConv2d", "SlicedLinear", "select"]


def select(blocks: Sequence[nn.Module], depth: int) -> Sequence[nn.Module]:
    """LayerSelect: the first `depth` blocks of a stage."""
    return blocks[:depth]


class SlicedConv2d(nn.Module):
    """A conv whose full weight (C_out, C_in, k, k) is allocated once; forward(x, out) uses
    weight[:out, :x.shape[1]] (WeightSlice). x: (B, C_in', H, W) -> (B, out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.stride, self.padding = stride, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor, out: int | None = None) -> torch.Tensor:
        out = self.weight.shape[0] if out is None else out
        b = None if self.bias is None else self.bias[:out]
        return F.conv2d(x, self.weight[:out, :x.shape[1]], b, self.stride, self.padding)


class SlicedLinear(nn.Module):
    """A linear layer using weight[:out, :x.shape[-1]] (WeightSlice)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor, out: int | None = None) -> torch.Tensor:
        out = self.weight.shape[0] if out is None else out
        b = None if self.bias is None else self.bias[:out]
        return F.linear(x, self.weight[:out, :x.shape[-1]], b)


class ElasticDepthwise(nn.Module):
    """Depthwise conv with elastic channels and kernel size (OFA's DynamicSeparableConv2d).

    The weight is (C, 1, K, K) at the largest kernel K; a smaller kernel k takes the centre
    crop of the next larger kernel's filter and maps it through a learned (k*k, k*k) matrix
    named "{K}to{k}_matrix", step by step (7 -> 5 -> 3). The transformed full-width filters
    are derived data: computed once per kernel size and cached until a weight changes (in
    eval, no grad), so serving slices a ready tensor; training recomputes them per call. A
    move (`.to(device)`, `.double()`) empties the cache: it swaps `param.data` in place, which
    leaves the parameters' identity and version unchanged.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        self.stride = stride
        k = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(channels, 1, k, k))
        for big, small in zip(self.kernel_sizes[1:], self.kernel_sizes[:-1]):
            self.register_parameter(f"{big}to{small}_matrix",
                                    nn.Parameter(torch.eye(small * small)))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self._cache: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, kernel_sizes={self.kernel_sizes}, stride={self.stride}"

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._cache = {}
        return super()._apply(fn, recurse)

    def _versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters()) + tuple(
            id(p) for p in self.parameters())

    def _transform(self, k: int) -> torch.Tensor:
        f = self.weight  # (C, 1, K, K)
        for big, small in zip(reversed(self.kernel_sizes[1:]), reversed(self.kernel_sizes[:-1])):
            if big <= k:
                break
            start = big // 2 - small // 2
            crop = f[:, :, start:start + small, start:start + small]
            m = getattr(self, f"{big}to{small}_matrix")
            f = F.linear(crop.reshape(-1, small * small), m).view(f.shape[0], 1, small, small)
        return f

    def filters(self, k: int) -> torch.Tensor:
        """(C, 1, k, k): the full-width filter at kernel size k."""
        if k == self.kernel_sizes[-1]:
            return self.weight
        if self.training or torch.is_grad_enabled():
            return self._transform(k)
        key = self._versions()
        hit = self._cache.get(k)
        if hit is None or hit[0] != key:
            hit = (key, self._transform(k).detach().contiguous())
            self._cache[k] = hit  # one dict store: safe under concurrent readers
        return hit[1]

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """x: (B, c, H, W) -> (B, c, H/stride, W/stride), the first c channels."""
        c = x.shape[1]
        return F.conv2d(x, self.filters(k)[:c], None, self.stride, k // 2, 1, c)


class ConvBN(nn.Module):
    """A sliced conv followed by ElasticBN (SubnetNorm); names mirror OFA's ConvLayer so a
    state dict maps one to one (`conv.weight`, `bn.weight`, `bn.running_mean`, ...)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, bn: bool = True) -> None:
        super().__init__()
        self.conv = SlicedConv2d(in_channels, out_channels, kernel_size, stride)
        self.bn = ElasticBN(out_channels) if bn else None

    def forward(self, x: torch.Tensor, ctx: NormContext, out: int | None = None) -> torch.Tensor:
        h = self.conv(x, out)
        return h if self.bn is None else self.bn(h, ctx)

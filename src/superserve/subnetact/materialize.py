"""materialize(supernet, spec): a standalone static nn.Module with that subnet's weights and
SubnetNorm statistics copied out. For baselines that load separate models (INFaaS), memory
comparisons, and equivalence tests: its outputs equal supernet(x, spec) in eval mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["materialize"]


def _conv(w: torch.Tensor, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    m = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, padding, bias=False)
    m.weight.data.copy_(w)
    return m


def _bn(bn, mean: torch.Tensor, var: torch.Tensor) -> nn.BatchNorm2d:
    c = mean.numel()
    m = nn.BatchNorm2d(c, eps=1e-5)
    m.weight.data.copy_(bn.weight[:c])
    m.bias.data.copy_(bn.bias[:c])
    m.running_mean.copy_(mean)
    m.running_var.copy_(var)
    return m


def _linear(w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    m.weight.data.copy_(w)
    if b is not None:
        m.bias.data.copy_(b)
    return m


class StaticBottleneck(nn.Module):
    def __init__(self, conv1, bn1, conv2, bn2, conv3, bn3, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3 = \
            conv1, bn1, conv2, bn2, conv3, bn3
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (self.shortcut(x) if self.shortcut is not None else x))


class StaticResNet(nn.Module):
    def __init__(self, stem, stem_bn, blocks, fc) -> None:
        super().__init__()
        self.stem, self.stem_bn, self.blocks, self.fc = stem, stem_bn, nn.Sequential(*blocks), fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, K)
        from superserve.models.resnet import MNIST_MEAN, MNIST_STD

        h = F.relu(self.stem_bn(self.stem((x - MNIST_MEAN) / MNIST_STD)))
        return self.fc(self.blocks(h).mean((2, 3)))


def _materialize_resnet(net, spec) -> StaticResNet:
    means, variances = net.norm_store.get(spec)
    stats = iter(zip(means, variances))
    stem = _conv(net.stem, 1, 1)
    stem_bn = _bn(net.stem_bn, *next(stats))
    blocks, cin = [], net.config.stem_channels
    for s, b, mid, out in net.layout(spec):
        blk = net.blocks[s][b]
        conv1 = _conv(blk.conv1[:mid, :cin])
        bn1 = _bn(blk.bn1, *next(stats))
        conv2 = _conv(blk.conv2[:mid, :mid], blk.stride, 1)
        bn2 = _bn(blk.bn2, *next(stats))
        conv3 = _conv(blk.conv3[:out, :mid])
        bn3 = _bn(blk.bn3, *next(stats))
        sc = None
        if blk.shortcut is not None:
            sc = nn.Sequential(_conv(blk.shortcut[:out, :cin], blk.stride),
                               _bn(blk.bn_sc, *next(stats)))
        blocks.append(StaticBottleneck(conv1, bn1, conv2, bn2, conv3, bn3, sc))
        cin = out
    return StaticResNet(stem, stem_bn, blocks, _linear(net.head_w[:, :cin], net.head_b))


class StaticViTLayer(nn.Module):
    def __init__(self, ln1, qkv, proj, ln2, fc1, fc2, heads: int, head_dim: int) -> None:
        super().__init__()
        self.ln1, self.qkv, self.proj, self.ln2, self.fc1, self.fc2 = ln1, qkv, proj, ln2, fc1, fc2
        self.heads, self.head_dim = heads, head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, self.heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class StaticViT(nn.Module):
    def __init__(self, patch, cls, pos, layers, ln, head, patch_size: int,
                 stem: nn.Module | None = None, pool: str = "cls") -> None:
        super().__init__()
        self.pool = pool
        self.stem = stem
        self.patch, self.layers, self.ln, self.head = patch, nn.Sequential(*layers), ln, head
        self.cls, self.pos = nn.Parameter(cls), nn.Parameter(pos)
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, K)
        from superserve.models.vit import MNIST_MEAN, MNIST_STD

        h = (x - MNIST_MEAN) / MNIST_STD
        if self.stem is not None:
            h = F.gelu(self.stem(h))
        h = self.patch(h).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos
        h = self.layers(h)
        return self.head(self.ln(h[:, 1:].mean(1) if self.pool == "mean" else h[:, 0]))


def _copy_ln(ln: nn.LayerNorm) -> nn.LayerNorm:
    m = nn.LayerNorm(ln.normalized_shape, eps=ln.eps)
    m.load_state_dict(ln.state_dict())
    return m


def _materialize_vit(net, spec) -> StaticViT:
    c = net.config
    hd, d = c.head_dim, c.embed_dim
    stem = None
    if net.stem_w is not None:
        stem = nn.Conv2d(1, c.stem_channels, 3, 1, 1)
        stem.weight.data.copy_(net.stem_w)
        stem.bias.data.copy_(net.stem_b)
    patch = nn.Conv2d(c.stem_channels or 1, d, c.patch_size, c.patch_size)
    patch.weight.data.copy_(net.patch_w)
    patch.bias.data.copy_(net.patch_b)
    layers = []
    for li, h, m in zip(net._kept[spec.depth], spec.heads, spec.mlp):
        L = net.layers[li]
        layers.append(StaticViTLayer(
            _copy_ln(L.ln1), _linear(L.qkv_w[:h].reshape(h * 3 * hd, d), L.qkv_b[:h].reshape(-1)),
            _linear(L.proj_w[:, :h * hd], L.proj_b), _copy_ln(L.ln2),
            _linear(L.fc1_w[:m], L.fc1_b[:m]), _linear(L.fc2_w[:, :m], L.fc2_b), h, hd))
    return StaticViT(patch, net.cls.detach().clone(), net.pos.detach().clone(), layers,
                     _copy_ln(net.ln), _linear(net.head_w, net.head_b), c.patch_size, stem, c.pool)


@torch.no_grad()
def materialize(supernet: nn.Module, spec) -> nn.Module:
    """A standalone eval-mode module computing supernet(x, spec), weights copied."""
    supernet.space.validate(spec)
    make = getattr(supernet, "materialize", None)
    if make is None:
        raise ValueError(f"cannot materialize family {supernet.family!r}: it has no "
                         "materialize(spec)")
    return make(spec).eval()


class TrimmedSubnet(nn.Module):
    """A supernet cut down to one subnet: every weight trimmed to the prefix the spec uses
    (zero-size where the spec never touches it), the spec's SubnetNorm statistics only, and
    forward(x) = the same forward code on that spec. Any family whose operators slice prefixes
    (WeightSlice) materializes this way with no code of its own."""

    def __init__(self, net: nn.Module, spec) -> None:
        super().__init__()
        self.net, self.spec = net, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.spec)


def _prefix(index, shape: torch.Size) -> tuple[int, ...] | None:
    """The extents a `tensor[index]` reads when `index` is a prefix slice; None otherwise."""
    idx = index if isinstance(index, tuple) else (index,)
    if len(idx) > len(shape) or not all(isinstance(i, slice) and i.start in (None, 0)
                                         and i.step in (None, 1) for i in idx):
        return None
    ext = [min(i.stop, n) if i.stop is not None else n for i, n in zip(idx, shape)]
    return tuple(ext) + tuple(shape[len(idx):])


def trim_to_spec(supernet: nn.Module, spec) -> TrimmedSubnet:
    """materialize() for any family built on prefix slicing (superserve.subnetact.ops): one
    recorded forward (batch statistics, grad on so derived filters are recomputed) finds, per
    parameter, the largest prefix read; a copy keeps exactly that."""
    import copy

    from torch.overrides import TorchFunctionMode

    from superserve.subnetact.norm import NormContext, NormMode

    params = {id(p): (name, p) for name, p in supernet.named_parameters()}
    extent: dict[str, tuple[int, ...]] = {}

    def see(name: str, ext: tuple[int, ...]) -> None:
        old = extent.get(name)
        extent[name] = ext if old is None else tuple(max(a, b) for a, b in zip(old, ext))

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.Tensor.__getitem__ and id(args[0]) in params:
                name, p = params[id(args[0])]
                ext = _prefix(args[1], p.shape)
                see(name, ext if ext is not None else tuple(p.shape))
            elif getattr(func, "__name__", "") != "__get__":  # .shape etc. read no data
                for a in list(args) + list(kwargs.values()):
                    if isinstance(a, torch.Tensor) and id(a) in params:
                        see(params[id(a)][0], tuple(a.shape))
            return func(*args, **kwargs)

    r = getattr(spec, "r", None) or supernet.input_spec.height
    p0 = next(supernet.parameters())  # walk the layers on the model's device, in its dtype
    x = torch.zeros(2, supernet.input_spec.channels, r, r, device=p0.device, dtype=p0.dtype)
    with torch.enable_grad(), Record():
        supernet.forward_ctx(x, spec, NormContext(NormMode.BATCH))
    net = copy.deepcopy(supernet)
    with torch.no_grad():
        for name, p in net.named_parameters():
            ext = extent.get(name, (0,) + tuple(p.shape[1:]))
            p.data = p.data[tuple(slice(0, n) for n in ext)].clone()
    for m in net.modules():  # derived data (ElasticDepthwise's filters) is rebuilt on demand
        if isinstance(getattr(m, "_cache", None), dict):
            m._cache = {}
    if getattr(supernet, "uses_norm_stats", False):
        net.norm_store = supernet.norm_store.subset([spec])
    return TrimmedSubnet(net.eval(), spec)

"""SubnetNorm: BatchNorm statistics stored per (served subnet, BN layer).

Running statistics collected while training describe no subnet in particular; using them for a
small subnet can wreck its accuracy (the paper saw a collapse to ~10%). So statistics are
calibrated per subnet by forward passes over training images and stored per spec, while
gamma/beta stay shared. Storage is compact: one float16 tensor [2, C] per spec (means, then
variances, of every active BN layer in forward order), about 4 bytes per active channel.

The statistics reach the BN layers through a per-call `NormContext`, never through module
state, so calls with different specs can overlap safely. The store is a submodule of its
supernet (an nn.Module without parameters), so `supernet.to(device)` / `.to(dtype)` moves the
statistics too (`NormStore._apply`), and calibration runs on the device the model is on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superserve.errors import CheckpointError, InvalidSpecError
from superserve.subnetact.spec import SubnetSpec, spec_from_dict

__all__ = ["ElasticBN", "NormContext", "NormMode", "NormStore", "calibrate_specs",
           "store_shared_stats"]

BN_EPS = 1e-5


class NormMode(enum.Enum):
    TRAIN = "train"  # normalise with batch statistics (training)
    EVAL = "eval"  # normalise with the spec's stored statistics (serving)
    CALIBRATE = "calibrate"  # normalise with batch statistics and record them
    BATCH = "batch"  # normalise with batch statistics, touch nothing
    SHARED = "shared"  # the running statistics training shared across subnets (no SubnetNorm);
    # records views of the sliced running statistics (store_shared_stats keeps them per spec)


class NormContext:
    """Per-call state of BN layers: where the next layer's statistics come from or go."""

    __slots__ = ("_means", "_vars", "mode", "records")

    def __init__(self, mode: NormMode, stats: tuple[Sequence[torch.Tensor],
                 Sequence[torch.Tensor]] | None = None) -> None:
        self.mode = mode
        self._means: Iterator[torch.Tensor] | None = None
        self._vars: Iterator[torch.Tensor] | None = None
        if stats is not None:
            self._means, self._vars = iter(stats[0]), iter(stats[1])
        self.records: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def next_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._means is not None and self._vars is not None
        return next(self._means), next(self._vars)


class ElasticBN(nn.Module):
    """Shared gamma/beta of one BN layer at its largest width, plus the running statistics
    training accumulates over whatever subnets it samples (kept only to show why SubnetNorm
    is needed: NormMode.SHARED uses them)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}"

    def forward(self, x: torch.Tensor, ctx: NormContext) -> torch.Tensor:
        """BatchNorm over the first x.shape[1] channels. x: (B, C, ...)."""
        c = x.shape[1]
        w, b = self.weight[:c], self.bias[:c]
        mode = ctx.mode
        if mode is NormMode.EVAL:
            mean, var = ctx.next_stats()
            return F.batch_norm(x, mean, var, w, b, False, 0.0, BN_EPS)
        if mode is NormMode.TRAIN:
            return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], w, b, True,
                                0.1, BN_EPS)
        if mode is NormMode.SHARED:
            ctx.records.append((self.running_mean[:c], self.running_var[:c], 0))
            return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], w, b, False,
                                0.0, BN_EPS)
        if mode is NormMode.CALIBRATE:
            dims = [0] + list(range(2, x.dim()))
            xd = x.double()
            ctx.records.append((xd.sum(dims), (xd * xd).sum(dims), x.numel() // c))
        return F.batch_norm(x, None, None, w, b, True, 0.0, BN_EPS)  # BATCH, CALIBRATE


class NormStore(nn.Module):
    """Calibrated statistics of many subnets: spec -> [2, C] (float16 by default) plus layer
    sizes. `dtype=torch.float32` keeps them exact (the OFA families: their conformance with the
    reference is checked to 1e-4, and float16 statistics move ImageNet logits by ~1e-3).

    An nn.Module with no parameters or buffers (the state dict is unchanged; statistics are
    saved by `state()`), so that a supernet holding it as an attribute moves it: `_apply`
    (every `.to()`, `.cuda()`, `.double()`, ...) moves the packed statistics to the model's
    device and makes `get()` return them in the model's compute dtype. The packed storage keeps
    `dtype`; `device` and `compute_dtype` say where and in what the forward runs."""

    # Unpacked float32 views are cached per spec: unpacking costs ~50 us per call (53 BN
    # layers), which would otherwise be paid on every batch. Bounded so that a search that
    # forwards thousands of specs cannot grow it without limit.
    CACHE_LIMIT = 1024

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        if dtype not in (torch.float16, torch.float32):
            raise InvalidSpecError(f"NormStore dtype must be float16 or float32, got {dtype}")
        self.dtype = dtype
        self.device = torch.device("cpu")  # where the statistics are (the model's device)
        self.compute_dtype = torch.float32  # what get() returns (the model's dtype)
        self._stats: dict[SubnetSpec, torch.Tensor] = {}
        self._sizes: dict[SubnetSpec, list[int]] = {}
        self._views: dict[SubnetSpec, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]] = {}

    def __len__(self) -> int:
        return len(self._stats)

    def extra_repr(self) -> str:
        return f"{len(self._stats)} subnets, {self.dtype}, {self.device}"

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
               ) -> NormStore:
        # where (and in what dtype) would `fn` put a floating-point tensor of the model's?
        probe = fn(torch.zeros((), dtype=self.compute_dtype, device=self.device))
        self.device, self.compute_dtype = probe.device, probe.dtype
        self._stats = {s: t.to(self.device) for s, t in self._stats.items()}
        self._views = {}  # rebuilt on the new device, in the new dtype, on demand
        return super()._apply(fn, recurse)

    def _follow(self, other: NormStore) -> NormStore:
        """`other` moved to this store's device and compute dtype (a subset or a merge)."""
        other.device, other.compute_dtype = self.device, self.compute_dtype
        other._stats = {s: t.to(self.device) for s, t in other._stats.items()}
        other._views = {}
        return other

    def __contains__(self, spec: object) -> bool:
        return spec in self._stats

    def has(self, spec: SubnetSpec) -> bool:
        return spec in self._stats

    def specs(self) -> list[SubnetSpec]:
        return list(self._stats)

    def put(self, spec: SubnetSpec, means: Sequence[torch.Tensor], variances: Sequence[torch.Tensor]
            ) -> None:
        sizes = [int(m.numel()) for m in means]
        packed = torch.stack([torch.cat([m.float() for m in means]),
                              torch.cat([v.float() for v in variances])]).to(self.device,
                                                                            self.dtype)
        self._stats[spec] = packed.contiguous()
        self._sizes[spec] = sizes
        self._views.pop(spec, None)

    def get(self, spec: SubnetSpec) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Per-layer (means, variances) in forward order (read-only views), on `device` in
        `compute_dtype` (float32 unless the model was moved to another dtype)."""
        views = self._views.get(spec)
        if views is not None:
            return views
        packed = self._stats.get(spec)
        if packed is None:
            raise InvalidSpecError(
                f"no SubnetNorm statistics for subnet {spec.to_dict()}: calibrate it first "
                "(superserve.subnetact.calibrate)")
        full = packed.to(self.compute_dtype)
        sizes = self._sizes[spec]
        views = (full[0].split(sizes), full[1].split(sizes))
        if len(self._views) >= self.CACHE_LIMIT:
            self._views = {}  # a fresh dict, not clear(): concurrent readers keep theirs
        self._views[spec] = views  # one dict store: safe under concurrent calls
        return views

    def cache_nbytes(self) -> int:
        """Bytes of the unpacked views cached for the specs served so far."""
        return sum(2 * sum(m.numel() * m.element_size() for m in v[0])
                   for v in self._views.values())

    def nbytes(self, spec: SubnetSpec | None = None) -> int:
        if spec is not None:
            return self._stats[spec].numel() * self._stats[spec].element_size()
        return sum(t.numel() * t.element_size() for t in self._stats.values())

    def subset(self, specs: Iterable[SubnetSpec]) -> NormStore:
        out = NormStore(self.dtype)
        for s in specs:
            if s not in self._stats:
                raise InvalidSpecError(f"no SubnetNorm statistics for subnet {s.to_dict()}")
            out._stats[s], out._sizes[s] = self._stats[s], self._sizes[s]
        return self._follow(out)

    def update(self, other: NormStore) -> None:
        self._stats.update({s: t.to(self.device, self.dtype) for s, t in other._stats.items()})
        self._sizes.update(other._sizes)
        self._views = {}

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {"dtype": str(self.dtype).removeprefix("torch."),
                "specs": [s.to_dict() for s in self._stats],
                "sizes": [self._sizes[s] for s in self._stats],
                "stats": [self._stats[s].cpu() for s in self._stats]}  # loadable anywhere

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NormStore:
        dtype = {"float16": torch.float16, "float32": torch.float32}.get(
            state.get("dtype", "float16"))
        if dtype is None:
            raise CheckpointError(f"malformed SubnetNorm statistics: dtype {state.get('dtype')!r}")
        out = cls(dtype)
        try:
            for d, sizes, t in zip(state["specs"], state["sizes"], state["stats"], strict=True):
                spec = spec_from_dict(d)
                out._stats[spec] = t.to(dtype).contiguous()
                out._sizes[spec] = [int(s) for s in sizes]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"malformed SubnetNorm statistics: {e!r}") from e
        return out

    def save(self, path: str | Path) -> None:
        torch.save({"schema_version": 1, **self.state()}, path)

    @classmethod
    def load(cls, path: str | Path) -> NormStore:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("schema_version") != 1:
            raise CheckpointError(f"{path}: unsupported SubnetNorm schema_version "
                                  f"{state.get('schema_version')!r}")
        return cls.from_state(state)


def _on(store: NormStore, x: torch.Tensor) -> torch.Tensor:
    """`x` on the store's device, in its compute dtype when x is floating point."""
    return x.to(store.device, store.compute_dtype if x.is_floating_point() else None)


def pooled_stats(records: list[list[tuple[torch.Tensor, torch.Tensor, int]]]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Exact per-channel mean and (biased) variance over all calibration batches."""
    means, variances = [], []
    for layer in zip(*records):
        s1 = sum(r[0] for r in layer)
        s2 = sum(r[1] for r in layer)
        n = sum(r[2] for r in layer)
        m = s1 / n
        means.append(m.float())
        variances.append((s2 / n - m * m).clamp_min(0.0).float())
    return means, variances


def calibrate_specs(forward: Callable[[torch.Tensor, SubnetSpec, NormContext], torch.Tensor],
                    store: NormStore, specs: Iterable[SubnetSpec], images: torch.Tensor,
                    batch_size: int = 200) -> None:
    """Run each spec over `images` in CALIBRATE mode and store its pooled statistics. Each
    chunk of `images` is moved to the store's device and dtype (the model's: the store follows
    it), so host images calibrate a model on a GPU."""
    with torch.inference_mode():
        for spec in specs:
            records = []
            for i in range(0, len(images), batch_size):
                ctx = NormContext(NormMode.CALIBRATE)
                forward(_on(store, images[i:i + batch_size]), spec, ctx)
                records.append(ctx.records)
            if records and records[0]:
                store.put(spec, *pooled_stats(records))


def store_shared_stats(forward: Callable[[torch.Tensor, SubnetSpec, NormContext], torch.Tensor],
                       store: NormStore, spec: SubnetSpec, x: torch.Tensor) -> None:
    """Store, as `spec`'s SubnetNorm statistics, the slices of the shared running statistics
    that `spec` uses (what OFA's `get_active_subnet` copies into an extracted subnet). `x`: any
    input of the right shape (one image), only to walk the layers in forward order."""
    ctx = NormContext(NormMode.SHARED)
    with torch.inference_mode():
        forward(_on(store, x[:1]), spec, ctx)
    if ctx.records:
        store.put(spec, [r[0] for r in ctx.records], [r[1] for r in ctx.records])

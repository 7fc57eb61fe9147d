"""What every supernet family shares: forward(x, spec), SubnetNorm wiring, calibration."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from superserve.subnetact.norm import NormContext, NormMode, NormStore, calibrate_specs
from superserve.subnetact.spec import SubnetSpec

__all__ = ["SupernetMixin", "as_tensor"]


def as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return images.float()


class SupernetMixin:
    """Mixed into nn.Module supernets that implement `forward_ctx(x, spec, ctx)`.

    `uses_norm_stats`: whether the family has BatchNorm (SubnetNorm) or LayerNorm only."""

    uses_norm_stats = True
    norm_store: NormStore

    def _init_norm(self) -> None:
        self.norm_store = NormStore()

    def forward(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:  # (B,1,H,W) -> (B,K)
        assert isinstance(self, nn.Module)
        if self.training:
            return self.forward_ctx(x, spec, NormContext(NormMode.TRAIN))
        if not self.uses_norm_stats:
            return self.forward_ctx(x, spec, NormContext(NormMode.EVAL))
        return self.forward_ctx(x, spec, NormContext(NormMode.EVAL, self.norm_store.get(spec)))

    def forward_mode(self, x: torch.Tensor, spec: SubnetSpec, mode: NormMode) -> torch.Tensor:
        """Forward with another normalisation: NormMode.SHARED is "without SubnetNorm" (the
        running statistics training shared by all subnets); NormMode.BATCH uses the batch's."""
        return self.forward_ctx(x, spec, NormContext(mode))

    def calibrate(self, specs, images, n: int = 2000, seed: int = 0,
                  batch_size: int = 200) -> None:
        """SubnetNorm: compute and store BN statistics of `specs` over `n` images chosen
        with `seed` from `images` (training images; never the test split)."""
        if not self.uses_norm_stats:
            return
        x = as_tensor(images)
        if n < len(x):
            idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
            x = x[torch.from_numpy(np.sort(idx))]
        calibrate_specs(self.forward_ctx, self.norm_store, list(specs), x, batch_size)

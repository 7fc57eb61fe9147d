"""What every supernet family shares: forward(x, spec), SubnetNorm wiring, calibration.

`SupernetMixin` implements the parts of the public contract (superserve.models.contract) that
do not depend on the architecture; a family defines `forward_ctx`, `space`, `input_spec`,
`flops`, `params`, `num_layers` and, to be materialized, `materialize`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from superserve.subnetact.norm import NormContext, NormMode, NormStore, calibrate_specs
from superserve.subnetact.spec import SubnetSpec

__all__ = ["ServingPlan", "SupernetMixin", "as_tensor"]

ServingPlan = Callable[[torch.Tensor], torch.Tensor]


def as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return images.float()


class SupernetMixin:
    """Mixed into nn.Module supernets that implement `forward_ctx(x, spec, ctx)`.

    `uses_norm_stats`: whether the family has BatchNorm (SubnetNorm) or LayerNorm only."""

    uses_norm_stats = True
    norm_store: NormStore
    norm_dtype = torch.float16  # SubnetNorm storage (float32: exact, twice the bytes)
    eval_batch_size = 200  # images per forward when calibrating or scoring (activation memory)

    # Serving plans (`serving_plan`): one per spec, bounded like NormStore's views.
    PLAN_CACHE_LIMIT = 1024

    def _init_norm(self) -> None:
        self.norm_store = NormStore(self.norm_dtype)
        self._plans: dict[SubnetSpec, tuple[Any, ServingPlan | None]] = {}

    def serving_plan(self, spec: SubnetSpec, stats: Any) -> ServingPlan | None:
        """`x -> self(x, spec)` in eval mode without autograd, as one flat function over views
        of the shared weights and of `stats` (the spec's SubnetNorm statistics) taken once:
        no module calls, no slicing, no statistics iterator per batch. Same operations in
        the same order, so the same numbers as `forward_ctx`; the weights stay shared (views,
        never copies). `stats` is None for a family without SubnetNorm (`uses_norm_stats`
        False). None (the default): the family has no plan, `forward_ctx` runs."""
        return None

    def _cached_plan(self, spec: SubnetSpec, stats: Any) -> ServingPlan | None:
        plans = getattr(self, "_plans", None)
        if plans is None:
            plans = self._plans = {}
        got = plans.get(spec)
        if got is not None and got[0] is stats:  # new statistics for the spec: a new plan
            return got[1]
        plan = self.serving_plan(spec, stats)
        if len(plans) >= self.PLAN_CACHE_LIMIT:
            plans = self._plans = {}  # a fresh dict: concurrent readers keep theirs
        plans[spec] = (stats, plan)
        return plan

    def _drop_plans(self) -> None:
        self._plans = {}

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # .to(), .cuda(), .half(), ...: the parameters may move to new storage, which the
        # plans' views would not follow
        self._drop_plans()
        return super()._apply(fn, *args, **kwargs)  # type: ignore[misc]

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._drop_plans()  # assign=True replaces the parameters themselves
        return super().load_state_dict(*args, **kwargs)  # type: ignore[misc]

    def __getstate__(self) -> dict[str, Any]:
        # a copy (copy.deepcopy, pickle, torch.save of the module) starts without plans: theirs
        # would read the original's weights, and closures do not pickle
        state = super().__getstate__()  # type: ignore[misc]
        return {**state, "_plans": {}}

    def materialize(self, spec: SubnetSpec) -> nn.Module:
        """A standalone module computing self(x, spec): by default the supernet trimmed to
        the weight prefixes the spec reads, with the spec's statistics (subnetact.materialize.
        trim_to_spec); the MNIST families build static modules instead."""
        from superserve.subnetact.materialize import trim_to_spec

        return trim_to_spec(self, spec)

    def store_shared_stats(self, specs, x: torch.Tensor | None = None) -> None:
        """SubnetNorm statistics of `specs` taken from the shared running statistics (what a
        weight file carries; OFA's extracted subnets use these): no calibration pass."""
        if not self.uses_norm_stats:
            return
        from superserve.subnetact.norm import store_shared_stats

        spec_in = self.input_spec  # type: ignore[attr-defined]
        for spec in specs:
            r = getattr(spec, "r", None) or spec_in.height
            xi = x if x is not None else torch.zeros(1, spec_in.channels, r, r)
            store_shared_stats(self.forward_ctx, self.norm_store, spec, xi)

    def forward(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:  # (B,1,H,W) -> (B,K)
        assert isinstance(self, nn.Module)
        if self.training:
            return self.forward_ctx(x, spec, NormContext(NormMode.TRAIN))
        # a family without SubnetNorm (LayerNorm only) has no statistics: its plans are keyed
        # by the spec alone
        stats = self.norm_store.get(spec) if self.uses_norm_stats else None
        if not torch.is_grad_enabled():  # serving, scoring, profiling: the flat plan if any
            plan = self._cached_plan(spec, stats)
            if plan is not None:
                return plan(x)
        return self.forward_ctx(x, spec, NormContext(NormMode.EVAL, stats))

    def forward_mode(self, x: torch.Tensor, spec: SubnetSpec, mode: NormMode) -> torch.Tensor:
        """Forward with another normalisation: NormMode.SHARED is "without SubnetNorm" (the
        running statistics training shared by all subnets); NormMode.BATCH uses the batch's."""
        return self.forward_ctx(x, spec, NormContext(mode))

    def calibrate(self, specs, images, n: int = 2000, seed: int = 0,
                  batch_size: int | None = None) -> None:
        """SubnetNorm: compute and store BN statistics of `specs` over `n` images chosen
        with `seed` from `images` (training images; never the test split)."""
        if not self.uses_norm_stats:
            return
        x = as_tensor(images)
        if n < len(x):
            idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
            x = x[torch.from_numpy(np.sort(idx))]
        calibrate_specs(self.forward_ctx, self.norm_store, list(specs), x,
                        batch_size or self.eval_batch_size)

"""What a profile run does: ProfileConfig (batch sizes, threads, device, image counts, the
search's size, the time budget). Pure: no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from superserve.errors import ConfigError
from superserve.profiling.search import SearchConfig

__all__ = ["ProfileConfig"]


@dataclass(frozen=True)
class ProfileConfig:
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    threads: int = 1  # torch threads while timing: the live worker's
    device: str = "cpu"  # where latencies are timed (and calibration runs): cpu, cuda, cuda:N
    eval_threads: int = 2  # torch threads for calibration and accuracy passes (untimed)
    repeats: int = 15  # timed runs per subnet at batch 1 (fewer at larger batches: budget.py)
    min_repeats: int = 5  # timed runs at the largest batches
    warmup: int = 3
    search_calib_images: int = 64  # SubnetNorm calibration per search candidate
    search_val_images: int = 128  # validation images scoring a search candidate (the search
    # split; the measured frontier is scored on the whole validation and test splits)
    calib_images: int = 2000  # SubnetNorm calibration of the measured frontier (OFA's 2000)
    max_subnets: int = 48  # predicted-frontier points measured (plus both ends)
    predictor_samples: int = 24  # random subnets timed to fit the latency predictor
    probe_repeats: int = 7  # timed batch-1 runs of each of those
    # the search; None: sized by max_subnets (population 2 x, children 1 x per generation,
    # 4 generations), cut short by the time budget
    search: SearchConfig | None = None
    time_budget_s: float | None = 1800.0  # the whole profile's target; the search gets what
    # the other phases (fixed by max_subnets and the data) leave; None: no bound
    min_search_candidates: int = 24  # evaluated whatever the budget (the accuracy predictor)
    # the second search runs on the fitted predictor: no forward passes, so it can be large
    predictor_search: SearchConfig = field(default_factory=lambda: SearchConfig(
        population=2000, generations=8, children=1000))
    seed: int = 0

    def __post_init__(self) -> None:
        bs = list(self.batch_sizes)
        if not bs or bs != sorted(set(bs)) or bs[0] < 1:
            raise ConfigError(f"batch_sizes must be strictly increasing and >= 1, got {bs}")
        for name in ("threads", "eval_threads", "repeats", "min_repeats", "search_calib_images",
                     "search_val_images", "calib_images", "max_subnets", "predictor_samples",
                     "probe_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup!r}")
        if self.max_subnets < 2:
            raise ConfigError(f"max_subnets must be >= 2, got {self.max_subnets!r}")
        if self.min_search_candidates < 8:
            raise ConfigError(f"min_search_candidates must be >= 8 (the accuracy predictor's "
                              f"minimum), got {self.min_search_candidates!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time_budget_s must be > 0 or None, got {self.time_budget_s!r}")
        from superserve.runtime.devices import check_device

        check_device(self.device)

    def search_config(self) -> SearchConfig:
        """The search as configured, or sized by max_subnets."""
        if self.search is not None:
            return self.search
        return SearchConfig(population=max(24, 2 * self.max_subnets), generations=4,
                            children=max(16, self.max_subnets), seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

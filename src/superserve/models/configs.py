"""The committed default configs: the shipped checkpoints are `superserve train` with these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from superserve.errors import ConfigError

__all__ = ["TrainConfig", "default_train_config"]


@dataclass(frozen=True)
class TrainConfig:
    family: str  # "resnet" | "vit"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 2e-3  # AdamW peak learning rate (one-cycle: warm-up then cosine)
    weight_decay: float = 0.05
    warmup_frac: float = 0.1  # fraction of steps spent warming up
    num_random: int = 2  # random subnets per step besides the largest and the smallest
    kd_weight: float = 1.0  # in-place distillation loss weight of the non-largest subnets
    kd_warmup_frac: float = 0.0  # ramp the KD weight up from 0 over this fraction of steps:
    # distilling from a near-uniform early teacher pins the shared weights near chance (ViT
    # on MNIST-5k: val 48% after 250 steps with KD from the start, 85% with labels only)
    student_label_weight: float = 0.0  # extra label CE for the non-largest subnets (ViT: the
    # teacher is poor for the first epochs and KD alone stalls the shared weights)
    label_smoothing: float = 0.1  # the largest subnet's CE
    augment: bool = True  # random affine: shift +-2 px, rotate +-10 deg, scale 0.9-1.1
    dataset: str = "mnist"  # "mnist" (MNIST-5k) | "digits8" (sklearn 8x8, tests)
    calib_images: int = 2000  # SubnetNorm calibration images (from the training split)
    threads: int = 1  # torch threads while training (1: robust when the 2 cores are shared)
    seed: int = 0
    max_steps: int = 0  # > 0: stop early (quick runs)
    model: dict[str, Any] = field(default_factory=dict)  # model config overrides

    def __post_init__(self) -> None:
        if self.family not in ("resnet", "vit"):
            raise ConfigError(f"family must be 'resnet' or 'vit', got {self.family!r}")
        if self.dataset not in ("mnist", "digits8"):
            raise ConfigError(f"dataset must be 'mnist' or 'digits8', got {self.dataset!r}")
        for name in ("epochs", "batch_size", "threads", "calib_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.kd_warmup_frac <= 1.0:
            raise ConfigError(f"kd_warmup_frac must lie in [0, 1], got {self.kd_warmup_frac!r}")
        if self.num_random < 0:
            raise ConfigError(f"num_random must be >= 0, got {self.num_random!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_DEFAULTS = {
    "resnet": TrainConfig(family="resnet", epochs=14, batch_size=64, lr=3e-3, weight_decay=0.02),
    "vit": TrainConfig(family="vit", epochs=40, lr=1e-3, weight_decay=0.05, warmup_frac=0.05,
                       student_label_weight=0.5, kd_warmup_frac=0.3, model={"pool": "mean"}),
}


def default_train_config(family: str, quick: bool = False) -> TrainConfig:
    if family not in _DEFAULTS:
        raise ConfigError(f"family must be one of {sorted(_DEFAULTS)}, got {family!r}")
    cfg = _DEFAULTS[family]
    if quick:  # a smaller supernet on 8x8 digits: seconds, for tests and smoke runs
        model = ({"image_size": 8, "stem_channels": 8, "stage_channels": (8, 16),
                  "stage_strides": (1, 2), "depth_choices": (1, 2)} if family == "resnet" else
                 {"image_size": 8, "patch_size": 2, "embed_dim": 32, "num_layers": 2,
                  "depth_choices": (1, 2), "head_choices": (1, 2), "mlp_choices": (32, 64)})
        cfg = replace(cfg, epochs=12, batch_size=64, dataset="digits8", calib_images=500,
                      model={**cfg.model, **model}, lr=1e-2, weight_decay=0.01)
    return cfg

"""Accuracy measures of a subnet on a labelled split, from its logits.

Top-1 on the 500 validation images moves in 0.2-point steps and ties constantly between close
subnets, so the search ranks by a continuous score instead. The plain mean probability of the
true class is not it: it rewards confidence, and the largest subnet (trained with label
smoothing, the others distilled from it) is less confident than mid-size subnets, so that
measure put the frontier's top at ~15 MFLOPs of 106. The score used here is the
temperature-calibrated log-likelihood: minus the mean NLL of softmax(logits / T) at the best
T for that subnet. Rescaling a subnet's logits cannot change it, so it measures how well the
subnet ranks the true class, not how sure it sounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Scores", "calibrated_nll", "scores_from_logits"]

# log-temperature search: a coarse grid (T from e^-5 to e^5, 10% steps), then a fine one
# (0.25% steps) around its best point
_COARSE = torch.linspace(-5.0, 5.0, 101)
_FINE = torch.linspace(-0.1, 0.1, 81)


@dataclass(frozen=True)
class Scores:
    score: float  # search score: minus the temperature-calibrated NLL (higher is better)
    top1: float  # fraction correct
    p_true: float  # mean probability of the true class (reported for comparison)


def calibrated_nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    """min over T of mean NLL of softmax(logits / T). logits (N, K) float, y (N,) int64."""
    x = logits.float()
    rows = torch.arange(len(y))

    def nll(log_t: torch.Tensor) -> torch.Tensor:  # (T,) mean NLL per temperature
        z = x[None] / log_t.exp()[:, None, None]  # (T, N, K)
        return -z.log_softmax(-1)[:, rows, y].mean(1)

    best = _COARSE[nll(_COARSE).argmin()]
    return float(nll(best + _FINE).min())


def scores_from_logits(logits: torch.Tensor, y: torch.Tensor) -> Scores:
    p = logits.float().softmax(1)
    return Scores(score=-calibrated_nll(logits, y),
                  top1=float((logits.argmax(1) == y).float().mean()),
                  p_true=float(p[torch.arange(len(y)), y].mean()))

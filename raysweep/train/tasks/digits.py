"""scikit-learn's bundled digits (1797 8x8 images, 10 classes): an MLP classifier."""
from __future__ import annotations

import functools

import numpy as np

from ...cache import cached
from .base import Splits, Task


def _save_digits(path: str) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    with open(path, "wb") as f:
        np.savez(f, x=x, y=y)


def _digits() -> tuple:
    """scikit-learn's arrays, read from the user's cache after the first time: importing scikit-learn
    to load them cost each trial process 0.9 s of CPU, which on 2 cores held back a sweep's start."""
    path = cached("digits-v1.npz", _save_digits)
    if path is None:
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    with np.load(path) as saved:
        return saved["x"], saved["y"]


@functools.lru_cache(maxsize=1)
def _splits() -> tuple:
    import torch

    x, y = _digits()
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))  # fixed split, the same on every machine
    x, y = torch.from_numpy(x[order]), torch.from_numpy(y[order]).long()
    a, b = 1078, 1078 + 359  # 60 / 20 / 20
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


class DigitsMLP(Task):
    name = "digits_mlp"
    params = {"hidden": 128, "layers": 2, "dropout": 0.1}

    def datasets(self, config):
        from torch.utils.data import TensorDataset

        train, val, test = _splits()
        return Splits(TensorDataset(*train), TensorDataset(*val), TensorDataset(*test))

    def model(self, config):
        from torch import nn

        s = self.settings(config)
        layers, width = [], 64
        for _ in range(int(s["layers"])):
            layers += [nn.Linear(width, int(s["hidden"])), nn.LayerNorm(int(s["hidden"])), nn.GELU(),
                       nn.Dropout(float(s["dropout"]))]
            width = int(s["hidden"])
        return nn.Sequential(*layers, nn.Linear(width, 10))

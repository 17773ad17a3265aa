"""A user task, as a spec names it: `task: example_tasks:WineMLP` (this file sits beside the spec,
so raysweep finds it; a task in an installed package works the same way as `package.module:Object`).

A task gives the trainer three things: `datasets` (train/val/test splits of (input, target)
tensors; the test split is only used by the final stage), `model`, and its quality metric
(`quality = "accuracy"` or `"perplexity"`; override `loss`/`correct` for other losses).
`params` are the task's own settings with their defaults; a spec may fix or search them."""
import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_wine
from torch import nn
from torch.utils.data import TensorDataset

from raysweep.train import Splits, Task


class WineMLP(Task):
    name = "wine_mlp"
    quality = "accuracy"
    params = {"hidden": 32, "dropout": 0.0}

    def datasets(self, config):
        x, y = load_wine(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        order = np.random.default_rng(0).permutation(len(x))
        x = torch.tensor(x[order], dtype=torch.float32)
        y = torch.tensor(y[order])
        return Splits(TensorDataset(x[:106], y[:106]), TensorDataset(x[106:142], y[106:142]),
                      TensorDataset(x[142:], y[142:]))

    def model(self, config):
        s = self.settings(config)
        return nn.Sequential(nn.Linear(13, s["hidden"]), nn.ReLU(), nn.Dropout(s["dropout"]), nn.Linear(s["hidden"], 3))


class DiabetesMLP(Task):
    """A regression task: scikit-learn's bundled diabetes data (442 patients, 10 features, a disease
    progression score). `quality = "r2"` makes the loss mean squared error and reports `val_r2` (and
    `val_mse`, `val_mae`, listed in `metrics`), each computed over the whole split."""
    name = "diabetes_mlp"
    quality = "r2"
    metrics = ("mse", "mae")
    params = {"hidden": 64, "dropout": 0.0}

    def datasets(self, config):
        x, y = load_diabetes(return_X_y=True)
        x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()  # targets standardised: MSE near 1 at chance
        order = np.random.default_rng(0).permutation(len(x))
        x = torch.tensor(x[order], dtype=torch.float32)
        y = torch.tensor(y[order], dtype=torch.float32)
        return Splits(TensorDataset(x[:266], y[:266]), TensorDataset(x[266:354], y[266:354]),
                      TensorDataset(x[354:], y[354:]))

    def model(self, config):
        s = self.settings(config)
        return nn.Sequential(nn.Linear(10, s["hidden"]), nn.ReLU(), nn.Dropout(s["dropout"]), nn.Linear(s["hidden"], 1))

"""What a task gives the trainer: data, a model, a loss and its metrics. torch is imported where it is
used: the driver names and checks tasks without it (0.8 s of every command's start)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset  # seen only by the final stage


def one_logit(output: torch.Tensor) -> bool:
    return output.ndim == 1 or output.shape[-1] == 1


def _scores(output: torch.Tensor) -> torch.Tensor:
    """Class scores for ranking metrics: the positive class's probability for one logit or two, else
    each class's probability."""
    if one_logit(output):
        return output.reshape(-1).sigmoid()
    probs = output.softmax(-1)
    return probs[:, 1] if output.shape[-1] == 2 else probs


def _labels(output: torch.Tensor) -> torch.Tensor:
    return (output.reshape(-1) > 0).long() if one_logit(output) else output.argmax(-1)


def _sk(name):
    def metric(output, target):
        import sklearn.metrics as m

        o, t = output.double(), target
        if name in ("auc", "f1"):
            binary = o.ndim == 1 or o.shape[-1] <= 2
            if name == "auc":
                return m.roc_auc_score(t.numpy(), _scores(o).numpy(), **({} if binary else {"multi_class": "ovr"}))
            return m.f1_score(t.numpy(), _labels(o).numpy(), average="binary" if binary else "macro")
        o, t = o.reshape(t.shape).numpy(), t.double().numpy()
        if name == "r2":
            return m.r2_score(t, o)
        if name == "mae":
            return m.mean_absolute_error(t, o)
        mse = m.mean_squared_error(t, o)
        return math.sqrt(mse) if name == "rmse" else mse
    return metric


# Metrics computed once over a whole split's outputs and targets (exact, not a mean over batches),
# with scikit-learn's definitions; and the direction of each name raysweep knows.
SPLIT_METRICS: dict[str, Callable] = {name: _sk(name) for name in ("r2", "mse", "rmse", "mae", "auc", "f1")}
REGRESSION = ("r2", "mse", "rmse", "mae")
BATCH_QUALITIES = ("accuracy", "perplexity")  # from the loss and correct counts summed over batches
MODES = {"accuracy": "max", "perplexity": "min", "loss": "min", "r2": "max", "auc": "max", "f1": "max",
         "mse": "min", "rmse": "min", "mae": "min"}


class Task:
    """Subclass and override `datasets` and `model`; `params` are the task's own settings with defaults.

    A spec names a task as `package.module:object`, where object is a Task subclass or instance.
    """

    name: str = "task"
    params: dict = {}
    # reported as val_<quality> (and test_<quality> by the final stage): "accuracy", "perplexity", a
    # built-in split metric (r2, mse, rmse, mae, auc, f1) or a name `split_metrics` returns
    quality: str = "accuracy"
    metrics: tuple = ()  # more split metrics to report beside the quality (their names, as for quality)

    def datasets(self, config: dict) -> Splits:
        raise NotImplementedError

    def model(self, config: dict) -> nn.Module:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error when the quality is a regression metric; binary cross-entropy for one
        output (a logit); else cross-entropy."""
        from torch.nn import functional as nnf

        if self.quality in REGRESSION:
            return nnf.mse_loss(output.reshape(target.shape), target.float())
        if one_logit(output):
            return nnf.binary_cross_entropy_with_logits(output.reshape(target.shape), target.float())
        return nnf.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def correct(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Correct predictions in a batch (classification tasks)."""
        return (output.argmax(-1) == target).sum()

    def quality_value(self, mean_loss: float, correct: float, count: float) -> float:
        if self.quality == "perplexity":
            return math.exp(min(mean_loss, 700.0))
        return correct / max(count, 1)

    def metric_names(self) -> list[str]:
        """What the task reports as val_<name> and test_<name>, besides the loss."""
        return list(dict.fromkeys((self.quality, *self.metrics)))

    def split_metric_names(self) -> list[str]:
        """The names computed by `split_metrics` (over whole splits) rather than from batch sums."""
        return [n for n in self.metric_names() if n not in (*BATCH_QUALITIES, "loss")]

    def split_metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """The one hook for metrics of your own: every name of `split_metric_names()`, computed from
        all of a split's outputs and targets at once (CPU tensors, in no particular order). The default
        computes the built-in ones; override (and call super() for those) to add others."""
        return {n: float(SPLIT_METRICS[n](output, target)) for n in self.split_metric_names() if n in SPLIT_METRICS}

    def settings(self, config: dict) -> dict:
        """The task's params with the trial's values over the defaults."""
        return {k: config.get(k, v) for k, v in self.params.items()}


def get_task(ref: str, search_dirs: tuple = ()) -> Task:
    from ..load import load_task

    task = load_task(ref, search_dirs)
    if not isinstance(task, Task):
        raise TypeError(f"{ref} is a training function, not a raysweep.train.Task")
    return task

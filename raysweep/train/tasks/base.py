"""What a task gives the trainer: data, a model, a loss and a quality metric."""
from __future__ import annotations

import importlib
import math
import sys
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset  # seen only by the final stage


class Task:
    """Subclass and override `datasets` and `model`; `params` are the task's own settings with defaults.

    A spec names a task as `package.module:object`, where object is a Task subclass or instance.
    """

    name: str = "task"
    params: dict = {}
    quality: str = "accuracy"  # reported as val_<quality>: "accuracy" (higher is better) or "perplexity"

    def datasets(self, config: dict) -> Splits:
        raise NotImplementedError

    def model(self, config: dict) -> nn.Module:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def correct(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Correct predictions in a batch (classification tasks)."""
        return (output.argmax(-1) == target).sum()

    def quality_value(self, mean_loss: float, correct: float, count: float) -> float:
        if self.quality == "perplexity":
            return math.exp(min(mean_loss, 700.0))
        return correct / max(count, 1)

    def settings(self, config: dict) -> dict:
        """The task's params with the trial's values over the defaults."""
        return {k: config.get(k, v) for k, v in self.params.items()}


def get_task(ref: str, search_dirs: tuple = ()) -> Task:
    """A built-in task by name, or `package.module:object` (a Task subclass or instance), looked up
    on sys.path and then in search_dirs (the spec file's folder, so a task can sit beside its spec)."""
    from . import BUILTIN

    if ref in BUILTIN:
        return BUILTIN[ref]()
    module_name, _, attr = ref.partition(":")
    for directory in search_dirs:
        if directory not in sys.path:
            sys.path.append(directory)
    obj = getattr(importlib.import_module(module_name), attr)
    task = obj() if isinstance(obj, type) else obj
    if not isinstance(task, Task):
        raise TypeError(f"{ref} is a {type(task).__name__}, not a raysweep.train.Task")
    return task

"""What the sweep asks of a trial, beyond its config: no torch here, so a user's training function
runs as a trial without raysweep importing torch into it (bench/function_overhead.py: about 1 s of
CPU per trial process)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..spec.objective import better


class ConfigError(ValueError):
    """A trial config the trainer cannot run (e.g. a batch that does not split over the workers)."""


@dataclass
class Run:
    """What the sweep asks of one trial, beyond its config."""
    task: str
    metric: str = "val_loss"
    mode: str = "min"
    epochs: int = 20
    horizon: int | None = None  # epochs the lr schedule spans (None: `epochs`); a short stage trains the first `epochs`
    patience: int | None = None
    min_delta: float = 0.0
    target: float | None = None
    evaluate_test: bool = False
    keep_best: bool = False  # keep the best epoch's weights in checkpoints (the test split is scored on them)
    task_dirs: tuple = ()  # where a user task module may live (the spec's folder)

    def judge(self, state: dict, value: float, epoch: int) -> str:
        """After `epoch` with the sweep metric at `value`: update state's best and bad_epochs and say
        whether the trial goes on (running) or why it ends."""
        state["bad_epochs"] = 0 if _better(value, state["best"], self.mode, self.min_delta) else state["bad_epochs"] + 1
        if _better(value, state["best"], self.mode):
            state["best"], state["best_epoch"] = value, epoch
        if self.target is not None and not _better(self.target, value, self.mode):
            return "target_reached"
        if self.patience is not None and state["bad_epochs"] >= self.patience:
            return "early_stopped"
        return "completed" if epoch >= self.epochs else "running"

    @classmethod
    def from_spec(cls, spec, **overrides) -> Run:
        es = spec.stopping.early_stopping
        return cls(**{**dict(task=spec.task, metric=spec.metric.name, mode=spec.metric.mode,
                             epochs=spec.stopping.max_epochs, patience=es.patience if es else None,
                             min_delta=es.min_delta if es else 0.0, target=spec.stopping.target,
                             task_dirs=spec_dirs(spec)), **overrides})


def spec_dirs(spec) -> tuple:
    file = spec.file
    return (os.path.dirname(os.path.abspath(file)),) if file else ()


def _better(a: float, b: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if b is None:
        return True
    return better(a, b, mode, min_delta)

"""Learning-rate schedules built from torch's own schedulers, with optional linear warmup.

Everything except reduce-on-plateau is stepped once per optimizer step ("batch"); epoch-based
schedules (step, exponential) are expressed in steps so that their lr changes exactly at epoch
boundaries. Reduce-on-plateau is stepped per epoch on the validation metric, after warmup.
"""
from __future__ import annotations

from torch.optim import lr_scheduler as tl

from ..spec.settings import TrainSettings


def warmup_steps(s: TrainSettings, total_steps: int) -> int:
    steps = s.warmup_steps or int(round(s.warmup_fraction * total_steps))
    return min(steps, max(total_steps - 1, 0))


class Schedule:
    def __init__(self, optimizer, s: TrainSettings, steps_per_epoch: int, epochs: int, mode: str = "min"):
        total = steps_per_epoch * epochs
        self.warmup = warmup_steps(s, total)
        self.plateau = None
        self.optimizer = optimizer
        warm = [tl.LinearLR(optimizer, start_factor=1.0 / (self.warmup + 1), end_factor=1.0,
                            total_iters=self.warmup)] if self.warmup else []
        after = total - self.warmup
        name = s.schedule
        if name == "plateau":
            self.plateau = tl.ReduceLROnPlateau(optimizer, mode=mode, factor=s.plateau_factor,
                                                patience=s.plateau_patience, min_lr=s.min_lr)
            main = None
        elif name == "constant":
            main = tl.ConstantLR(optimizer, factor=1.0, total_iters=0)
        elif name == "step":
            main = tl.StepLR(optimizer, step_size=s.step_size * steps_per_epoch, gamma=s.gamma or 0.1)
        elif name == "exponential":
            main = tl.StepLR(optimizer, step_size=steps_per_epoch, gamma=s.gamma or 0.96)
        elif name == "cosine":
            main = tl.CosineAnnealingLR(optimizer, T_max=max(after, 1), eta_min=s.min_lr)
        elif name == "onecycle":
            main = tl.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                 total_steps=max(after, 2), pct_start=s.pct_start)
        else:
            raise ValueError(name)
        parts = warm + ([main] if main else [])
        if len(parts) > 1:
            self.batch = tl.SequentialLR(optimizer, parts, milestones=[self.warmup])
        else:
            self.batch = parts[0] if parts else None
        self.steps = 0

    def step_batch(self):
        self.steps += 1
        if self.batch is not None and (self.plateau is None or self.steps <= self.warmup):
            self.batch.step()

    def step_epoch(self, metric: float):
        if self.plateau is not None and self.steps >= self.warmup:
            self.plateau.step(metric)

    def schedulers(self) -> list:
        """Every torch scheduler in use (SequentialLR's parts included)."""
        out = [x for x in (self.batch, self.plateau) if x is not None]
        if isinstance(self.batch, tl.SequentialLR):
            out += list(self.batch._schedulers)
        return out

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self):
        return {"steps": self.steps, "batch": self.batch.state_dict() if self.batch else None,
                "plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state):
        self.steps = state["steps"]
        if self.batch is not None:
            self.batch.load_state_dict(state["batch"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])

"""The LR range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017): train
with an exponentially growing learning rate, smooth the loss, stop once it diverges, and read the
good region off the curve."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..spec.settings import TrainSettings


@dataclass
class Curve:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)      # raw training loss of each step
    smoothed: list[float] = field(default_factory=list)    # centered moving average (no lag), see `smooth`
    stopped: str = ""                                       # why it ended before num_steps, if it did

    def to_dict(self) -> dict:
        return asdict(self)


def range_test(config: dict, task_ref: str, task_dirs: tuple = (), start_lr: float = 1e-7, end_lr: float = 1.0,
               num_steps: int = 100, smoothing: float = 0.05, diverge_factor: float = 4.0,
               device: str = "cpu", read_every: int = 10) -> Curve:
    """One pass of `num_steps` optimizer steps at lr = start * (end/start)^(i/(n-1)), over the training
    split (repeated if short), with the config's optimizer, parameter groups, clipping and gradient
    accumulation: the trainer's own step. Losses are read from the device every `read_every` steps.
    A running average (`smoothing`: each new loss's weight) stops the test once the loss diverges; the
    curve kept for reading is `smooth`ed afterwards, without the running average's lag."""
    import torch  # here, not at the top: the driver reads `suggest` without torch
    from torch.utils.data import DataLoader

    from . import checkpoint
    from .device import precision_for
    from .optim import build_optimizer
    from .step import Step, micro_batches
    from .tasks import get_task

    s = TrainSettings.model_validate(config)
    checkpoint.seed_everything(s.seed)
    task = get_task(task_ref, tuple(task_dirs))
    device = torch.device(device)
    splits = task.datasets(config)
    micro = max(s.batch_size // s.grad_accum, 1)
    loader = DataLoader(splits.train, batch_size=micro, shuffle=True,
                        generator=torch.Generator().manual_seed(s.seed), drop_last=len(splits.train) > micro)
    model = task.model(config).to(device)
    model.train()
    precision = precision_for(s.precision, device.type)
    optimizer = build_optimizer(model, s, start_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    step = Step(model, model, task, optimizer, scaler, precision, s, device)
    factor = (end_lr / start_lr) ** (1 / (num_steps - 1))
    curve, average, best = Curve(), 0.0, math.inf
    groups = micro_batches(_forever(loader), s.grad_accum)
    lrs = [start_lr * factor ** i for i in range(num_steps)]
    for first in range(0, num_steps, read_every):
        window = lrs[first:first + read_every]
        for lr in window:
            for g in optimizer.param_groups:
                g["lr"] = lr
            step(next(groups))
        for i, (lr, value) in enumerate(zip(window, step.take_losses(), strict=False), start=first):
            if not math.isfinite(value):
                curve.stopped = f"loss is {value} at lr {lr:.3g}"
                return _smoothed(curve)
            average = (1 - smoothing) * average + smoothing * value
            running = average / (1 - (1 - smoothing) ** (i + 1))
            curve.lrs.append(lr)
            curve.losses.append(value)
            best = min(best, running)
            if running > diverge_factor * best:
                curve.stopped = f"smoothed loss {running:.4g} > {diverge_factor:g} x best {best:.4g} at lr {lr:.3g}"
                return _smoothed(curve)
    return _smoothed(curve)


def smooth(losses, width: int | None = None) -> list[float]:
    """A centered moving average `width` steps wide (a tenth of the curve, at least 3), narrowed
    symmetrically near the ends so that every point stays the center of its window. A running average
    lags: with each new loss weighted 0.05 it trails by about 19 steps, two decades of lr in a 60-step
    test over seven, so it put the minimum late and hid a fall in the last steps (SGD's, when its good
    lrs sit at the top of the range). A window cut short on one side at the end would mix earlier
    losses into the last lrs' values and move a minimum there."""
    x = np.asarray(losses, float)
    i = np.arange(len(x))
    h = np.minimum((width or max(3, len(x) // 10)) // 2, np.minimum(i, len(x) - 1 - i))
    sums = np.concatenate([[0.0], np.cumsum(x)])
    return ((sums[i + h + 1] - sums[i - h]) / (2 * h + 1)).tolist()


def _smoothed(curve: Curve) -> Curve:
    curve.smoothed = smooth(curve.losses)
    return curve


def _forever(loader):
    while True:
        yield from loader


@dataclass
class Suggestion:
    steepest_lr: float | None   # where the smoothed loss falls fastest per decade of lr
    min_loss_lr: float | None   # where it is lowest
    low: float | None           # a range for the search, in the optimizer's (effective) lr
    high: float | None
    reason: str = ""            # why there is no suggestion, if there is none


def suggest(lrs, smoothed, skip_start: float = 0.1, min_drop: float = 0.05) -> Suggestion:
    """The steepest-descent lr before the minimum, and a one-decade range for the peak lr of a
    scheduled run: [lr_min/10, lr_min], widened down to the steepest point. Its bottom is fastai's
    pick for a constant lr, its top Smith's upper bound (where the loss stops falling: a warm-up and
    a decay make it usable as a peak). No suggestion when the loss never fell by `min_drop`."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    if len(lrs) < 5:
        return Suggestion(None, None, None, None, f"only {len(lrs)} steps before the loss diverged; lower start_lr")
    i_min = int(np.argmin(smoothed))
    start = min(int(len(lrs) * skip_start), max(i_min - 2, 0))  # the average is still settling at first
    if smoothed[i_min] > (1 - min_drop) * smoothed[start]:
        return Suggestion(None, float(lrs[i_min]), None, None,
                          f"the loss never fell by {min_drop:.0%} (lowest at lr {lrs[i_min]:.3g}); raise end_lr or num_steps")
    window = slice(start, i_min + 1)
    slopes = np.gradient(smoothed[window], np.log10(lrs[window])) if i_min - start >= 2 else np.array([0.0])
    steepest = float(lrs[start + int(np.argmin(slopes))])
    lr_min = float(lrs[i_min])
    return Suggestion(steepest, lr_min, min(lr_min / 10, steepest), lr_min)

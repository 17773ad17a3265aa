"""Stage-wide stopping: a target reached, or the diminishing-returns stop rule."""
from __future__ import annotations

import math

from ray.tune import Callback
from ray.tune.stopper import Stopper

from ..spec.objective import best, better, gain


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class StatusStopper(Stopper):
    """Stops a trial whose report says it is over though its function may still run: a watchdog's
    `timed_out` for a hung trial; and the whole stage once a function trial did not report the sweep
    metric (every trial would fail alike)."""

    def __init__(self):
        self.missing = False

    def __call__(self, trial_id, result):
        self.missing |= result.get("status") == "metric_missing"
        return result.get("status") == "timed_out"

    def stop_all(self):
        return self.missing


class TargetStopper(Stopper):
    """Stop the whole stage once any trial reaches stopping.target."""

    def __init__(self, metric: str, mode: str, target: float):
        self.metric, self.mode, self.target, self.reached = metric, mode, target, False

    def __call__(self, trial_id, result):
        value = result.get(self.metric)
        if _finite(value):
            self.reached |= not better(self.target, value, self.mode)
        return False

    def stop_all(self):
        return self.reached


def plateaued(values: list, mode: str, window: int, min_improvement: float) -> bool:
    """The stop rule: the last `window` finished trials (in finishing order; None = no score)
    improved the best of those before them by less than `min_improvement`, as a fraction."""
    if len(values) <= window:
        return False
    before = [v for v in values[:-window] if _finite(v)]
    if not before:
        return False
    old = best(before, mode)
    new = best([old] + [v for v in values[-window:] if _finite(v)], mode)
    return gain(old, new, mode) < min_improvement * (abs(old) if old else 1.0)


class PlateauStopper(Callback, Stopper):
    """Ends a stage by `plateaued`, judged at each finished trial from Tune's own trial list (so a
    restored stage judges the same way). A callback to see trials finish, a stopper to end the stage."""

    def __init__(self, metric: str, mode: str, window: int, min_improvement: float):
        self.metric, self.mode, self.window, self.min_improvement = metric, mode, window, min_improvement
        self.triggered = False

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = [t for t in trials if t.status == "TERMINATED" or t is trial]
        done.sort(key=lambda t: (t.last_result or {}).get("timestamp", 0))
        values = [(t.last_result or {}).get(f"best_{self.metric}") for t in done]
        values = [None if (t.last_result or {}).get("status") == "diverged" else v for t, v in zip(done, values, strict=False)]
        self.triggered = self.triggered or plateaued(values, self.mode, self.window, self.min_improvement)

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return self.triggered

"""Checks of a spec against its task: the task loads, the metric is one the trainer reports, and
every name the spec sets is read by the trainer, the task, or a derived expression."""
from __future__ import annotations

from ..spec import Expr, Spec
from ..spec.check import check_train_values
from ..spec.errors import allowed, did_you_mean
from ..spec.settings import TRAIN_KEYS
from .run import spec_dirs
from .tasks import Task, is_function, load_task
from .tasks.base import MODES, SPLIT_METRICS


def reported_metrics(task: Task) -> list[str]:
    return ["val_loss", *[f"val_{n}" for n in task.metric_names()], "train_loss"]


def is_function_task(spec: Spec) -> bool:
    """The spec's task is a user's training function, not a raysweep Task."""
    return is_function(load_task(spec.task, spec_dirs(spec)))


def check_task(spec: Spec):
    """The spec's task (a Task, or a training function), checked against the spec."""
    def fail(path, message, fix=None):
        raise spec.error(path, message, fix)

    try:
        task = load_task(spec.task, spec_dirs(spec))
    except (ImportError, AttributeError, TypeError) as e:
        fail(("task",), f"cannot load task '{spec.task}': {e.__class__.__name__}: {e}",
             "check the module is importable (installed or on PYTHONPATH) and names a raysweep.train.Task "
             "or a training function")
    if is_function(task):  # its parameter names are its own; its metrics are checked at its first report
        return task
    check_train_values(spec, fail)
    metrics = reported_metrics(task)
    if spec.metric.name not in metrics:
        fail(("metric", "name"), f"task {spec.task} does not report '{spec.metric.name}'"
                                 f"{did_you_mean(spec.metric.name, metrics)}", allowed(metrics))
    base = spec.metric.name.split("_", 1)[1] if "_" in spec.metric.name else ""
    if MODES.get(base, spec.metric.mode) != spec.metric.mode:
        fail(("metric", "mode"), f"{spec.metric.name} is better {'higher' if MODES[base] == 'max' else 'lower'}, "
                                 f"not {spec.metric.mode}", f"set mode: {MODES[base]}")
    unknown = [n for n in task.split_metric_names() if n not in SPLIT_METRICS]
    if unknown and type(task).split_metrics is Task.split_metrics:
        fail(("task",), f"task {spec.task} reports '{unknown[0]}', which raysweep does not compute",
             f"override split_metrics to compute it, or use one of {', '.join(SPLIT_METRICS)}")
    used_by_expressions = set().union(*(Expr(e).names for e in [*spec.derived.values(), *spec.constraints]))
    known = set(TRAIN_KEYS) | set(task.params) | used_by_expressions
    for section in ("parameters", "fixed"):
        for name in getattr(spec, section):
            if name in ("epochs", "max_epochs", "num_epochs") and name not in known:
                fail((section, name), f"'{name}' is not a setting: a trial's epochs are the sweep's budget",
                     "set stopping.max_epochs (and stages.<stage>.epochs) instead")
            if name not in known:
                fail((section, name), f"'{name}' is read by neither the trainer nor task {spec.task}"
                                      f"{did_you_mean(name, known)}",
                     f"task settings: {', '.join(sorted(task.params))}; trainer settings: see README")
    return task

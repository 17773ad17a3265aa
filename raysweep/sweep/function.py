"""A user's Ray Train training function as a trial, unchanged.

The function is written against Ray Train (`ray.train.report`, `get_checkpoint`, `get_context`,
`ray.train.torch.prepare_model` / `prepare_data_loader`). With one worker it runs inside the Tune
trial: Ray Train's calls go through Train V2's own extension point (`TrainFnUtils`, "patched if new
user API behaviours are wanted") to Tune, so a trial costs what a bare Tune function does. With more
workers it is a TorchTrainer DDP job (ddp.py), each worker's calls wrapped the same way.

raysweep adds to each report what its stages read: `epoch`, `status` and `best_<metric>`; it ends the
function after the stage's epochs (or when the metric is not finite: diverged) and saves those
fields beside each checkpoint (train/checkpoint.py), so a resumed or PBT-cloned trial counts on.
"""
from __future__ import annotations

import contextlib
import math
import os

from ..train.checkpoint import read_metrics, write_metrics
from ..train.load import load_task
from ..train.run import Run

TEST_KEY = "evaluate_test"  # in the config of the final stage's trial: report test_* metrics too


def nested(config: dict, groups) -> dict:
    """The config as the function reads it: each group's dotted names as a nested dict."""
    out: dict = {}
    for key, value in config.items():
        node, start = out, 0
        for group in sorted((g for g in groups if key.startswith(g + ".")), key=len):
            node, start = node.setdefault(group[start:], {}), len(group) + 1
        node[key[start:]] = value
    return out


class Finished(Exception):
    """Raised out of a report to end the user's function: raysweep decided the trial is over."""


class Reports:
    """What raysweep adds to a function's reports, and when it ends the function."""

    def __init__(self, run: Run, restored=None):
        self.run, self.count = run, 0
        self.state = {"best": None, "bad_epochs": 0}
        self.epoch = self.resumed_epoch = 0
        self.last: dict | None = None
        if restored is not None:
            with restored.as_directory() as directory:
                saved = read_metrics(directory)
            self.epoch = self.resumed_epoch = int(saved.get("epoch", 0))
            self.state["best"] = saved.get(f"best_{run.metric}")

    def __call__(self, metrics: dict) -> dict:
        """The report as raysweep records it; `status` says whether the function goes on."""
        run, out = self.run, dict(metrics)
        self.count += 1
        self.epoch += 1
        if "epoch" in out:
            out["reported_epoch"] = out.pop("epoch")
        out["epoch"] = self.epoch
        if self.count == 1 and self.resumed_epoch:
            out["resumed_epoch"] = self.resumed_epoch
        value = metrics.get(run.metric)
        if self.count == 1 and run.metric not in metrics:
            keys = ", ".join(sorted(k for k in metrics if not k.startswith("_"))) or "nothing"
            out.update({run.metric: math.nan, "status": "metric_missing",
                        "metric_missing": f"the function reported {keys}; metric.name is '{run.metric}'"})
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            out.update({run.metric: math.nan, "status": "diverged",
                        "diverged_reason": f"{run.metric} is {value} at epoch {self.epoch}"})
        else:
            out["status"] = run.judge(self.state, float(value), self.epoch)
            out[f"best_{run.metric}"] = self.state["best"]
        self.last = out
        return out

    def over(self) -> bool:
        """Restored from a checkpoint of the stage's last epoch (PBT clones a finished donor): nothing
        to run, as for raysweep's own loop."""
        return self.epoch >= self.run.epochs

    def final(self) -> dict | None:
        """After the function returned on its own: its last report again, marked completed (same
        epoch: MLflow and the records hold it once), or None if raysweep already ended it."""
        if self.count == 0:
            raise RuntimeError("the training function returned without calling ray.train.report: "
                               "report its metrics at least once (each epoch, for the schedulers)")
        if self.last["status"] != "running":
            return None
        return {**{k: v for k, v in self.last.items() if k != "resumed_epoch"}, "status": "completed"}


def _mark(checkpoint, metrics: dict) -> None:
    """Save the report beside the user's checkpoint files, before Tune or Train persists them."""
    if checkpoint is not None and os.path.isdir(checkpoint.path):
        write_metrics(checkpoint.path, metrics)


@contextlib.contextmanager
def _train_calls_in_tune():
    """Ray Train 2.60 refuses its calls inside a Tune trial ("use the equivalent ray.tune API"): the
    function is run unchanged, so let them through to the utilities installed for it."""
    import ray.tune.trainable.trainable_fn_utils as tune_fn_utils

    saved = tune_fn_utils._in_tune_session
    tune_fn_utils._in_tune_session = lambda: False
    try:
        yield
    finally:
        tune_fn_utils._in_tune_session = saved


def run_in_process(config: dict, run: Run, report, restored, experiment: str) -> None:
    """One worker: the function in this process, its Ray Train calls answered from Tune's session."""
    from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

    reports = Reports(run, restored)

    class TuneBridge(LocalTrainFnUtils):
        def report(self, metrics, checkpoint=None, **_):
            out = reports(metrics)
            _mark(checkpoint, out)
            report(out, checkpoint.path if checkpoint is not None else None)
            if out["status"] != "running":
                raise Finished

        def get_checkpoint(self):
            return restored

    if reports.over():
        return
    fn = load_task(run.task, tuple(run.task_dirs))
    set_train_fn_utils(TuneBridge(experiment_name=experiment))
    with _train_calls_in_tune():
        try:
            fn(config)
        except Finished:
            return
        finally:
            set_train_fn_utils(None)
    last = reports.final()
    if last is not None:
        report(last, None)


def worker_loop(cfg: dict) -> None:
    """Each worker of a function's TorchTrainer: the function, with rank 0's reports marked as in
    run_in_process and raysweep's decision to end it shared by every rank (all report alike)."""
    from ray.train.v2._internal.execution.train_fn_utils import (
        TrainFnUtils,
        get_train_fn_utils,
        set_train_fn_utils,
    )

    inner, resume = get_train_fn_utils(), cfg.get("resume")
    reports = Reports(Run(**cfg["run"]), resume)
    rank0 = inner.get_context().get_world_rank() == 0

    class Delegate(TrainFnUtils):
        def __getattribute__(self, name):
            if name in ("report", "get_checkpoint"):
                return object.__getattribute__(self, name)
            return getattr(inner, name)

        def report(self, metrics, checkpoint=None, **kw):
            out = reports(metrics) if rank0 else {**metrics, "status": "running"}
            if rank0:
                _mark(checkpoint, out)
            status = inner.broadcast_from_rank_zero(out["status"])
            inner.report(out, checkpoint=checkpoint, **kw)
            if status != "running":
                raise Finished

        def get_checkpoint(self):
            return inner.get_checkpoint() or resume

    if reports.over():
        return
    Delegate.__abstractmethods__ = frozenset()
    set_train_fn_utils(Delegate())
    try:
        load_task(cfg["run"]["task"], tuple(cfg["run"]["task_dirs"]))(cfg["config"])
    except Finished:
        return
    status = inner.broadcast_from_rank_zero(reports.last["status"] if rank0 and reports.last else "running")
    if rank0:
        last = reports.final()
    if status == "running":  # it returned on its own: every rank reports the completion once more
        inner.report(last if rank0 else {"status": "completed"})

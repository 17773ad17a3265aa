"""A finished sweep read back from MLflow alone (so a report works against a remote tracking server
too): the stages' results.json, each trial's curves, and the pipeline's LR test, seeds and spec."""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field

import yaml

from .runs import TAG

CURVES = ("train_loss", "val_loss")  # read for every trial besides the sweep metric


@dataclass
class TrialView:
    stage: str
    trial_id: str
    run_id: str | None
    config: dict
    status: str
    value: float | None
    epochs: int
    order: int                                   # when it started, among its stage's trials
    curves: dict = field(default_factory=dict)   # metric -> values by epoch (NaN where a step is missing)
    started_from: str | None = None              # a fine trial that went on from a coarse trial's checkpoint:
    started_at: int = 0                          # that trial, and the checkpoint's epoch

    @property
    def trained_epochs(self) -> int:
        return self.epochs - self.started_at


@dataclass
class StageView:
    name: str
    run_id: str
    metric: str
    mode: str
    trials: list[TrialView]


@dataclass
class SweepView:
    experiment: str
    experiment_id: str
    run_id: str                 # the pipeline's run, or the one stage's
    kind: str                   # pipeline | stage
    metric: str
    mode: str
    stages: list[StageView]
    spec: dict | None = None    # the resolved spec the pipeline logged
    lr_test: dict | None = None
    seeds: dict | None = None
    test: dict = field(default_factory=dict)
    baseline_test: dict = field(default_factory=dict)  # the untuned baseline's, trained beside the final run


class NotFound(LookupError):
    pass


def _artifact_json(client, run_id: str, path: str, parse=json.loads):
    names = {a.path for a in client.list_artifacts(run_id)}
    if path not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        with open(client.download_artifacts(run_id, path, tmp)) as f:
            return parse(f.read())


def _children(client, experiment_id: str, parent: str) -> list:
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10_000,
                              order_by=["attributes.start_time ASC"])


def _curves(client, run_id: str, metrics, epochs: int) -> dict[str, list[float]]:
    """The metrics the trial reported, each by epoch (NaN where a step is missing)."""
    out = {}
    for metric in metrics:
        history = client.get_metric_history(run_id, metric)
        if history:
            out[metric] = [math.nan] * epochs
            for m in history:
                if 1 <= m.step <= epochs:
                    out[metric][m.step - 1] = m.value
    return out


def _stage(client, experiment_id: str, run) -> StageView | None:
    results = _artifact_json(client, run.info.run_id, "results.json")
    if not results:
        return None
    runs = {r.data.tags.get(TAG + "trial_id"): r for r in _children(client, experiment_id, run.info.run_id)}
    order = {trial_id: i for i, trial_id in enumerate(runs)}
    trials = []
    for t in results["trials"]:
        r = runs.get(t["trial_id"])
        epochs = max(int(t.get("epochs") or 0), 0)
        curves = _curves(client, r.info.run_id, {results["metric"], *CURVES}, epochs) if r else {}
        trials.append(TrialView(results["stage"], t["trial_id"], r.info.run_id if r else None, t["config"], t["status"],
                                t["value"], epochs, order.get(t["trial_id"], len(order)), curves,
                                t.get("started_from"), int(t.get("started_at") or 0)))
    trials.sort(key=lambda t: t.order)
    return StageView(results["stage"], run.info.run_id, results["metric"], results["mode"], trials)


def _whole_runs(stages: list[StageView]) -> None:
    """A fine trial that went on from a coarse trial's checkpoint is one run with it: its curves get the
    coarse trial's epochs up to that checkpoint, so that they are read (plotted, diagnosed) from epoch 1."""
    trials = {t.trial_id: t for s in stages for t in s.trials}
    for t in trials.values():
        donor = trials.get(t.started_from)
        if donor is None:
            continue
        for metric, curve in t.curves.items():
            before = donor.curves.get(metric, [])[:t.started_at]
            curve[:len(before)] = before


def load_sweep(client, run_id: str) -> SweepView:
    """The sweep under `run_id`: a pipeline's run (all its stages) or one stage's."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise NotFound(f"MLflow at {client.tracking_uri} has no run {run_id}") from None
    experiment_id = run.info.experiment_id
    experiment = client.get_experiment(experiment_id).name
    kind = run.data.tags.get(TAG + "kind", "")
    if kind == "pipeline":
        stage_runs = [r for r in _children(client, experiment_id, run_id) if r.data.tags.get(TAG + "kind") == "stage"]
    elif kind == "stage":
        stage_runs = [run]
    else:
        raise NotFound(f"run {run_id} is not a raysweep pipeline or stage run (its raysweep.kind is '{kind or 'unset'}')")
    stages = [s for s in (_stage(client, experiment_id, r) for r in stage_runs) if s]
    _whole_runs(stages)
    lr_test = next((_artifact_json(client, r.info.run_id, "lr_range.json") for r in stage_runs
                    if r.data.tags.get(TAG + "stage") == "lr_range_test"), None)
    if not stages:
        raise NotFound(f"run {run_id} holds no finished stage yet (no results.json on its stage runs)")
    metric, mode = stages[0].metric, stages[0].mode
    pipeline = kind == "pipeline"
    return SweepView(experiment, experiment_id, run_id, kind, metric, mode, stages,
                     spec=_artifact_json(client, run_id, "spec_resolved.yaml", yaml.safe_load) if pipeline else None,
                     lr_test=lr_test, seeds=_artifact_json(client, run_id, "seeds.json") if pipeline else None,
                     test={k: v for k, v in run.data.metrics.items() if k.startswith("test_")},
                     baseline_test={k.removeprefix("baseline_"): v for k, v in run.data.metrics.items()
                                    if k.startswith("baseline_test_")})


def latest_run(client, experiment: str) -> str:
    """The newest pipeline run of an experiment, else its newest stage run."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise NotFound(f"MLflow has no experiment '{experiment}'; run the sweep first (or pass --tracking-uri)")
    for kind in ("pipeline", "stage"):
        found = client.search_runs([exp.experiment_id], f"tags.`{TAG}kind` = '{kind}'", max_results=1,
                                   order_by=["attributes.start_time DESC"])
        if found:
            return found[0].info.run_id
    raise NotFound(f"experiment '{experiment}' holds no raysweep run")


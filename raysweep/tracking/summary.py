"""What a finished stage and a finished pipeline stage leave in MLflow besides the trials: the stage's
results and best config on its run, the top trials' checkpoints, trial counts; the LR range test's
curves; the pipeline run's per-stage bests, seed statistics, chosen config and test metrics."""
from __future__ import annotations

import json
import os
import tempfile
import time

from mlflow.entities import Metric, Param

from ..pipeline.outcomes import FinalOutcome, LrTestOutcome, Outcome, SearchOutcome, SeedsOutcome
from ..sweep import StageResult, storage
from .runs import TAG, RunIndex

MAX_METRICS = 1000  # per log_batch


def _metrics(values: dict, step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]


def log_stage(index: RunIndex, run_id: str, result: StageResult, top_k: int = 3) -> None:
    client = index.client
    best = result.best
    client.log_text(run_id, storage.read_text(storage.join(result.path, "results.json")) or "", "results.json")
    counts: dict = {}
    for t in result.trials:
        counts[f"trials_{t.status}"] = counts.get(f"trials_{t.status}", 0) + 1
    if best is not None:
        counts[f"best_{result.metric}"] = best.value
        client.set_tag(run_id, TAG + "best_trial", best.trial_id)
        client.log_text(run_id, json.dumps(best.config, indent=1, default=str), "best_config.json")
    client.log_batch(run_id, metrics=_metrics(counts))
    runs = {r.data.tags.get(TAG + "trial_id"): r.info.run_id for r in index.children(run_id)}
    for top in result.ranked()[:top_k]:
        if top.checkpoint and top.trial_id in runs and storage.exists(top.checkpoint):
            with tempfile.TemporaryDirectory() as local:  # MLflow logs from local disk
                storage.copy_tree(top.checkpoint, local)
                client.log_artifacts(runs[top.trial_id], local, "checkpoint")
    client.set_terminated(run_id, "FINISHED")


def log_outcome(index: RunIndex, parent: str, stage_run: str | None, metric: str, stage: str, outcome: Outcome,
                files: tuple[str, ...] = ()) -> None:
    """A finished pipeline stage on the pipeline run (and, for the LR test and seeds, its stage run)."""
    client = index.client
    if isinstance(outcome, LrTestOutcome):
        with open(outcome.file) as f:
            result = json.load(f)
        metrics, params, now = [], [], int(time.time() * 1000)
        for r in result["runs"]:
            name = r["optimizer"]
            metrics += [Metric(f"smoothed_loss_{name}", v, now, i) for i, v in enumerate(r["curve"]["smoothed"])]
            metrics += [Metric(f"lr_{name}", v, now, i) for i, v in enumerate(r["curve"]["lrs"])]
            params += [Param(f"{k}_{name}", str(v)) for k, v in r["suggestion"].items() if k != "reason"]
        for i in range(0, max(len(metrics), 1), MAX_METRICS):
            client.log_batch(stage_run, metrics=metrics[i:i + MAX_METRICS], params=params if i == 0 else [])
        client.set_tag(stage_run, TAG + "kind", "stage")
        client.set_tag(stage_run, TAG + "note", outcome.note[:5000])
        for file in (outcome.file, *files):
            client.log_artifact(stage_run, file)
        client.set_terminated(stage_run, "FINISHED")
        if outcome.range:
            client.log_batch(parent, params=[Param(f"lr_test_{outcome.param}_low", str(outcome.range[0])),
                                             Param(f"lr_test_{outcome.param}_high", str(outcome.range[1]))])
    elif isinstance(outcome, SearchOutcome):
        client.log_batch(parent, metrics=_metrics({f"{stage}_best_{metric}": outcome.best}))
    elif isinstance(outcome, SeedsOutcome):
        client.log_artifact(stage_run, outcome.file)
        client.log_artifact(parent, outcome.file)
        client.log_batch(parent, metrics=_metrics({f"seeds_{metric}_mean": outcome.mean, f"seeds_{metric}_std": outcome.std}))
        client.set_tag(parent, TAG + "seeds_ranking_stable", str(outcome.stable))
    elif isinstance(outcome, FinalOutcome):
        client.log_artifact(parent, outcome.best_config)
        baseline = {f"baseline_{k}": v for k, v in outcome.baseline_test.items()}
        if outcome.baseline_value is not None:
            baseline[f"baseline_best_{metric}"] = outcome.baseline_value
        client.log_batch(parent, metrics=_metrics({**outcome.test, f"best_{metric}": outcome.value, **baseline}),
                         params=[Param(k, str(v)[:6000]) for k, v in outcome.config.items()])


def log_report(client, run_id: str, files: list[str], folder: str = "report") -> None:
    """The report's files as artifacts of the run it analyses (a remote server's store too)."""
    for path in files:
        client.log_artifact(run_id, path, folder)
    client.set_tag(run_id, TAG + "report", f"{folder}/{os.path.basename(files[0])}" if files else "")

"""Wiring for the commands that run sweeps: Ray connection, storage, MLflow, stages, summaries.
The only module besides the CLI that knows every layer."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from .report.table import top_table
from .spec import Spec
from .sweep import StageResult, check_resources, run_stage
from .tracking import MlflowTracker
from .tracking import tracking_uri as default_tracking_uri


def connect_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # DDP reports reach Tune sooner
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # experiment state at most 1 s old if killed  # the legacy reporter honours verbose=0: no banners
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    for name in ("ray.tune", "ray.train", "ray.air", "mlflow"):  # banners and DB-creation notes
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Session:
    runs_dir: str
    uri: str
    experiment: str
    parent_run_id: str | None = None
    spec_params: tuple = ()
    storage_path: str | None = None

    @classmethod
    def start(cls, spec: Spec, address=None, runs_dir="runs", tracking_uri=None, experiment=None) -> "Session":
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow's client retries a request for minutes by default, blocking the sweep's driver;
        # raysweep's writer retries on its own thread instead
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        import mlflow  # noqa: F401 - it configures its logger on import; connect_ray quiets it after
        runs_dir = os.path.abspath(runs_dir)
        os.makedirs(runs_dir, exist_ok=True)
        connect_ray(address)
        check_resources(spec)
        return cls(runs_dir, tracking_uri or default_tracking_uri(spec, runs_dir),
                   experiment or spec.tracking.experiment or spec.name, spec_params=(*spec.parameters, *spec.derived),
                   storage_path=os.path.abspath(spec.storage_path) if spec.storage_path else None)

    @property
    def storage(self) -> str:
        """Tune's results: the spec's storage_path (shared storage on a cluster), else runs/ray."""
        return self.storage_path or os.path.join(self.runs_dir, "ray")

    def tracker(self, spec: Spec, stage: str) -> MlflowTracker:
        return MlflowTracker(self.uri, self.experiment, stage, spec, stage_key=f"{self.storage}/{spec.name}-{stage}",
                             parent_run_id=self.parent_run_id, artifact_root=os.path.join(self.runs_dir, "mlartifacts"))

    def stage(self, spec: Spec, stage: str, **kw) -> StageResult:
        tracker = self.tracker(spec, stage)
        result = run_stage(spec, stage, self.storage, callbacks=[tracker], **kw)
        self.log_stage(tracker, result)
        return result

    def log_stage(self, tracker: MlflowTracker, result: StageResult, top_k: int = 3) -> None:
        """The stage's summary on its parent run; the top trials' final checkpoints on their runs."""
        import time

        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        from .tracking import find_or_create_run, get_experiment

        # look runs up by tag: after Tuner.restore, Tune runs its own unpickled copy of the tracker
        client = MlflowClient(self.uri)
        experiment_id = get_experiment(client, self.experiment)
        run_id, _ = find_or_create_run(client, experiment_id, {"raysweep.stage": tracker.stage,
                                                               "raysweep.stage_key": tracker.stage_key},
                                       tracker.stage, self.parent_run_id)
        best = result.best
        client.log_artifact(run_id, os.path.join(result.path, "results.json"))
        if best is not None:
            client.log_metric(run_id, f"best_{result.metric}", best.value)
            client.set_tag(run_id, "raysweep.best_trial", best.trial_id)
            client.log_text(run_id, json.dumps(best.config, indent=1, default=str), "best_config.json")
        for top in result.ranked()[:top_k]:
            found = client.search_runs([experiment_id], f"tags.`raysweep.trial_id` = '{top.trial_id}' and "
                                                        f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1)
            if top.checkpoint and found and os.path.isdir(top.checkpoint):
                client.log_artifacts(found[0].info.run_id, top.checkpoint, "checkpoint")
        counts: dict = {}
        for t in result.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(f"trials_{k}", v, now, 0) for k, v in counts.items()])
        client.set_terminated(run_id, "FINISHED")

    def summarize(self, result: StageResult, k: int = 5) -> None:
        print(f"\n{result.stage}: {len(result.trials)} trials; top {k} by {result.metric} ({result.mode}):")
        print(top_table(result, k, list(self.spec_params)))
        if result.best:
            print(f"best config: {json.dumps(result.best.config, default=str)}")
        print(f"results: {os.path.join(result.path, 'results.json')}")
        print(f"MLflow: experiment '{self.experiment}' at {self.uri}")
        if self.uri.startswith("sqlite:///"):
            print(f"  open it: mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 --port 5000")


"""MLflow, written from this package only: one experiment per sweep, a pipeline run, a run per stage
under it and a run per trial under its stage. `Tracker` is what the rest of raysweep talks to."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import yaml

from .. import console
from ..sweep import StageResult, storage
from .callback import MlflowCallback
from .policy import STAGE_END_BOUND_S, Policy, deadline
from .reconcile import reconcile
from .runs import TAG, RunIndex, create_sqlite_whole
from .summary import log_outcome, log_stage

PENDING = "mlflow_pending.json"  # in a stage's folder: what MLflow did not take yet


def tracking_uri(spec, runs_dir: str) -> str:
    """The spec's URI (if a spec is given), else MLFLOW_TRACKING_URI, else an sqlite file under the run directory."""
    return (spec and spec.tracking.uri) or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{os.path.abspath(os.path.join(runs_dir, 'mlflow.db'))}"


@dataclass
class Tracker:
    uri: str
    experiment: str
    artifact_root: str | None = None
    parent_run_id: str | None = None
    policy: Policy = field(init=False)
    _index: RunIndex | None = field(default=None, init=False)

    @staticmethod
    def quiet_client() -> None:
        # MLflow's client retries a request for minutes by default, which would hold a stage end (or
        # the sweep's driver) on a dead server; the policy retries on its own terms instead
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def __post_init__(self):
        self.quiet_client()
        self.policy = Policy(self.uri)
        create_sqlite_whole(self.uri)

    @property
    def index(self) -> RunIndex:
        if self._index is None:
            from mlflow.tracking import MlflowClient

            self._index = RunIndex(MlflowClient(self.uri), self.experiment, self.artifact_root)
        return self._index

    def callback(self, spec, stage: str, stage_key: str) -> MlflowCallback:
        return MlflowCallback(self.uri, self.experiment, stage, stage_key, spec, self.parent_run_id, self.artifact_root)

    def finish_stage(self, result: StageResult, stage_key: str, bound_s: float = STAGE_END_BOUND_S) -> bool:
        """MLflow made to match the stage's records on disk, and the stage's summary, within `bound_s`.
        False (and a marker in the stage's folder) when MLflow did not take everything."""
        until = deadline(bound_s)
        ok, found = self.policy.until(until, self.index.stage_run, result.stage, stage_key, self.parent_run_id)
        done = ok and reconcile(self.index, found[0], result, self.policy, until) and \
            self.policy.until(until, log_stage, self.index, found[0], result)[0]
        marker = storage.join(result.path, PENDING)
        if done:
            if storage.exists(marker):
                storage.remove_tree(marker)
            return True
        storage.write_text(marker, json.dumps({"uri": self.uri, "experiment": self.experiment, "stage": result.stage,
                                               "stage_key": stage_key, "error": self.policy.last_error}))
        console.note(f"MLflow at {self.uri} did not take every record of stage {result.stage} within {bound_s:.0f} s "
                     f"({self.policy.last_error}); they are kept on disk: `raysweep sync` with the same spec "
                     "(or the same command with --resume) writes them")
        return False

    # -- the pipeline run ---------------------------------------------------------------------------
    def start_pipeline(self, spec, pipeline_id: str) -> None:
        def start():
            run_id, existed = self.index.find_or_create({TAG + "pipeline": pipeline_id}, f"pipeline-{spec.name}")
            client = self.index.client
            if existed:
                client.update_run(run_id, "RUNNING")
            else:
                client.set_tag(run_id, TAG + "kind", "pipeline")
                if spec.file:
                    client.log_artifact(run_id, spec.file)
                client.log_text(run_id, yaml.safe_dump(spec.payload(), sort_keys=False), "spec_resolved.yaml")
            return run_id

        ok, run_id = self.policy.until(deadline(), start)
        self.parent_run_id = run_id if ok else None

    def record(self, spec, stage: str, stage_key: str, outcome, files: tuple[str, ...] = ()) -> bool:
        """A finished pipeline stage's outcome on the pipeline run; never raises."""
        if self.parent_run_id is None:
            return False

        def write():
            stage_run = self.index.stage_run(stage, stage_key, self.parent_run_id)[0]
            log_outcome(self.index, self.parent_run_id, stage_run, spec.metric.name, stage, outcome, files)

        return self.policy.until(deadline(), write)[0]

    def end_pipeline(self, status: str) -> None:
        if self.parent_run_id is not None:
            self.policy.until(deadline(10), self.index.client.set_terminated, self.parent_run_id, status)


def pending(stage_path: str) -> bool:
    return storage.exists(storage.join(stage_path, PENDING))


__all__ = ["PENDING", "MlflowCallback", "Tracker", "pending", "tracking_uri"]

"""MLflow tracking of a sweep stage, as a Tune callback handed in by the caller.

Hierarchy: one experiment per sweep; a parent run per stage (nested under a pipeline run when
there is one); a child run per trial with `mlflow.parentRunId`, its resolved params (derived values
included), per-epoch metrics with `step`, tags (stage, trial id, decision, seed) and its config as
an artifact. Writes are batched on a thread. Resuming reuses the runs it finds and skips steps
already logged; at the end every finished trial is reconciled against Tune's own result log, so a
killed driver or a down MLflow server loses no finished trial.
"""
from __future__ import annotations

import json
import os

from ray.tune import Callback

from ..spec import Space, Spec
from ..sweep.progress import checkpoint_log, decision, error_line_of, result_log
from ..sweep.trainable import suggestion, trial_config
from .writer import BatchWriter

TAG = "raysweep."
_SKIP = {"status", "diverged_reason", "resumed_from", "trial_id", "date", "hostname", "node_ip", "pid",
         "experiment_id", "timestamp", "done", "training_iteration", "epoch", "checkpoint_dir_name", "config",
         "should_checkpoint", "time_this_iter_s", "time_total_s", "time_since_restore", "iterations_since_restore"}


def step_of(result: dict) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)))


def numeric_metrics(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in _SKIP and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def get_experiment(client, name: str, artifact_root: str | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if artifact_root:
        location = artifact_root if "://" in artifact_root else "file://" + os.path.abspath(artifact_root)
    return client.create_experiment(name, artifact_location=location)


def find_or_create_run(client, experiment_id: str, tags: dict, name: str, parent: str | None = None) -> tuple[str, bool]:
    """The run carrying these tags (and parent), created if missing; True if it already existed."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if parent:
        clauses.append(f"tags.`mlflow.parentRunId` = '{parent}'")
    found = client.search_runs([experiment_id], " and ".join(clauses), max_results=1)
    if found:
        return found[0].info.run_id, True
    all_tags = {**tags, "mlflow.runName": name, **({"mlflow.parentRunId": parent} if parent else {})}
    return client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id, False


class MlflowTracker(Callback):
    def __init__(self, tracking_uri: str, experiment: str, stage: str, spec: Spec, stage_key: str,
                 parent_run_id: str | None = None, artifact_root: str | None = None):
        self.uri, self.experiment, self.stage, self.stage_key = tracking_uri, experiment, stage, stage_key
        self.spec_payload = spec.payload()
        self.nested = spec.search.method == "hyperopt"
        self.metric = spec.metric.name
        self.parent_run_id, self.artifact_root = parent_run_id, artifact_root
        self.stage_run_id: str | None = None
        self.runs: dict[str, str] = {}       # trial id -> MLflow run id
        self.logged: dict[str, set] = {}     # trial id -> steps queued or found in MLflow
        self.ended: set = set()
        self.history: dict[str, dict] = {}  # trial id -> step -> result, for the end-of-stage replay
        self.fresh, self.attempted = False, set()
        self.warned = False
        self._live = None

    def __getstate__(self):  # Tune pickles callbacks with the experiment: keep only plain state
        return {k: v for k, v in self.__dict__.items() if k not in ("_live",)} | {"_live": None}

    # -- connection -------------------------------------------------------------------------------
    @property
    def live(self):
        if self._live is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.uri)
            self._live = {"client": client, "writer": BatchWriter(client),
                          "space": Space(Spec.model_validate(self.spec_payload)),
                          "experiment_id": get_experiment(client, self.experiment, self.artifact_root)}
        return self._live

    def setup(self, **info):
        # after a restore, what was queued but maybe never written is re-read from MLflow itself
        self.runs, self.logged, self.ended, self.history, self.attempted = {}, {}, set(), {}, set()
        client = self.live["client"]
        self.stage_run_id, existed = find_or_create_run(
            client, self.live["experiment_id"], {TAG + "stage": self.stage, TAG + "stage_key": self.stage_key},
            self.stage, self.parent_run_id)
        self.fresh = not existed  # a new stage has no trial runs to find: create them without a search
        client.set_tag(self.stage_run_id, TAG + "kind", "stage")

    # -- trials -----------------------------------------------------------------------------------
    def trial_params(self, trial) -> dict:
        space = self.live["space"]
        return trial_config(space, suggestion(trial.config, space, self.nested))

    def _run_for(self, trial) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        client = self.live["client"]  # a lookup while MLflow is down raises: the guard notes it
        tags = {TAG + "trial_id": trial.trial_id}
        name = f"{self.stage}-{trial.trial_id}"
        if self.fresh and trial.trial_id not in self.attempted:
            run_id, existed = client.create_run(self.live["experiment_id"], run_name=name, tags={
                **tags, "mlflow.runName": name, "mlflow.parentRunId": self.stage_run_id}).info.run_id, False
        else:  # resumed, or an earlier attempt may have created it before failing
            run_id, existed = find_or_create_run(client, self.live["experiment_id"], tags, name, self.stage_run_id)
        self.attempted.add(trial.trial_id)
        self.runs[trial.trial_id] = run_id
        if existed:  # a resumed sweep or a recovered MLflow: only the steps it lacks are written
            # union: steps still queued in this process's writer are not in MLflow yet
            self.logged[trial.trial_id] = self.logged.get(trial.trial_id, set()) | {
                m.step for m in client.get_metric_history(run_id, self.metric)}
        else:
            params = self.trial_params(trial)
            writer = self.live["writer"]
            writer.params(run_id, params)
            writer.tags(run_id, {TAG + "stage": self.stage, TAG + "trial_id": trial.trial_id,
                                 TAG + "seed": params.get("seed", 0), TAG + "decision": "running"})
        return run_id

    def _guard(self, trial, action, *args):
        """MLflow failing must never stop the sweep: note it, let the end-of-stage reconcile catch up."""
        try:
            action(trial, *args)
            return True
        except Exception as e:  # noqa: BLE001
            self.runs.pop(trial.trial_id, None)  # look the run up afresh next time
            if not self.warned:
                self.warned = True
                print(f"raysweep: MLflow at {self.uri} failed ({type(e).__name__}); the sweep goes on and "
                      "catches up at the end", flush=True)
            return False

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard(trial, self._run_for)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = step_of(result)
        self.history.setdefault(trial.trial_id, {})[step] = result
        self._guard(trial, self._log_result, result)

    def _log_result(self, trial, result):
        run_id = self._run_for(trial)
        step = step_of(result)
        steps = self.logged.setdefault(trial.trial_id, set())
        if step in steps:
            return
        steps.add(step)
        self.live["writer"].metrics(run_id, numeric_metrics(result), step, result.get("timestamp", 0) * 1000 or None)
        if result.get("resumed_from"):
            self.live["writer"].tags(run_id, {TAG + "resumed_from": result["resumed_from"]})
        elif result.get("resumed_epoch") is not None:  # its own checkpoint: a retry after a lost node, or a restore
            self.live["writer"].tags(run_id, {TAG + "resumed_epoch": str(result["resumed_epoch"])})
        if trial.num_failures:
            self.live["writer"].tags(run_id, {TAG + "attempt": str(trial.num_failures + 1)})

    def _end(self, trial, errored: bool):
        run_id, client = self._run_for(trial), self.live["client"]
        last = trial.last_result or {}
        step = step_of(last)
        if last.get("trial_id") not in (None, trial.trial_id) and step not in self.logged.get(trial.trial_id, ()):
            # it cloned a PBT donor's last checkpoint and ended there without training on: its final
            # state is the donor's, which Tune holds as its last result (and the stage records)
            self.history.setdefault(trial.trial_id, {})[step] = last
            self._log_result(trial, {**last, "resumed_from": last["trial_id"]})
        tags = {TAG + "decision": decision(last, errored)}
        if last.get("diverged_reason"):
            tags[TAG + "diverged_reason"] = last["diverged_reason"]
        if errored and trial.error_file and os.path.exists(trial.error_file):
            tags[TAG + "error"] = error_line_of(trial)
        self.live["writer"].tags(run_id, tags)
        self.live["writer"].flush(timeout_s=10)  # a finished trial reaches MLflow before we go on
        try:
            client.log_text(run_id, json.dumps(self.trial_params(trial), indent=1, default=str), "config.json")
            client.set_terminated(run_id, "FAILED" if errored else "FINISHED")
            self.ended.add(trial.trial_id)
        except Exception:  # noqa: BLE001 - MLflow down: the reconcile pass at the end retries
            pass

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard(trial, self._end, False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard(trial, self._end, True)

    # -- end: make MLflow match Tune's own record ---------------------------------------------------
    def on_experiment_end(self, trials, **info):
        import time

        done = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        writer = self.live["writer"]
        pending, deadline, delay = list(done), time.monotonic() + 120, 0.5
        while pending:  # replay until MLflow answers: what this driver saw, and what Tune logged before a restart
            still = []
            for trial in pending:
                seen = {step_of(r): r for r in checkpoint_log(trial.path, _filesystem(trial))}
                seen.update({step_of(r): r for r in _result_log(trial)})
                seen.update(self.history.get(trial.trial_id, {}))
                if not self._guard(trial, lambda t: [self._log_result(t, seen[k]) for k in sorted(seen)]):
                    still.append(trial)
            pending = still
            if pending and time.monotonic() > deadline:
                break
            if pending:
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
        written = writer.flush(timeout_s=120) and not pending
        for trial in done:
            if trial.trial_id not in self.ended:
                self._guard(trial, self._end, trial.status == "ERROR")
        written = writer.close(timeout_s=60) and written
        self._drop_orphans({t.trial_id for t in trials})
        missing = [t.trial_id for t in done if t.trial_id not in self.ended]
        if not written or missing:
            print(f"raysweep: MLflow at {self.uri} did not take every record ({writer.last_error}); "
                  "run the same command with --resume to write them", flush=True)


    def _drop_orphans(self, known: set) -> None:
        """A trial started (or even finished) in the last second before a driver was killed never
        reached Tune's saved state; the resumed sweep runs its config again under a new id. Its run
        is deleted: every trial of the stage appears once."""
        try:
            client = self.live["client"]
            runs = client.search_runs([self.live["experiment_id"]], f"tags.`mlflow.parentRunId` = '{self.stage_run_id}'",
                                      max_results=10_000)
            for run in runs:
                if run.data.tags.get(TAG + "trial_id") not in known:
                    client.delete_run(run.info.run_id)
        except Exception:  # noqa: BLE001 - cosmetic: never fail a finished sweep over it
            pass


def _result_log(trial) -> list[dict]:
    """Tune's own per-trial log, in the trial's storage folder (local_path is only Ray's driver
    staging copy, read when the other is missing)."""
    return result_log(trial.path, _filesystem(trial)) or result_log(trial.local_path)


def _filesystem(trial):
    """The filesystem of the trial's storage (shared storage's, or the local disk's)."""
    return getattr(trial.storage, "storage_filesystem", None)

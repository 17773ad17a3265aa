"""The live half of MLflow tracking, as a thin Tune callback: a run per trial under its stage's run,
made (on the writer's thread) with its params and tags at its first report (or its error), each
report queued on the writer, its end. Nothing here may stop the sweep (policy.py); whatever did not
get through is written by the end-of-stage reconcile."""
from __future__ import annotations

import json

from ray.tune import Callback

from ..spec import Space, Spec
from ..sweep.progress import decision, error_line_of
from ..sweep.trainable import suggestion, trial_config
from .policy import Policy
from .runs import TAG, RunIndex, numeric_metrics, reason_tags, role_split, step_of
from .writer import BatchWriter, Pending

END_FLUSH_S = 5.0  # the writer gets this long at the experiment's end; the reconcile does the rest


class MlflowCallback(Callback):
    def __init__(self, uri: str, experiment: str, stage: str, stage_key: str, spec: Spec,
                 parent_run_id: str | None = None, artifact_root: str | None = None):
        self.uri, self.experiment, self.artifact_root = uri, experiment, artifact_root
        self.stage, self.stage_key, self.parent_run_id = stage, stage_key, parent_run_id
        self.spec_payload, self.nested, self.metric = spec.payload(), spec.search.method == "hyperopt", spec.metric.name
        self.stage_run_id: str | None = None
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.steps: dict[str, set] = {}  # trial id -> steps queued or found in MLflow (a paused trial may repeat one)
        self.keys: dict[str, set] = {}  # trial id -> its params' names (no metric may take one)
        self._live = None

    def __getstate__(self):  # Tune pickles callbacks with the experiment: plain state only
        return {**self.__dict__, "_live": None, "runs": {}, "steps": {}, "keys": {}}

    @property
    def live(self):
        if self._live is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.uri)
            self._live = (RunIndex(client, self.experiment, self.artifact_root), BatchWriter(client), Policy(self.uri),
                          Space(Spec.model_validate(self.spec_payload)))
        return self._live

    def setup(self, **info):
        index, _, policy, _ = self.live
        ok, found = policy.once(index.stage_run, self.stage, self.stage_key, self.parent_run_id)
        self.stage_run_id, self.fresh = (found[0], not found[1]) if ok else (None, False)

    def params(self, trial) -> dict:
        space = self.live[3]
        return trial_config(space, suggestion(trial.config, space, self.nested))

    def _run(self, trial):
        """The trial's run id, or the Pending run the writer makes (one that MLflow refused is asked again)."""
        known = self.runs.get(trial.trial_id)
        if known is not None and not (isinstance(known, Pending) and known.failed):
            return known
        index, writer, _, _ = self.live
        if self.stage_run_id is None:
            self.setup()
            if self.stage_run_id is None:
                raise ConnectionError("no stage run")
        tags, name = {TAG + "trial_id": trial.trial_id}, f"{self.stage}-{trial.trial_id}"
        if known is not None:  # its making failed: it may still have got in
            run_id, existed = writer.create(lambda: index.find_or_create(tags, name, self.stage_run_id)[0]), False
        elif self.fresh and not trial.num_failures:  # a new stage has no runs to find: no search per trial
            run_id, existed = writer.create(lambda: index.create(tags, name, self.stage_run_id)), False
        else:
            run_id, existed = index.find_or_create(tags, name, self.stage_run_id)
        params, role = role_split(self.params(trial))
        self.keys[trial.trial_id] = set(params)
        if existed:  # a resumed sweep: only the steps the run lacks are written
            self.steps[trial.trial_id] = self.steps.get(trial.trial_id, set()) | {
                m.step for m in index.client.get_metric_history(run_id, self.metric)}
        else:
            writer.params(run_id, params)
            writer.tags(run_id, {TAG + "kind": "trial", TAG + "stage": self.stage, TAG + "trial_id": trial.trial_id,
                                 TAG + "seed": params.get("seed", 0), TAG + "decision": "running", **role})
        self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.live[2].once(self._report, trial, result)

    def _report(self, trial, result):
        run_id, writer, step = self._run(trial), self.live[1], step_of(result)
        steps = self.steps.setdefault(trial.trial_id, set())
        if step in steps:
            return
        steps.add(step)
        writer.metrics(run_id, numeric_metrics(result, self.keys.get(trial.trial_id, ())), step,
                       result.get("timestamp", 0) * 1000 or None)
        tags = trial_tags(result, trial.num_failures + 1)
        if tags:
            writer.tags(run_id, tags)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.live[2].once(self._end, trial, False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.live[2].once(self._end, trial, True)

    def _end(self, trial, errored: bool):
        last = trial.last_result or {}
        if trial.trial_id not in self.runs and not errored and "training_iteration" not in last:
            return  # stopped before it reported: not a trial of the stage's records, so no run
        run_id, writer = self._run(trial), self.live[1]
        tags = {TAG + "decision": decision(last, errored), **reason_tags(last)}
        if errored:
            tags[TAG + "error"] = error_line_of(trial)
        writer.tags(run_id, tags)
        # ended on the writer's thread once what it reported is in (else the reconcile ends it)
        writer.end(run_id, {"config.json": json.dumps(self.params(trial), indent=1, default=str)},
                   "FAILED" if errored else "FINISHED")

    def on_experiment_end(self, trials, **info):
        if self._live is not None:
            self.live[1].close(END_FLUSH_S)


def trial_tags(result: dict, attempt: int) -> dict:
    """Tags a report carries: where a trial resumed from, and its attempt after a lost worker."""
    tags = {}
    if result.get("resumed_from"):  # PBT cloned another trial's checkpoint
        tags[TAG + "resumed_from"] = result["resumed_from"]
    elif result.get("resumed_epoch") is not None:  # its own checkpoint: a retry after a lost node, or a restore
        tags[TAG + "resumed_epoch"] = str(result["resumed_epoch"])
    if attempt > 1:
        tags[TAG + "attempt"] = str(attempt)
    return tags

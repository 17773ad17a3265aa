"""The end-of-stage reconcile: MLflow made to match what the stage's trials left on disk (each trial's
own result log, and the metrics saved beside its checkpoints), so a killed driver, a lost report or
a down MLflow server loses no finished trial. Only what MLflow lacks is written; it is the same pass
for a stage that just ended and for `raysweep sync` later."""
from __future__ import annotations

import json
import time

from mlflow.entities import Metric, Param, RunTag

from ..sweep import StageResult, storage
from ..sweep.progress import checkpoint_log, result_log
from .callback import trial_tags
from .policy import Policy
from .runs import TAG, RunIndex, numeric_metrics, reason_tags, role_split, step_of
from .writer import chunks


def _last_step(record) -> int:
    return step_of(record.metrics) if record.metrics else record.epochs


def trial_rows(record) -> dict[int, dict]:
    """step -> report of a trial, from its checkpoints' metrics and its result log (the latter wins)."""
    if not record.path:
        return {}
    fs, folder = storage.filesystem_of(record.path)
    last = _last_step(record)
    # a worker can checkpoint an epoch after the scheduler stopped it: Tune never accepted that
    # report, so it is not part of the trial (its record ends at `last`)
    rows = {step_of(r): r for r in checkpoint_log(folder, fs) if step_of(r) <= last}
    logged: dict = {}
    for r in result_log(folder, fs):
        # a step at or below one logged before it begins another attempt (a retry, a resume, a PBT
        # clone) from there on: what the earlier one logged past it is not the trial's. Tune keeps a
        # lost attempt's lines (one that finished 20 epochs in the second before a kill, then stopped
        # at 6 when trained again: its run read 1-20, seen in bench/interruptions.py)
        step = step_of(r)
        for later in [s for s in logged if s > step]:
            del logged[later]
        logged[step] = r
    rows.update(logged)
    if record.ended_as and step_of(record.metrics) not in rows:
        # it cloned a PBT donor's last checkpoint and ended there without training on: its final
        # state is the donor's, which Tune holds as its last result (and the stage records)
        rows[step_of(record.metrics)] = {**record.metrics, "resumed_from": record.ended_as}
    return rows


def reconcile_trial(index: RunIndex, stage_run_id: str, stage: str, metric: str, record, run=None,
                    logged: set = frozenset()) -> None:
    """`run`: the trial's run if MLflow has one, holding `logged`, its steps of `metric`."""
    client = index.client
    tags = {TAG + "trial_id": record.trial_id}
    params, role = role_split(record.config)
    if run is not None:
        if logged and max(logged) > _last_step(record):
            # an attempt Tune's saved state never took in (it finished in the last second before the
            # driver was killed) was trained again; the run holds that lost attempt's later epochs
            client.delete_run(run.info.run_id)
            run = None
    if run is None:
        run_id = index.create(tags, f"{stage}-{record.trial_id}", stage_run_id)
        logged, status = set(), "RUNNING"
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    else:
        run_id, status = run.info.run_id, run.info.status
    now = int(time.time() * 1000)
    metrics, end_tags = [], {}
    for step, row in sorted(trial_rows(record).items()):
        end_tags.update(trial_tags(row, record.attempts))
        if step not in logged:
            ts = int(row.get("timestamp", 0) * 1000) or now
            metrics += [Metric(k, float(v), ts, step) for k, v in numeric_metrics(row, record.config).items()]
    end_tags.update({TAG + "kind": "trial", TAG + "stage": stage, TAG + "seed": record.config.get("seed", 0),
                     TAG + "decision": record.status, **role, **reason_tags(record.metrics)})
    if record.error:
        end_tags[TAG + "error"] = record.error
    have = run.data.tags if run is not None else {}
    tags = [RunTag(k, str(v)[:5000]) for k, v in end_tags.items() if have.get(k) != str(v)[:5000]]
    for chunk in chunks({"metrics": metrics, "tags": tags}):  # nothing, when the live path wrote it all
        client.log_batch(run_id, **chunk)
    if status == "RUNNING":
        client.log_text(run_id, json.dumps(record.config, indent=1, default=str), "config.json")
        client.set_terminated(run_id, "FAILED" if record.status == "errored" else "FINISHED")


def reconcile(index: RunIndex, stage_run_id: str, result: StageResult, policy: Policy, deadline: float) -> bool:
    """True when MLflow holds every trial of the stage (and nothing else under its run)."""
    ok, children = policy.until(deadline, index.children, stage_run_id)
    if not ok:
        return False
    runs = {r.data.tags.get(TAG + "trial_id"): r for r in children}
    ok, steps = policy.until(deadline, index.logged_steps, [r.info.run_id for r in children], result.metric)
    if not ok:
        return False
    known = {t.trial_id for t in result.trials}
    complete = True
    for record in result.trials:
        run = runs.get(record.trial_id)
        complete &= policy.until(deadline, reconcile_trial, index, stage_run_id, result.stage, result.metric,
                                 record, run, steps.get(run.info.run_id, set()) if run else set())[0]
    for trial_id, run in runs.items():
        # a trial started (or even finished) in the last second before a driver was killed never
        # reached Tune's saved state; the resumed sweep ran its config again under a new id
        if trial_id not in known:
            policy.once(index.client.delete_run, run.info.run_id)
    return complete

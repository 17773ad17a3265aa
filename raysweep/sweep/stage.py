"""One stage of a sweep on Ray Tune: build searcher, scheduler and resources from the spec, run or
resume the Tuner, and hand back plain records (no Ray objects leave this module)."""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field

from .. import console
from ..spec import Space, Spec, SpecError
from ..spec.objective import ranked
from ..spec.settings import TrainSettings
from ..train import Run
from ..train.validate import is_function_task
from . import storage
from .progress import Progress, decision, error_line, result_log
from .recovery import RestoreFromWhatExists, ResultLog, complete_upload, whole_states
from .resources import AUTOSCALING_CONFIG_VAR, autoscaler_nodes, plan, ray_nodes, tune_resources, unsatisfiable
from .schedulers import build_scheduler
from .searchers import ListSearcher, build_searcher, starting_points, trial_count
from .spare import SpareCpus
from .stopping import PlateauStopper, StatusStopper, TargetStopper
from .trainable import PBT_KEY, FromConfig, run_trial, suggestion, trial_config


@dataclass
class TrialRecord:
    trial_id: str
    config: dict            # what the trainer saw (derived values included)
    status: str             # completed | early_stopped | target_reached | diverged | timed_out | stopped | errored
    value: float | None     # the best value of the sweep metric the trial reached
    epochs: int
    metrics: dict = field(default_factory=dict)  # its last report
    checkpoint: str | None = None
    error: str | None = None
    attempts: int = 1       # more after a lost node or worker: Tune retried it from its last checkpoint
    resumed_at: list = field(default_factory=list)  # epochs of its own checkpoints it resumed from
    path: str | None = None  # its folder in the stage's storage (its result log and checkpoints)
    ended_as: str | None = None  # a PBT clone that ended on its donor's checkpoint: the donor's trial id
    retried_as: str | None = None  # a failed trial run again (--retry-failed): the new trial's id
    retry_of: str | None = None    # ... and on the new trial, the failed one's
    started_from: str | None = None  # a warm start: the earlier stage's trial whose checkpoint it went on from
    started_at: int = 0              # ... and that checkpoint's epoch

    @property
    def trained_epochs(self) -> int:
        """Epochs this stage trained (a warm start's earlier epochs belong to the stage that trained them)."""
        return self.epochs - self.started_at


@dataclass
class StageResult:
    stage: str
    path: str
    metric: str
    mode: str
    trials: list[TrialRecord]

    def ranked(self) -> list[TrialRecord]:
        """Best first, without trials that have no value or were run again."""
        return ranked([t for t in self.trials if not t.retried_as], self.mode, lambda t: t.value)

    @property
    def best(self) -> TrialRecord | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    @classmethod
    def load(cls, path: str) -> StageResult:
        """A finished stage's results, as run_stage wrote them."""
        data = json.loads(storage.read_text(storage.join(path, "results.json")))
        return cls(data["stage"], path, data["metric"], data["mode"], [TrialRecord(**t) for t in data["trials"]])

    def to_json(self) -> dict:
        ranked = self.ranked()  # once: `best` and the order both come from it
        return {"stage": self.stage, "metric": self.metric, "mode": self.mode,
                "best": asdict(ranked[0]) if ranked else None,
                "trials": [asdict(t) for t in ranked] + [asdict(t) for t in self.trials if t not in ranked]}


FAILED = ("errored", "diverged", "timed_out")
MAX_FAILURES = 2  # retries of a trial whose worker or node was lost, each from its last checkpoint


def check_resources(spec: Spec) -> None:
    """Fail before the run (one line, exit 2) if no node layout of the cluster, with the nodes its
    autoscaler may add, can run one trial."""
    extra = autoscaler_nodes()
    if extra is None:
        console.note(f"the cluster's autoscaler config is not readable here (set {AUTOSCALING_CONFIG_VAR}); "
                     "resources are not checked before the run")
        return
    why = unsatisfiable(plan(spec.resources), ray_nodes() + extra)
    if why:
        raise SpecError(why, spec.file, path="resources",
                        fix="or run on a cluster that has them (--address)")


def stage_dir(storage_path: str, spec_name: str, stage: str) -> str:
    """Where Tune keeps a stage's experiment (and run_stage its results.json)."""
    return storage.join(storage_path, f"{spec_name}-{stage}")


def run_stage(spec: Spec, stage: str, storage_path: str, *, epochs: int | None = None, num_samples: int | None = None,
              points: list[dict] = (), evaluated: list[tuple[dict, float]] = (), callbacks: list = (),
              resume: bool = False, evaluate_test: bool = False, quiet: bool = False,
              stop_rule: tuple[int, float] | None = None, time_budget_s: float | None = None,
              configs: list[dict] | None = None, warm_starts: dict[str, str] | None = None,
              keep_best: bool = False) -> StageResult:
    """Run (or, with `resume`, continue) one stage; `stop_rule` = (window, min_improvement) ends it
    once the last `window` finished trials improved the best by less than that fraction; `configs`
    runs exactly those trainer configs instead of the spec's search; `warm_starts` maps a trainer
    config (`config_key`) to a checkpoint its trial goes on from instead of its first epoch; `keep_best`
    keeps the best epoch's weights in the trials' checkpoints (for a later stage to test)."""
    from ray import tune
    from ray.tune.stopper import CombinedStopper

    epochs = epochs or spec.stopping.max_epochs
    num_samples = num_samples or spec.search.num_samples
    space = Space(spec)
    # a stage shorter than the spec's max_epochs (the coarse one) trains the first epochs of full-length
    # runs, as ASHA's rungs do: the same schedule, warmup and `epochs` in derived values as the runs it
    # screens for, not a compressed run whose best lr and warmup are its own
    run = Run.from_spec(spec, epochs=epochs, horizon=spec.stopping.max_epochs, evaluate_test=evaluate_test,
                        keep_best=keep_best)
    payload = {"spec": spec.payload(), "run": asdict(run), "storage": storage_path,
               "nested": spec.search.method == "hyperopt" and configs is None, "function": is_function_task(spec),
               "warm_starts": dict(warm_starts or {})}
    p = plan(spec.resources)
    # CPUs freed at the stage's end: for raysweep's own 1-worker CPU trials; not PBT's (all run to its end)
    payload["spare_cpus"] = spec.resources.spare_cpus and p.workers == 1 and not p.use_gpu and not payload["function"] \
        and spec.scheduler.type != "pbt"
    trainable = tune.with_resources(tune.with_parameters(run_trial, payload=payload), tune_resources(p))
    path = stage_dir(storage_path, spec.name, stage)
    name = os.path.basename(path)
    if configs is None:
        points = starting_points(spec, space, points)
        searcher = build_searcher(spec, space, num_samples, points, evaluated)
    else:
        searcher = ListSearcher(configs, spec.metric.name, spec.metric.mode)
    total = trial_count(searcher, num_samples, points)
    progress = [] if quiet else [Progress(stage, spec.metric.name, spec.metric.mode, total, plan=p,
                                          max_failures=MAX_FAILURES)]
    if resume and _restorable(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        stoppers = [StatusStopper()]
        if spec.stopping.target is not None:
            stoppers.append(TargetStopper(spec.metric.name, spec.metric.mode, spec.stopping.target))
        if stop_rule and stop_rule[0]:
            stoppers.append(PlateauStopper(spec.metric.name, spec.metric.mode, *stop_rule))
        rules = [s for s in stoppers if isinstance(s, PlateauStopper)]
        param_space, count = {}, total
        spare = [SpareCpus(total, spec.resources.cpus_per_worker)] if payload["spare_cpus"] else []
        if spec.scheduler.type == "pbt":
            param_space, count, searcher = _pbt_space(spec, space, searcher.configs), 1, None
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=spec.metric.name, mode=spec.metric.mode, search_alg=searcher,
                scheduler=build_scheduler(spec, epochs), num_samples=count,
                # synchronous HyperBand pauses trials until a bracket fills; paused trials would hold a
                # concurrency cap forever (a deadlock), and they free their resources anyway. Known configs
                # (random, grid, re-runs) get a cap of all of them: Tune lets a searcher without a cap
                # have one trial pending at a time, and trials then start one by one (2x the wall time of
                # 40 short trials, measured in bench/function_overhead.py)
                max_concurrent_trials=None if spec.scheduler.type == "hyperband" else (
                    spec.search.max_concurrent or (total if isinstance(searcher, ListSearcher) else None)),
                # a hung trial's process keeps its stuck thread, and Tune hands a stopped trial's process
                # to the next trial, whose start then fails: with a watchdog, a fresh process each trial
                reuse_actors=not spec.stopping.trial_timeout_s,
                time_budget_s=time_budget_s or spec.stopping.time_budget_s),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path, verbose=0,
                # the experiment's state reaches shared storage within seconds (Tune's default: 5 minutes),
                # so a driver killed there loses no finished trial
                sync_config=tune.SyncConfig(sync_period=5) if storage.is_uri(storage_path) else None,
                stop=CombinedStopper(*stoppers),
                # result.json: the records' source
                callbacks=[ResultLog(), RestoreFromWhatExists(), *progress, *rules, *spare, *callbacks],
                # PBT clones a donor's checkpoint some time after choosing it: keep them all then
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.scheduler.type == "pbt" else 2),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))
    grid = tuner.fit()
    # Who a result belongs to and the config it ran with come from Tune's Trial: a trial that cloned
    # a PBT donor carries the donor's last result (trial_id and config included) until it reports.
    # Not the trials a stage-wide stop kept from starting: nothing reported, no error.
    records = [_record(trial, r, log, last, space, payload)
               for r, trial in zip(grid, grid._experiment_analysis.trials, strict=False)
               if "training_iteration" in (last := _last_result(r, log := result_log(r.path, r.filesystem)))
               or r.error]
    missing = next((r.metrics["metric_missing"] for r in records if r.status == "metric_missing"), None)
    if missing:
        raise spec.error(("metric", "name"), missing, "name one of the reported metrics")
    result = StageResult(stage, path, spec.metric.name, spec.metric.mode, records)
    storage.write_text(storage.join(path, "results.json"), json.dumps(result.to_json(), indent=1, default=str))
    return result


def _restorable(path: str) -> bool:
    """Tune saved the experiment's state at least once. A Tuner killed before its first save leaves
    only tuner.pkl, which `Tuner.can_restore` accepts; restoring that runs with num_samples=1 (Tune's
    restore path does not pass it and finds no searcher state to take it from), so the stage ended
    after one trial. Such a stage starts afresh, as does one whose every saved state is cut short."""
    import pyarrow.fs as pafs

    fs, folder = storage.filesystem_of(path)
    try:
        entries = fs.get_file_info(pafs.FileSelector(folder))
    except (FileNotFoundError, OSError):
        return False
    names = {e.base_name for e in entries}
    complete_upload(folder, fs, names)
    return "tuner.pkl" in names and whole_states(folder, fs, names)


def retry_failed(spec: Spec, stage: str, storage_path: str, **kw) -> StageResult:
    """Run a finished stage's errored, diverged and timed-out trials again, each with its own config
    (as a new Tune experiment beside the stage's), and merge them into the stage's results: the failed
    records stay, marked `retried_as`; finished trials are not touched."""
    path = stage_dir(storage_path, spec.name, stage)
    try:
        old = StageResult.load(path) if storage.exists(storage.join(path, "results.json")) else None
    except (OSError, ValueError, KeyError):
        old = None
    if old is None:
        raise SpecError(f"no finished stage '{stage}' to retry at {path}", spec.file,
                        fix="run it first (without --retry-failed)")
    if spec.scheduler.type == "pbt":
        raise SpecError("--retry-failed cannot re-run trials of a PBT stage (their configs change as they train)",
                        spec.file, path="scheduler.type", fix="run the stage again with --resume or afresh")
    failed = [t for t in old.trials if t.status in FAILED and not t.retried_as]
    if not failed:
        return old
    retry_stage = next(f"{stage}-retry{n}" for n in itertools.count(1)
                       if not storage.exists(stage_dir(storage_path, spec.name, f"{stage}-retry{n}")))
    new = run_stage(spec, retry_stage, storage_path, configs=[t.config for t in failed], **kw)
    fresh = {json.dumps(t.config, sort_keys=True, default=str): t for t in new.trials}
    for t in failed:
        again = fresh.pop(json.dumps(t.config, sort_keys=True, default=str), None)
        if again is not None:
            t.retried_as, again.retry_of = again.trial_id, t.trial_id
    merged = StageResult(stage, path, old.metric, old.mode, old.trials + new.trials)
    storage.write_text(storage.join(path, "results.json"), json.dumps(merged.to_json(), indent=1, default=str))
    return merged


def _pbt_space(spec: Spec, space: Space, configs: list[dict]) -> dict:
    """PBT takes no searcher: run the presampled configs as a grid, with each mutated key at the top
    level of the trial config where PBT perturbs it."""
    from ray import tune

    defaults = {**TrainSettings().model_dump(), **spec.fixed}
    return {PBT_KEY: tune.grid_search(configs),
            **{k: tune.sample_from(FromConfig(k, defaults.get(k))) for k in spec.scheduler.mutations}}


def _last_result(result, log: list[dict]) -> dict:
    """A trial's last result; from the trial's own log when Tune holds none in memory (a trial that
    PBT has just restored)."""
    if "training_iteration" in (result.metrics or {}):
        return result.metrics
    return (log or [{}])[-1]


def _record(trial, result, log: list[dict], last: dict, space: Space, payload: dict) -> TrialRecord:
    """`log` is the trial's own result log (read once: on shared storage each read is a request)."""
    suggested = suggestion(trial.config, space, payload["nested"])
    metric = payload["run"]["metric"]
    value = last.get(f"best_{metric}")
    status = decision(last, result.error is not None)
    return TrialRecord(
        trial_id=trial.trial_id,
        config=trial_config(space, suggested), status=status,
        value=None if status == "diverged" or value is None else float(value),
        epochs=int(last.get("epoch") or last.get("training_iteration", 0)),
        metrics={k: v for k, v in last.items() if isinstance(v, (int, float, str)) and k not in ("config", "trial_id")},
        checkpoint=storage.uri_of(result.checkpoint.path, result.checkpoint.filesystem) if result.checkpoint else None,
        error=error_line(result.error), attempts=trial.num_failures + 1, path=storage.uri_of(result.path, result.filesystem),
        ended_as=last.get("trial_id") if last.get("trial_id") not in (None, trial.trial_id) else None,
        resumed_at=[r["resumed_epoch"] for r in log if r.get("resumed_epoch") is not None and not r.get("resumed_from")],
        **_warm_start(log))


def _warm_start(log: list[dict]) -> dict:
    """Where a trial whose first report went on from another trial's checkpoint started: a fine trial
    continuing a coarse one (a PBT clone's first report is its own first epoch)."""
    first = log[0] if log else {}
    if not first.get("resumed_from"):
        return {}
    return {"started_from": first["resumed_from"], "started_at": int(first.get("resumed_epoch") or 0)}

"""The staged pipeline: LR range test -> coarse -> fine -> seeds -> final (README, "How raysweep tunes").

Each stage's output is written next to the run (state.json, lr_range.json, seeds.json,
best_config.yaml, and each search stage's Tune folder with its results.json). Running the same
command again skips finished stages and lets Tune continue the unfinished one. The pipeline knows
nothing of MLflow: the caller runs stages (with its callbacks) and hears about each finished one
through `on_stage(stage, outcome)`, after the outcome is saved."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import yaml

from .. import console
from ..spec import Space, Spec, SpecError
from ..spec.distributions import data_of
from ..spec.model import STAGES
from ..spec.objective import score
from ..spec.settings import TrainSettings
from ..sweep import StageResult, TrialRecord, stage_dir, storage
from ..sweep.schedulers import WARM_STARTS
from ..sweep.stage import FAILED
from ..sweep.trainable import config_key, trial_config
from ..train.validate import is_function_task
from .lr_test import run_lr_test, with_lr_range
from .narrow import narrow_spec
from .outcomes import BASELINE_KEY, FinalOutcome, LrTestOutcome, Outcome, SearchOutcome, SeedsOutcome, from_state, to_state
from .seeds import summarize, warning


class PipelineError(RuntimeError):
    """A pipeline that cannot go on (e.g. every coarse trial diverged); one line for the user."""


def _write_json(path: str, data) -> None:
    storage.write_text(path, json.dumps(data, indent=1, default=str))  # a kill leaves the old file or the new


def spec_digest(spec: Spec) -> str:
    return hashlib.sha1(json.dumps(spec.payload(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def params_of(space: Space, config: dict) -> dict:
    return {k: v for k, v in config.items() if k in space.params}


def with_search(spec: Spec, **changes) -> dict:
    """The spec's search section with some keys changed, as data for Spec.derive."""
    return {**spec.payload().get("search", {}), **changes}


@dataclass
class Pipeline:
    spec: Spec
    state_dir: str
    storage: str                          # where the stages' Tune folders live
    run_stage: Callable[..., StageResult]  # (spec, stage, **run_stage kwargs) -> StageResult
    on_stage: Callable[[str, Outcome], None] = lambda stage, outcome: None
    log: Callable[[str], None] = console.say
    state: dict = field(default_factory=dict)
    mirror: str | None = None             # shared storage that holds a copy of state_dir (a driver elsewhere resumes)

    # -- state on disk ------------------------------------------------------------------------------
    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    def file(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def clear(self) -> None:
        """Forget an earlier run of this pipeline: its outputs and its stages' Tune folders."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        for folder in [self.mirror] * bool(self.mirror) + [stage_dir(self.storage, self.spec.name, s) for s in STAGES]:
            storage.remove_tree(folder)

    def open(self) -> dict:
        """Load the state of an earlier run of the same spec, or start a new one."""
        digest = spec_digest(self.spec)
        if self.mirror and not os.path.exists(self.state_file) and storage.exists(storage.join(self.mirror, "state.json")):
            storage.copy_tree(self.mirror, self.state_dir)  # started by a driver on another machine
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                self.state = json.load(f)
            if self.state["spec"] != digest:
                raise SpecError(f"{self.state_dir} holds a pipeline of a different version of this spec",
                                self.spec.file,
                                fix="add --fresh to start over, or use another --runs-dir")
            return self.state
        self.clear()
        os.makedirs(self.state_dir, exist_ok=True)
        self.state = {"spec": digest, "id": uuid.uuid4().hex, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "done": {}}
        _write_json(self.state_file, self.state)
        return self.state

    @property
    def done(self) -> dict[str, Outcome]:
        """The finished stages' outcomes, in stage order."""
        return {stage: from_state(stage, data) for stage, data in self.state["done"].items()}

    def _done(self, stage: str, outcome: Outcome) -> None:
        self.state["done"][stage] = to_state(outcome)
        _write_json(self.state_file, self.state)  # done, whatever the hook below makes of it
        try:
            self.on_stage(stage, outcome)
        except Exception as e:  # noqa: BLE001 - a summary that cannot be written never fails a finished stage
            self.log(f"[{stage}] its summary could not be recorded ({type(e).__name__}: {e}); the stage is done")
        if self.mirror:  # with what the hook drew (the LR test's plot)
            storage.copy_tree(self.state_dir, self.mirror)

    # -- the stages ---------------------------------------------------------------------------------
    def run(self, until: str = "final") -> dict[str, Outcome]:
        """Run every enabled stage up to `until`; returns the finished stages' outcomes."""
        if not self.state:
            self.open()
        st, last = self.spec.stages, STAGES.index(until)
        wanted = {name: getattr(st, name).enabled and i <= last for i, name in enumerate(STAGES)}
        lr = None
        if wanted["lr_range_test"] and is_function_task(self.spec):
            self.log("[lr_range_test] skipped: the task is a training function and the test needs raysweep's "
                     "model and loss; the coarse stage searches the spec's own lr range")
        elif wanted["lr_range_test"]:
            lr = self.lr_test()
        spec = with_lr_range(self.spec, lr)
        pool: list[TrialRecord] = []  # the configs the next stage starts from, best first
        evaluated: list[TrialRecord] = []  # every coarse result, for TPE in the fine stage
        if wanted["coarse"]:
            spec = self.coarse_spec(spec)
            coarse = self.search("coarse", spec)
            pool = coarse.ranked()
            evaluated = coarse.trials
        if wanted["fine"]:
            spec = self.fine_spec(spec, pool)
            pool = self.search("fine", spec, pool=pool, evaluated=evaluated).ranked()
        chosen = None
        if pool:
            config = pool[0].config
            chosen = {**params_of(Space(spec), config), **({"seed": config["seed"]} if "seed" in config else {})}
        if wanted["seeds"]:
            chosen = self.seeds(spec, pool).chosen
        if wanted["final"]:
            self.final(spec, chosen)
        return self.done

    def lr_test(self) -> dict:
        path = self.file("lr_range.json")
        if "lr_range_test" in self.state["done"] and os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        self.log("[lr_range_test] exponential lr sweep, "
                 f"{self.spec.stages.lr_range_test.start_lr:g} -> {self.spec.stages.lr_range_test.end_lr:g}")
        result = run_lr_test(self.spec, self.log)
        _write_json(path, result)
        self._done("lr_range_test", LrTestOutcome(path, result["param"], tuple(result["range"] or ()) or None,
                                                  result["note"]))
        return result

    def stage_epochs(self, epochs: int | None) -> int:
        return min(epochs or self.spec.stopping.max_epochs, self.spec.stopping.max_epochs)

    def coarse_spec(self, spec: Spec) -> Spec:
        """Wide and cheap: the spec's searcher, ASHA unless the spec names a scheduler."""
        c = self.spec.stages.coarse
        search = with_search(spec, method=c.method or spec.search.method, num_samples=c.num_samples)
        explicit = "type" in spec.scheduler.model_fields_set
        return spec.derive(search=search, scheduler=spec.payload()["scheduler"] if explicit else {"type": "asha"})

    def fine_spec(self, spec: Spec, pool: list[TrialRecord]) -> Spec:
        """Narrowed around the coarse top-k; TPE unless the spec enumerates a grid or runs PBT (where
        Tune allows no searcher)."""
        f = self.spec.stages.fine
        space = Space(spec)
        top = [params_of(space, t.config) for t in pool[:f.top_k]]
        if top:
            spec = narrow_spec(spec, top, f.margin)
        grid = spec.search.method == "grid" or any(p.family.grid for p in spec.parameters.values())
        method = f.method or ("grid" if grid else "random" if spec.scheduler.type == "pbt" else "hyperopt")
        search = with_search(spec, method=method, num_samples=f.num_samples, points_to_evaluate=[])
        scheduler = self.spec.payload().get("scheduler", {})  # the spec's own (coarse may have added ASHA)
        own = self.spec.scheduler
        if pool and own.cuts_by_epoch:
            # The coarse stage already ranked these configs after its epochs: a first cut earlier than
            # that would sort near-equal configs by a noisier, shorter view than the one that chose them.
            screened = min(self.stage_epochs(self.spec.stages.coarse.epochs), self.stage_epochs(f.epochs),
                           own.max_t or math.inf)
            scheduler = {**scheduler, "grace_period": max(own.grace_period, screened)}
        return spec.derive(search=search, scheduler=scheduler)

    def search(self, stage: str, spec: Spec, pool: list[TrialRecord] = (),
               evaluated: list[TrialRecord] = ()) -> StageResult:
        if stage in self.state["done"]:
            return StageResult.load(self.done[stage].path)
        conf = getattr(self.spec.stages, stage)
        space = Space(spec)
        points, known, warm = [], [], {}
        epochs = self.stage_epochs(conf.epochs)
        if stage == "fine":  # the coarse top-k at full length first, and TPE told what coarse saw
            points = [params_of(space, t.config) for t in pool[:conf.top_k]]
            known = [(params_of(space, t.config), t.value) for t in evaluated
                     if t.value is not None and space.contains(params_of(space, t.config))]
            warm = self.warm_starts(spec, pool[:conf.top_k], epochs)
        cut = f" (first cut after epoch {spec.scheduler.grace_period})" if spec.scheduler.cuts_by_epoch else ""
        self.log(f"[{stage}] {spec.search.method} x {conf.num_samples}, {spec.scheduler.type}{cut}, {epochs} epochs"
                 + (f"; {len(points)} starting points" if points else "")
                 + (f" ({len(warm)} go on from their coarse checkpoints)" if warm else "")
                 + (f", {len(known)} known results" if known else ""))
        result = self.run_stage(spec, stage, resume=True, epochs=epochs, num_samples=conf.num_samples, points=points,
                                evaluated=known if spec.search.method == "hyperopt" else (),
                                stop_rule=(conf.stop_window, conf.stop_min_improvement) if conf.stop_window else None,
                                time_budget_s=conf.time_budget_s, warm_starts=warm)
        if result.best is None:
            raise PipelineError(f"{stage}: no trial reached a finite {spec.metric.name} "
                                f"({len(result.trials)} trials; see {result.path}/results.json)")
        self._done(stage, SearchOutcome(result.path, len(result.trials), result.best.value, result.best.config,
                                        {n: data_of(p) for n, p in spec.parameters.items()}))
        return result

    @staticmethod
    def warm_starts(spec: Spec, top: list[TrialRecord], epochs: int) -> dict[str, str]:
        """The coarse top-k's checkpoints, for the fine stage to go on from instead of training their
        first epochs again: a coarse trial trains the start of a full-length run (same config, seed and
        schedule), so its checkpoint is where that run stands. Not for a training function (raysweep
        cannot tell whether it resumes from a checkpoint it is handed) nor for schedulers that count
        reports rather than epochs (HyperBand, PBT)."""
        if is_function_task(spec) or spec.scheduler.type not in WARM_STARTS:
            return {}
        return {config_key(t.config): t.checkpoint for t in top
                if t.checkpoint and not t.ended_as and t.status not in FAILED and t.epochs < epochs}

    def fixed_spec(self, spec: Spec, runs: int, epochs: int) -> Spec:
        """Re-runs of given configs: every one at full length, no scheduler, no early stopping."""
        search = with_search(spec, method="random", num_samples=runs, points_to_evaluate=[])
        return spec.derive(search=search, scheduler={"type": "fifo"}, stopping={"max_epochs": epochs})

    def seeds(self, spec: Spec, pool: list[TrialRecord]) -> SeedsOutcome:
        path = self.file("seeds.json")
        if "seeds" in self.state["done"] and os.path.exists(path):
            outcome = self.done["seeds"]
            if not outcome.chosen:  # saved before outcomes carried it
                with open(path) as f:
                    outcome = replace(outcome, chosen=json.load(f)["chosen"])
            return outcome
        conf = self.spec.stages.seeds
        space = Space(spec)
        configs, seen = [], set()
        for t in pool:  # distinct parameter sets, best first
            params = params_of(space, t.config)
            if config_key(params) not in seen and len(configs) < conf.top_n:
                seen.add(config_key(params))
                configs.append(params)
        if not configs:
            raise PipelineError("seeds: no earlier stage left a config to re-run")
        base_seed = self.spec.fixed.get("seed", 0)
        seeds = [base_seed + 1 + i for i in range(conf.num_seeds)]
        points = [{**c, "seed": s} for c in configs for s in seeds]
        epochs = self.stage_epochs(conf.epochs)
        stage_spec = self.fixed_spec(spec, len(points), epochs)
        self.log(f"[seeds] top {len(configs)} configs x {len(seeds)} seeds, {epochs} epochs, no early stopping")
        result = self.run_stage(stage_spec, "seeds", resume=True, epochs=epochs, num_samples=len(points), points=points,
                                keep_best=True)
        index = {config_key(c): i for i, c in enumerate(configs)}
        runs = [(index[config_key(params_of(space, t.config))], t.config["seed"], t.value) for t in result.trials
                if config_key(params_of(space, t.config)) in index and "seed" in t.config]
        summary = summarize(configs, runs, spec.metric.mode)
        winner = summary["ranked"][0]
        if winner["mean"] is None:
            raise PipelineError(f"seeds: every re-run diverged or failed (see {result.path}/results.json)")
        summary["warning"] = warning(summary)
        summary["path"] = result.path
        best_seed = max((s for s, v in winner["values"].items() if v is not None and math.isfinite(v)),
                        key=lambda s: score(winner["values"][s], spec.metric.mode))
        summary["chosen"] = {**winner["config"], "seed": int(best_seed)}
        # the final stage scores this run on the test split instead of training it again
        ran = next((t for t in result.trials if t.checkpoint and t.status == "completed" and t.epochs == epochs
                    and params_of(space, t.config) == winner["config"] and t.config.get("seed") == int(best_seed)), None)
        for s in summary["ranked"]:
            ci = f" [{s['ci95'][0]:.4g}, {s['ci95'][1]:.4g}]" if s["ci95"] else ""
            self.log(f"[seeds] config {s['config_id']}: {spec.metric.name} mean {s['mean']:.4g} "
                     f"std {s['std'] or 0:.2g}{ci}" + (f", {s['diverged']} diverged" if s["diverged"] else ""))
        if summary["warning"]:
            self.log(f"[seeds] warning: {summary['warning']}")
        _write_json(path, summary)
        outcome = SeedsOutcome(path, summary["winner"], summary["stable"], winner["mean"], winner["std"],
                               tuple(winner["ci95"]) if winner["ci95"] else None, summary["chosen"], result.path,
                               ran.checkpoint if ran and not is_function_task(spec) else None)
        self._done("seeds", outcome)
        return outcome

    def baseline(self, chosen: dict) -> dict | None:
        """The untuned config trained beside the chosen one: the spec's fixed settings with raysweep's and
        the task's defaults (a training function has none raysweep knows, so only values the spec gives),
        on the chosen config's seed."""
        given, function = self.spec.stages.final.baseline, is_function_task(self.spec)
        if given is False or (given is True and function):
            return None
        given = given if isinstance(given, dict) else {}
        # searched trainer settings at their defaults, written out: a derived value that uses one
        # (`base_lr * batch_size / 32`) is computed, and MLflow shows what the baseline ran with
        defaults = {} if function else TrainSettings().model_dump()
        filled = {k: defaults[k] for k, p in self.spec.parameters.items() if k in defaults and p.parent is None}
        return {**filled, **given, **({"seed": chosen["seed"]} if "seed" in chosen else {}), BASELINE_KEY: True}

    def final(self, spec: Spec, chosen: dict | None) -> FinalOutcome:
        if "final" in self.state["done"]:
            return self.done["final"]
        if chosen is None:
            raise PipelineError("final: no earlier stage chose a config; enable coarse, fine or seeds")
        epochs = self.stage_epochs(self.spec.stages.seeds.epochs)
        baseline = self.baseline(chosen)
        seeds = self.done.get("seeds")
        warm = {}
        if isinstance(seeds, SeedsOutcome) and seeds.checkpoint and seeds.chosen == chosen:
            # the seeds stage ran this config on this seed for as long: its run, not a second one
            warm = {config_key(trial_config(Space(spec), chosen)): seeds.checkpoint}
            self.log(f"[final] the chosen config's run in the seeds stage (seed {chosen.get('seed')}, {epochs} epochs) "
                     "scored on the held-out test split" + (f", beside the untuned baseline trained for {epochs} epochs"
                                                            if baseline else ""))
        else:
            self.log(f"[final] the chosen config once more for {epochs} epochs"
                     + (", beside the untuned baseline," if baseline else "") + " then the held-out test split")
        result = self.run_stage(self.fixed_spec(spec, 1, epochs), "final", resume=True, epochs=epochs, num_samples=1,
                                configs=[chosen, *([baseline] if baseline else [])], evaluate_test=True,
                                warm_starts=warm)
        trial = next((t for t in result.trials if not t.config.get(BASELINE_KEY)), None)
        if trial is None or trial.status in ("errored", "diverged"):
            raise PipelineError(f"final: the chosen config did not train ({result.path}/results.json)")
        base = next((t for t in result.trials if t.config.get(BASELINE_KEY)), None)
        test = {k: v for k, v in trial.metrics.items() if k.startswith("test_")}
        base_test = {k: v for k, v in base.metrics.items() if k.startswith("test_")} if base else {}
        outcome = FinalOutcome(result.path, self.write_best(trial, test, base_test, epochs), trial.config, trial.value,
                               test, base.value if base else None, base.status if base else None, base_test)
        at = trial.metrics.get("tested_epoch")
        where = f" at epoch {at} of {epochs}, whose weights are tested" if at else ""
        self.log(f"[final] {spec.metric.name} {trial.value:.4g}{where}; " + ", ".join(f"{k} {v:.4g}" for k, v in test.items()))
        if base is not None:
            self.log(f"[final] {outcome.versus(spec.metric.name, spec.metric.mode)}")
        self.log(f"best config: {outcome.best_config}")
        self._done("final", outcome)
        return outcome

    def write_best(self, trial: TrialRecord, test: dict, baseline_test: dict, epochs: int) -> str:
        """best_config.yaml: a spec with every chosen value fixed and the spec's derived values and
        constraints kept (`raysweep train` trains exactly the final run's config), and what each
        stage measured under `results`."""
        from ..spec import load_spec
        from ..train.validate import check_task

        done, spec = self.done, self.spec
        config = trial.config
        results = {f"final_{spec.metric.name}": trial.value, **test, **{f"baseline_{k}": v for k, v in baseline_test.items()},
                   **{f"{k}_stage_best": v.best for k, v in done.items() if isinstance(v, SearchOutcome)}}
        if isinstance(s := done.get("seeds"), SeedsOutcome):
            results.update({f"seeds_{spec.metric.name}_mean": s.mean, f"seeds_{spec.metric.name}_std": s.std,
                            f"seeds_{spec.metric.name}_ci95": list(s.ci95) if s.ci95 else None,
                            "seeds_ranking_stable": s.stable})
        payload = spec.payload()
        data = {"name": f"{spec.name}_best",
                "description": f"chosen by raysweep run from {spec.file or spec.name} "
                               f"on {time.strftime('%Y-%m-%d %H:%M')}",
                "task": spec.task, "metric": {"name": spec.metric.name, "mode": spec.metric.mode},
                "fixed": {k: v for k, v in config.items() if k not in spec.derived},
                **{k: payload[k] for k in ("derived", "constraints", "resources", "tracking", "storage_path")
                   if k in payload},
                "stopping": {"max_epochs": epochs},
                "results": json.loads(json.dumps(results, default=float))}
        path = self.file("best_config.yaml")
        with open(path, "w") as f:
            command = "sweep" if is_function_task(spec) else "train"  # a function runs as a one-trial sweep
            f.write(f"# The config raysweep's pipeline chose for {spec.name}: `raysweep {command} {path}` trains it.\n")
            yaml.safe_dump(data, f, sort_keys=False)
        check_task(load_spec(path))  # it must be a valid spec, as `raysweep validate` would say
        return path

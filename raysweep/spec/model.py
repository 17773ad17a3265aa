"""The sweep file as pydantic models: structure, types, defaults and bounds in one place."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .distributions import FAMILIES, NAMES, At, Family, infer
from .errors import SpecError
from .yaml_io import dotted, locate

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what an expression can refer to
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # a parameter's name: W&B's rule (Hydra-style dots too)
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(Strict):
    distribution: Literal[NAMES] | None = None
    min: int | float | None = None
    max: int | float | None = None
    q: int | float | None = None
    values: list[Any] | None = None
    value: Any = None
    mu: float = 0.0
    sigma: float = 1.0
    when: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, list):  # `opt: [sgd, adam]`
            return {"values": data}
        if not isinstance(data, dict):  # `epochs: 5`
            return {"value": data}
        return data

    @model_validator(mode="after")
    def _check(self):
        given = self.model_fields_set - {"distribution", "when"}
        if self.distribution is None:  # W&B-style inference
            self.distribution = infer(given, {"min": self.min, "max": self.max})
            if self.distribution is None:
                raise At("distribution", f"cannot tell the distribution; give one of: {', '.join(NAMES)}")
        family = self.family
        for extra in sorted(given - family.takes):
            raise At(extra, f"'{extra}' does not apply to distribution '{family.name}'; remove it "
                            f"(distribution '{family.name}' takes: {', '.join(sorted(family.takes))})")
        for missing in sorted(family.needs - given):
            raise At(missing, f"distribution '{family.name}' needs '{missing}'")
        family.check(self)
        if self.when is not None:
            if len(self.when) != 1:
                raise At("when", "name exactly one parent parameter, e.g. `when: {optimizer: sgd}` "
                                 "(nest conditions by making the parent conditional)")
        return self

    @property
    def parent(self) -> str | None:
        return next(iter(self.when)) if self.when else None

    @property
    def parent_values(self) -> list:
        if not self.when:
            return []
        v = next(iter(self.when.values()))
        return v if isinstance(v, list) else [v]

    @property
    def family(self) -> Family:
        return FAMILIES[self.distribution]

    @property
    def is_log(self) -> bool:
        return self.family.log

    @property
    def is_categorical(self) -> bool:
        return self.family.categorical


class Metric(Strict):
    name: str = Field(min_length=1)
    mode: Literal["min", "max"] | None = None
    goal: Literal["minimize", "maximize"] | None = None
    target: float | None = None

    @model_validator(mode="after")
    def _mode(self):
        from_goal = {"minimize": "min", "maximize": "max"}.get(self.goal)
        if self.mode and from_goal and self.mode != from_goal:
            raise At("goal", f"goal '{self.goal}' contradicts mode '{self.mode}'; give one of them")
        self.mode = self.mode or from_goal
        if self.mode is None:
            raise At("mode", "say whether to minimize or maximize: `mode: min|max` (or `goal: minimize|maximize`)")
        self.goal = None
        return self


class Search(Strict):
    method: Literal["random", "grid", "hyperopt"] = "hyperopt"
    num_samples: int = Field(20, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    seed: int = 0
    n_initial_points: int = Field(10, ge=1)  # TPE's random start-up trials
    points_to_evaluate: list[dict[str, Any]] = []


SCHEDULERS = ("fifo", "asha", "hyperband", "median", "pbt")
_SCHED_TAKES = {
    "fifo": set(),
    "asha": {"grace_period", "reduction_factor", "max_t", "brackets"},
    "hyperband": {"reduction_factor", "max_t"},
    "median": {"grace_period", "min_samples_required"},
    "pbt": {"perturbation_interval", "resample_probability", "quantile_fraction", "mutations"},
}


class Scheduler(Strict):
    type: Literal[SCHEDULERS] = "fifo"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # default: stopping.max_epochs
    brackets: int = Field(1, ge=1)
    min_samples_required: int = Field(3, ge=1)
    perturbation_interval: int = Field(2, ge=1)
    resample_probability: float = Field(0.25, ge=0, le=1)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    mutations: dict[str, Param] = {}

    @property
    def cuts_by_epoch(self) -> bool:
        """It stops trials from `grace_period` epochs on (ASHA, median stopping)."""
        return "grace_period" in _SCHED_TAKES[self.type]

    @model_validator(mode="after")
    def _fields_apply(self):
        for key in sorted(self.model_fields_set - {"type"} - _SCHED_TAKES[self.type]):
            owners = [t for t, ks in _SCHED_TAKES.items() if key in ks]
            raise At(key, f"'{key}' does not apply to scheduler '{self.type}' (it is for: {', '.join(owners)}); remove it")
        if self.type == "pbt" and not self.mutations:
            raise At("mutations", "pbt needs `mutations:` (the parameters it may perturb, e.g. lr)")
        if self.max_t is not None and self.grace_period > self.max_t:
            raise At("grace_period", f"grace_period {self.grace_period} exceeds max_t {self.max_t}")
        return self


class Resources(Strict):
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    cpus_per_trial: float = Field(0.25, ge=0)  # the trial's driver when workers_per_trial > 1
    custom: dict[str, float] = {}  # Ray custom resources per worker, e.g. {worker: 1} keeps trials off the head
    placement: Literal["pack", "spread", "strict_pack", "strict_spread"] = "pack"  # a trial's DDP workers
    spare_cpus: bool = True  # trials left running at a stage's end take the CPUs it no longer uses

    @field_validator("custom")
    @classmethod
    def _custom(cls, v):
        for key, amount in v.items():
            if key in ("CPU", "GPU", "cpu", "gpu", "memory"):
                raise ValueError(f"{key} is not a custom resource; use cpus_per_worker / gpus_per_worker")
            if not amount > 0:
                raise ValueError(f"{key}: {amount} must be > 0")
        return v

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_above_one(cls, v):
        if v > 1 and v != int(v):
            raise ValueError(f"a worker takes a fraction of one GPU or whole GPUs, not {v}; use e.g. 0.5 or 2")
        return v

    @model_validator(mode="after")
    def _nccl_needs_own_gpu(self):
        if self.workers_per_trial > 1 and 0 < self.gpus_per_worker < 1:
            raise At("gpus_per_worker", f"{self.workers_per_trial} DDP workers sharing GPUs cannot use NCCL; give each "
                                        "worker a whole GPU, or use fractions with workers_per_trial: 1")
        return self


class LRRangeTest(Strict):
    enabled: bool = True
    start_lr: float = Field(1e-7, gt=0)
    end_lr: float = Field(1.0, gt=0)
    num_steps: int = Field(100, ge=10)
    smoothing: float = Field(0.05, gt=0, lt=1)  # each new loss's weight in the running average that detects divergence
    diverge_factor: float = Field(4.0, gt=1)  # stop once smoothed loss > factor x best
    set_range: bool = True  # coarse stage's range of `param` from the test's suggestion
    param: str | None = None  # the parameter that sets the lr; default: lr, or the one a derived lr uses

    @model_validator(mode="after")
    def _order(self):
        if not self.start_lr < self.end_lr:
            raise At("end_lr", f"end_lr must be > start_lr (got {self.start_lr} .. {self.end_lr})")
        return self


class SearchStage(Strict):
    enabled: bool = True
    num_samples: int = Field(20, ge=1)  # 20-30 trials narrow a space (README, "How raysweep tunes")
    epochs: int | None = Field(None, ge=1)  # default: stopping.max_epochs
    method: Literal["random", "grid", "hyperopt"] | None = None  # default: coarse search.method, fine hyperopt
    top_k: int = Field(5, ge=1)  # configs handed to the next stage
    time_budget_s: float | None = Field(None, gt=0)
    stop_window: int | None = Field(10, ge=1)  # the stop rule: the last N finished trials ...
    stop_min_improvement: float = Field(0.01, ge=0)  # ... improved the best by less than this fraction


class CoarseStage(SearchStage):
    num_samples: int = Field(30, ge=1)  # 20-50 wide configs map a space
    epochs: int | None = Field(5, ge=1)  # 3-5 epochs: quick feedback, enough to rank
    stop_window: int | None = Field(None, ge=1)  # off: coarse maps the space; the stop rule ends tuning


class FineStage(SearchStage):
    margin: float = Field(0.1, ge=0, le=1)  # widen the top-k's hull by this share of the coarse range


class SeedsStage(Strict):
    enabled: bool = True
    top_n: int = Field(3, ge=1)
    num_seeds: int = Field(3, ge=2)
    epochs: int | None = Field(None, ge=1)  # default: stopping.max_epochs


class FinalStage(Strict):
    enabled: bool = True
    # trained beside the chosen config, to show what tuning bought: true = the spec's fixed settings
    # with raysweep's and the task's defaults (nothing searched); a mapping sets some parameters; false = off
    baseline: bool | dict[str, Any] = True


class Stages(Strict):
    lr_range_test: LRRangeTest = LRRangeTest()
    coarse: CoarseStage = CoarseStage()
    fine: FineStage = FineStage()
    seeds: SeedsStage = SeedsStage()  # 3 seeds: the least that gives a spread
    final: FinalStage = FinalStage()


STAGES = tuple(Stages.model_fields)  # the pipeline's stages, in order


class EarlyStopping(Strict):
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.001, ge=0)


class Stopping(Strict):
    max_epochs: int = Field(20, ge=1)
    target: float | None = None
    time_budget_s: float | None = Field(None, gt=0)
    # a trial that reports no epoch for this long (startup included) is stopped as timed_out
    trial_timeout_s: float | None = Field(None, gt=0)
    early_stopping: EarlyStopping | None = None


class Tracking(Strict):
    uri: str | None = None
    experiment: str | None = None


class Spec(Strict):
    # where it was read from: the file, and each key's (file, line, column) for errors that point there
    _file: str | None = PrivateAttr(None)
    _positions: dict = PrivateAttr(default_factory=dict)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    extends: str | None = None
    task: str = Field(min_length=1)
    method: Literal["random", "grid", "hyperopt"] | None = None  # W&B-style alias of search.method
    metric: Metric
    parameters: dict[str, Param] = {}
    fixed: dict[str, Any] = {}
    # parameter groups a training function receives as nested dicts: `optimizer.lr` reaches it as
    # config["optimizer"]["lr"] (W&B's nested `parameters:`)
    groups: list[str] = []
    constraints: list[str] = []
    derived: dict[str, str] = {}
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    stages: Stages = Stages()
    stopping: Stopping = Stopping()
    tracking: Tracking = Tracking()
    storage_path: str | None = None
    results: dict[str, Any] = {}  # what a pipeline measured (best_config.yaml); not read by the sweep

    def payload(self) -> dict:
        """Plain data that validates back to an equal Spec (for shipping to Ray workers)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def __eq__(self, other) -> bool:  # the same content, wherever it was read from
        return isinstance(other, Spec) and self.model_dump() == other.model_dump()

    __hash__ = None

    @property
    def file(self) -> str | None:
        return self._file

    @property
    def positions(self) -> dict:
        return self._positions

    def located(self, file: str | None, positions: dict) -> Spec:
        self._file, self._positions = file, positions
        return self

    def error(self, path: tuple, message: str, fix: str | None = None) -> SpecError:
        """A one-line error at `path`, with the file:line:col the key was read from."""
        f, line, col = locate(self._positions, path)
        return SpecError(message, f or self._file, line, col, dotted(path), fix)

    def derive(self, **sections) -> Spec:
        """A validated copy with whole sections replaced (given as plain data). Keeps the file it
        came from (where user tasks are looked up) and the positions of its keys."""
        return Spec.model_validate({**self.payload(), **sections}).located(self._file, self._positions)

    @model_validator(mode="after")
    def _method_alias(self):
        if self.method is not None:
            if "method" in self.search.model_fields_set and self.search.method != self.method:
                raise At("method", f"method '{self.method}' contradicts search.method '{self.search.method}'; keep one")
            self.search.method = self.method
        self.method = None
        return self

    @model_validator(mode="after")
    def _hyperband_checkpoints(self):
        """Synchronous HyperBand pauses trials at its rungs and resumes them from their last checkpoint:
        without one at every epoch, a paused trial trained its epochs again from the first."""
        if self.scheduler.type == "hyperband" and "checkpoint_every" not in self.parameters \
                and not self.fixed.get("checkpoint_every"):
            self.fixed = {**self.fixed, "checkpoint_every": 1}
        return self

    @model_validator(mode="after")
    def _pbt_checkpoints(self):
        """PBT clones a donor from its last checkpoint: without one at every perturbation it never exploits."""
        if self.scheduler.type != "pbt" or "checkpoint_every" in self.parameters:
            return self
        interval, every = self.scheduler.perturbation_interval, self.fixed.get("checkpoint_every")
        if not every:
            self.fixed = {**self.fixed, "checkpoint_every": interval}
        elif not isinstance(every, int) or interval % every:
            raise At(("fixed", "checkpoint_every"),
                     f"PBT exploits every {interval} epochs (scheduler.perturbation_interval) from the donor's last "
                     f"checkpoint and checkpoint_every {every} does not divide it; set checkpoint_every: {interval}")
        return self

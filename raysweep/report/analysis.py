"""What a finished sweep says, computed from what MLflow holds: which parameters mattered, what went
wrong in which trials and what that suggests, whether the search converged, whether the winner's lead
over the other finalists is real, and what to try next."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..spec.distributions import all_numbers
from ..spec.objective import best, ranked
from ..tracking.read import SweepView, TrialView

SEARCH_STAGES = ("coarse", "fine", "sweep")


@dataclass
class Importance:
    param: str
    mean: float
    std: float


@dataclass
class Rule:
    name: str
    sign: str      # what the curves show
    advice: str


# The failure rules, checked in this order on each trial's curves; a trial gets the first that fires.
RULES = {
    "diverged": Rule("diverged", "a non-finite loss, or a training loss that ended above 3x where it began",
                     "the learning rate is too high: lower the top of its range, or add warmup or gradient clipping"),
    "too_slow": Rule("too slow", "training loss fell by less than 10% over 3 or more epochs",
                     "the learning rate is too low: raise the bottom of its range"),
    "overfitting": Rule("overfitting", "validation loss ended 10% above its best while training loss kept falling",
                        "regularise more (weight decay, then dropout) or train fewer epochs"),
    "noisy": Rule("noisy", "training loss rose in a third or more of its epochs",
                  "gradient noise: a larger batch, or a lower learning rate"),
}


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def diagnose(trial: TrialView) -> str | None:
    """The name of the first failure rule the trial's curves fire, or None for a healthy trial."""
    train = trial.curves.get("train_loss", [])
    finite = _finite(train)
    if trial.status == "diverged" or any(math.isinf(v) for v in train) or \
            (len(finite) >= 2 and finite[-1] > 3 * finite[0]) or (train and not finite and trial.epochs):
        return "diverged"
    if len(finite) >= 3 and finite[-1] > 0.9 * finite[0]:
        return "too_slow"
    val = _finite(trial.curves.get("val_loss", []))
    if len(val) >= 3 and len(finite) >= 3:
        best = int(np.argmin(val))
        if best < len(val) - 1 and val[-1] > 1.1 * val[best] and finite[-1] < finite[min(best, len(finite) - 1)]:
            return "overfitting"
    if len(finite) >= 4 and sum(b > a for a, b in zip(finite, finite[1:], strict=False)) >= (len(finite) - 1) / 3:
        return "noisy"
    return None


def searched(trials: list[TrialView]) -> list[TrialView]:
    return [t for t in trials if t.stage in SEARCH_STAGES and t.value is not None and math.isfinite(t.value)]


def _distributions(trials: list[TrialView], params: list[str], log: dict):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = {}
    for p in params:
        values = [t.config[p] for t in trials]
        if all_numbers(values):
            lo, hi = float(min(values)), float(max(values))
            if lo < hi:
                dists[p] = FloatDistribution(lo, hi, log=bool(log.get(p)) and lo > 0)
        elif len({str(v) for v in values}) > 1:
            dists[p] = CategoricalDistribution(sorted({str(v) for v in values}))
    return dists


def importance(trials: list[TrialView], params: list[str], mode: str, log: dict, forests: int = 8) -> list[Importance]:
    """fANOVA importance (Optuna's FanovaImportanceEvaluator, after Hutter et al. 2014) of the
    parameters every trial has: mean and std over `forests` random forests of different seeds. (Bootstrap
    resamples of 20-30 trials, tried first, put a third of the importance on parameters that did not
    matter at all: duplicated trials give the forest's trees noise to split on.)"""
    import json

    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    present = [p for p in params if all(p in t.config for t in trials)]
    dists = _distributions(trials, present, log)
    if len(trials) < 8 or not dists:
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    # in one order whatever order the trials ran in, so the same trials give the same figures
    for t in sorted(trials, key=lambda t: json.dumps(t.config, sort_keys=True, default=str)):
        study.add_trial(create_trial(value=float(t.value), distributions=dists,
                                     params={p: str(t.config[p]) if hasattr(d, "choices") else float(t.config[p])
                                             for p, d in dists.items()}))
    scores = [get_param_importances(study, evaluator=FanovaImportanceEvaluator(n_trees=64, seed=seed))
              for seed in range(forests)]
    ranked = [Importance(p, float(np.mean([s.get(p, 0.0) for s in scores])),
                         float(np.std([s.get(p, 0.0) for s in scores]))) for p in dists]
    return sorted(ranked, key=lambda r: -r.mean)


@dataclass
class Convergence:
    stage: str
    best_so_far: list[float]      # after each trial, in the order they started
    epochs_spent: list[int]       # cumulative epochs after each trial
    gain_second_half: float       # how much the best moved over the second half of the trials
    noise: float                  # what counts as no movement (seed std where known)
    converged: bool


def convergence(stage: str, trials: list[TrialView], mode: str, noise: float | None) -> Convergence | None:
    done = [t for t in trials if t.value is not None and math.isfinite(t.value)]
    if len(done) < 4:
        return None
    curve, spent, running, total = [], [], None, 0
    for t in trials:
        total += t.trained_epochs
        if t.value is not None and math.isfinite(t.value):
            running = t.value if running is None else best([running, t.value], mode)
        curve.append(running if running is not None else math.nan)
        spent.append(total)
    half = curve[len(curve) // 2 - 1]
    gain = math.inf if math.isnan(half) else abs(curve[-1] - half)  # nothing finished in the first half
    noise = noise if noise else 0.01 * max(abs(curve[-1]), 1e-12)
    return Convergence(stage, curve, spent, gain, noise, gain <= noise)


@dataclass
class Finalists:
    rows: list[dict]             # seeds.json's ranked configs: values per seed, mean, std, ci95
    lead_p: float | None         # Welch's t-test of the winner against the runner-up

    @property
    def lead_real(self) -> bool | None:
        return None if self.lead_p is None else self.lead_p < 0.05


def finalists(seeds: dict | None) -> Finalists | None:
    if not seeds or not seeds.get("ranked"):
        return None
    rows = seeds["ranked"]
    p = None
    if len(rows) >= 2:
        from scipy import stats

        a, b = (list(_finite(r["values"].values())) for r in rows[:2])
        if len(a) >= 2 and len(b) >= 2 and (np.std(a) > 0 or np.std(b) > 0):
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Finalists(rows, p)


@dataclass
class Analysis:
    sweep: SweepView
    params: list[str]
    log: dict
    importance: list[Importance]
    diagnoses: dict[str, str]                      # trial id -> rule name
    convergence: list[Convergence]
    finalists: Finalists | None
    advice: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in RULES}
        for name in self.diagnoses.values():
            out[name] += 1
        return out

    def ranked(self) -> list[TrialView]:
        """Every searched trial with a value, best first."""
        return ranked(searched([t for s in self.sweep.stages for t in s.trials]), self.sweep.mode, lambda t: t.value)

    def top(self, k: int = 5) -> list[TrialView]:
        return self.ranked()[:k]


def _ranges(spec: dict | None) -> dict:
    return {name: p for name, p in ((spec or {}).get("parameters") or {}).items() if isinstance(p, dict)}


def _at_edge(value: float, p: dict, log: bool) -> str | None:
    lo, hi = p.get("min"), p.get("max")
    if lo is None or hi is None or not isinstance(value, (int, float)) or hi <= lo:
        return None
    warp = (lambda x: math.log(x)) if log and lo > 0 and value > 0 else (lambda x: x)
    where = (warp(value) - warp(lo)) / (warp(hi) - warp(lo))
    if where <= 0.1 and lo != 0:  # a bound of 0 (dropout, momentum) is where the parameter ends
        return "bottom"
    return "top" if where >= 0.9 else None


def advise(a: Analysis) -> list[str]:
    out = []
    top = a.top(1)
    ranges = _ranges(a.sweep.spec)
    important = [i.param for i in a.importance if i.mean >= 0.1] or [i.param for i in a.importance[:2]]
    if top:
        for name in important:
            edge = name in ranges and _at_edge(top[0].config.get(name), ranges[name], a.log.get(name, False))
            if edge:
                more = "higher" if edge == "top" else "lower"
                out.append(f"the best {name} ({top[0].config[name]:.4g}) sits at the {edge} of its range "
                           f"[{ranges[name]['min']:g}, {ranges[name]['max']:g}]: widen it toward {more} values")
        for i in a.importance:
            if i.mean < 0.02 and len(a.importance) > 2 and i.param in top[0].config:
                out.append(f"{i.param} barely matters here (importance {i.mean:.3f}): fix it at "
                           f"{top[0].config[i.param]!r} and spend the trials on {', '.join(important[:2])}")
    total = sum(len(s.trials) for s in a.sweep.stages if s.name in SEARCH_STAGES) or 1
    for name, n in a.counts().items():
        if n / total >= 0.25:
            out.append(f"{n} of {total} searched trials were {RULES[name].name}: {RULES[name].advice}")
    for c in a.convergence:
        if not c.converged:
            out.append(f"{c.stage} was still improving in its second half ({c.gain_second_half:.4g} > noise "
                       f"{c.noise:.4g}): give it more trials")
    if a.finalists and a.finalists.lead_real is False:
        out.append(f"the winner's lead over the runner-up is within seed noise (Welch p = {a.finalists.lead_p:.2f}): "
                   "treat the finalists as equals; more seeds would separate them")
    return out or ["nothing stands out: the search converged inside its ranges with few failures"]


def analyse(sweep: SweepView) -> Analysis:
    ranges = _ranges(sweep.spec)
    from ..spec.model import Param

    log = {}
    for name, p in ranges.items():
        try:
            log[name] = Param.model_validate(p).is_log
        except ValueError:
            log[name] = False
    trials = searched([t for s in sweep.stages for t in s.trials])
    seen = {p for t in trials for p in t.config}
    params = [p for p in ranges if p in seen] if ranges else sorted(seen)
    if not ranges:  # a stage without the pipeline's spec: a wide positive range is taken as log-scale
        for p in params:
            values = [t.config[p] for t in trials if isinstance(t.config.get(p), (int, float))]
            log[p] = bool(values) and min(values) > 0 and max(values) / min(values) >= 100
    noise = None
    fin = finalists(sweep.seeds)
    if fin and fin.rows and fin.rows[0].get("std"):
        noise = fin.rows[0]["std"]
    conv = [c for s in sweep.stages if s.name in SEARCH_STAGES
            for c in [convergence(s.name, s.trials, sweep.mode, noise)] if c]
    diagnoses = {t.trial_id: d for s in sweep.stages for t in s.trials for d in [diagnose(t)] if d}
    a = Analysis(sweep, params, log, importance(trials, params, sweep.mode, log), diagnoses, conv, fin)
    a.advice = advise(a)
    return a

"""The search space of a spec: sampling, grids, conditionals, constraints, derived values, and the
equivalent Ray Tune and HyperOpt spaces. Sampling uses Ray Tune's own Domain objects."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .expr import Expr, ExprError, Missing
from .model import Param, Spec
from .settings import TrainSettings

FEASIBILITY_DRAWS = 2000


def tune_domain(p: Param):
    from ray import tune

    d = p.distribution
    if d == "uniform":
        return tune.uniform(p.min, p.max)
    if d == "loguniform":
        return tune.loguniform(p.min, p.max)
    if d == "quniform":
        return tune.quniform(p.min, p.max, p.q)
    if d == "qloguniform":
        return tune.qloguniform(p.min, p.max, p.q)
    if d == "int":
        return tune.randint(p.min, p.max + 1)  # Tune's upper bound is exclusive; ours is inclusive
    if d == "logint":
        return tune.lograndint(p.min, p.max + 1)
    if d in ("choice", "grid"):
        return tune.choice(p.values)
    if d == "normal":
        return tune.randn(p.mu, p.sigma)
    if d == "qnormal":
        return tune.qrandn(p.mu, p.sigma, p.q)
    raise ValueError(d)


def clean(p: Param, value):
    """Native Python types, with quantised floats snapped to their grid (hyperopt returns numpy floats)."""
    if isinstance(value, np.generic):
        value = value.item()
    if p.distribution in ("int", "logint"):
        return int(round(value))
    if p.q is not None and p.distribution != "constant":
        value = float(f"{round(value / p.q) * p.q:.12g}")
    return value


@dataclass
class Rejection:
    """Why sampling found no feasible config: constraint source -> how many draws it rejected."""
    draws: int
    by_constraint: dict = field(default_factory=dict)


class Space:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.params = dict(self._ordered(spec.parameters))
        self.constraints = [Expr(c) for c in spec.constraints]
        self.derived = {k: Expr(v) for k, v in spec.derived.items()}
        self.grid_names = [n for n, p in self.params.items()
                           if p.distribution == "grid" or (spec.search.method == "grid" and p.distribution == "choice"
                                                           and p.parent is None)]
        self._domains = {n: tune_domain(p) for n, p in self.params.items() if p.distribution != "constant"}

    @staticmethod
    def _ordered(params: dict[str, Param]):
        """Parents before children (check_spec has ruled out cycles)."""
        done: list = []
        while len(done) < len(params):
            for name, p in params.items():
                if name not in done and (p.parent is None or p.parent in done):
                    done.append(name)
        return [(n, params[n]) for n in done]

    def children(self, name: str) -> list[str]:
        return [n for n, p in self.params.items() if p.parent == name]

    def is_active(self, name: str, config: dict) -> bool:
        p = self.params[name]
        return p.parent is None or (p.parent in config and config[p.parent] in p.parent_values)

    # ---- sampling --------------------------------------------------------------------------

    def _walk(self, pick, fixed: dict | None) -> dict:
        """A config built parent first: pinned values, constants, else pick(name, param)."""
        config: dict = {}
        for name, p in self.params.items():
            if not self.is_active(name, config):
                continue
            if fixed and name in fixed:
                config[name] = fixed[name]
            elif p.distribution == "constant":
                config[name] = p.value
            else:
                config[name] = pick(name, p)
        return config

    def sample(self, rng: np.random.Generator, fixed: dict | None = None) -> dict:
        """One draw of the parameters (inactive conditionals left out); `fixed` pins some values."""
        return self._walk(lambda name, p: clean(p, self._domains[name].sample(random_state=rng)), fixed)

    def grid(self) -> list[dict]:
        """Every combination of the enumerated (grid) parameters."""
        names = self.grid_names
        return [dict(zip(names, combo, strict=False)) for combo in itertools.product(*(self.params[n].values for n in names))]

    def env(self, config: dict) -> dict:
        """Names an expression may use: trainer defaults < fixed < epochs < the trial's values."""
        env = TrainSettings().model_dump()
        env["epochs"] = self.spec.stopping.max_epochs
        env.update(self.spec.fixed)
        env.update(config)
        return env

    def with_derived(self, config: dict) -> dict:
        """The config a trial sees: fixed settings, parameters, then derived values in file order."""
        out = {**self.spec.fixed, **config}
        env = self.env(config)
        for name, expr in self.derived.items():
            try:
                env[name] = out[name] = expr(env)
            except Missing:
                continue  # depends on an inactive conditional parameter
        return out

    def violated(self, config: dict) -> Expr | None:
        """The first constraint the config (with derived values) breaks, or None."""
        env = self.env(self.with_derived(config))
        for c in self.constraints:
            try:
                ok = c(env)
            except Missing:
                continue  # a constraint on an inactive parameter does not apply
            if not ok:
                return c
        return None

    def sample_feasible(self, rng: np.random.Generator, fixed: dict | None = None, tries: int = 1000) -> dict | None:
        for _ in range(tries):
            config = self.sample(rng, fixed)
            if self.violated(config) is None:
                return config
        return None

    def center(self, fixed: dict | None = None) -> dict:
        """A typical config: each range's middle (geometric for log scale), each choice's middle value."""
        def middle(name, p):
            if p.is_categorical:
                return p.values[len(p.values) // 2]
            if p.min is None:
                return clean(p, p.mu)
            return clean(p, math.sqrt(p.min * p.max) if p.is_log else (p.min + p.max) / 2)
        return self._walk(middle, fixed)

    def contains(self, config: dict) -> bool:
        """Whether a config (parameters only) could have come from this space: active parameters
        present and inside their support, inactive ones absent, every constraint met."""
        for name, p in self.params.items():
            active = self.is_active(name, config)
            if active != (name in config):
                return False
            if not active:
                continue
            v = config[name]
            if p.distribution == "constant" and v != p.value or p.is_categorical and v not in p.values:
                return False
            tol = 1e-9 * max(1.0, abs(p.max or 0))  # quantised values snap to k*q: float fuzz at the bounds
            if p.min is not None and not p.min - tol <= v <= p.max + tol:
                return False
        return self.violated(config) is None

    def configs(self, num_samples: int, seed: int) -> list[dict]:
        """The trial configs of a random or grid search: num_samples distinct draws per feasible grid
        point (Tune's semantics), infeasible draws re-drawn. A draw equal to an earlier one is drawn
        again (the trainer is seeded: it would be the same trial), so a small discrete space yields
        fewer configs, and a point with nothing left to draw yields one."""
        rng = np.random.default_rng(seed)
        out = []
        for point in self.grid():
            drawn: list[dict] = []
            for _ in range(10 * num_samples):
                if len(drawn) == num_samples or (config := self.sample_feasible(rng, point)) is None:
                    break
                if config not in drawn:
                    drawn.append(config)
            out += drawn
        return out

    def check_feasible(self, draws: int = FEASIBILITY_DRAWS) -> Rejection | None:
        """None if some config satisfies every constraint; else what rejected the draws."""
        if not self.constraints:
            return None
        rng = np.random.default_rng(0)
        rejection = Rejection(0)
        points = self.grid()
        for i in range(max(draws, len(points))):
            config = self.sample(rng, points[i % len(points)])
            bad = self.violated(config)
            if bad is None:
                return None
            rejection.draws += 1
            rejection.by_constraint[bad.source] = rejection.by_constraint.get(bad.source, 0) + 1
        return rejection

    # ---- other libraries' spaces -------------------------------------------------------------

    def tune_space(self) -> dict:
        """A Ray Tune param_space: grid parameters as grid_search, conditionals as sample_from
        (None where inactive). Constraints cannot be expressed here; raysweep's searchers apply them."""
        from ray import tune

        space = {}
        for name, p in self.params.items():
            if name in self.grid_names:
                space[name] = tune.grid_search(p.values)
            elif p.parent is None:
                space[name] = p.value if p.distribution == "constant" else self._domains[name]
            else:
                space[name] = tune.sample_from(_Conditional(name, p, self._domains.get(name)))
        return space

    def hyperopt_space(self) -> dict:
        """HyperOpt's native space: a conditional parameter lives inside its parent's `hp.choice` branch."""
        return {n: self._hp(n, "") for n, p in self.params.items() if p.parent is None}

    def _hp(self, name: str, prefix: str):
        from hyperopt import hp

        p, label = self.params[name], prefix + name
        d = p.distribution
        if p.is_categorical:
            kids = self.children(name)
            if not kids:
                return hp.choice(label, list(p.values))
            return hp.choice(label, [
                {name: v, **{k: self._hp(k, f"{label}={v}/") for k in kids if v in self.params[k].parent_values}}
                for v in p.values
            ])
        if d == "constant":
            return p.value
        if d == "uniform":
            return hp.uniform(label, p.min, p.max)
        if d == "loguniform":
            return hp.loguniform(label, math.log(p.min), math.log(p.max))
        if d == "quniform":
            return hp.quniform(label, p.min, p.max, p.q)
        if d == "qloguniform":
            return hp.qloguniform(label, math.log(p.min), math.log(p.max), p.q)
        if d == "int":
            return hp.randint(label, p.min, p.max + 1)
        if d == "logint":
            return hp.qloguniform(label, math.log(p.min), math.log(p.max), 1)
        if d == "normal":
            return hp.normal(label, p.mu, p.sigma)
        if d == "qnormal":
            return hp.qnormal(label, p.mu, p.sigma, p.q)
        raise ValueError(d)

    def hyperopt_point(self, config: dict) -> dict:
        """A flat config as HyperOpt's trial vals: label -> value, choices as indices."""
        point = {}

        def visit(name, prefix):
            p, label = self.params[name], prefix + name
            if name not in config or p.distribution == "constant":
                return
            value = config[name]
            if p.is_categorical:
                point[label] = p.values.index(value)
                for kid in self.children(name):
                    if value in self.params[kid].parent_values:
                        visit(kid, f"{label}={value}/")
            else:
                point[label] = value

        for n, p in self.params.items():
            if p.parent is None:
                visit(n, "")
        return point

    def from_hyperopt(self, sample: dict) -> dict:
        """Flatten HyperOpt's nested choice branches back to one config of native values."""
        flat: dict = {}

        def walk(d):
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v)
                else:
                    flat[k] = v

        walk(sample)
        return {n: clean(p, flat[n]) for n, p in self.params.items() if n in flat}


class _Conditional:
    """tune.sample_from callable for a conditional parameter (picklable, unlike a lambda)."""

    def __init__(self, name, param, domain):
        self.name, self.param, self.domain = name, param, domain

    def __call__(self, config):
        parent = config.get(self.param.parent)
        if parent is None or parent not in self.param.parent_values:
            return None
        if self.domain is None:
            return self.param.value
        return clean(self.param, self.domain.sample())


__all__ = ["Space", "tune_domain", "clean", "ExprError"]

"""The search space of a spec: sampling, grids, conditionals, constraints and derived values. Each
parameter's family (distributions.py) samples and checks its own values; the HyperOpt and Tune forms
of a space are built in sweep/."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .expr import Expr, ExprError, Missing
from .model import Param, Spec
from .settings import TrainSettings

FEASIBILITY_DRAWS = 2000
CHECKED_DRAWS = 20  # draws whose derived values and constraints validation always evaluates


def clean(p: Param, value):
    """A native value on the parameter's grid (hyperopt and Tune return numpy floats)."""
    return p.family.clean(p, value)


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
                           if p.family.grid or (spec.search.method == "grid" and p.is_categorical and p.parent is None)]

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
            config[name] = fixed[name] if fixed and name in fixed else pick(p)
        return config

    def sample(self, rng: np.random.Generator, fixed: dict | None = None) -> dict:
        """One draw of the parameters (inactive conditionals left out); `fixed` pins some values."""
        return self._walk(lambda p: p.family.sample(p, rng), fixed)

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
            except ExprError as e:
                e.where = ("derived", name)
                raise
        return out

    def violated(self, config: dict) -> Expr | None:
        """The first constraint the config (with derived values) breaks, or None."""
        env = self.env(self.with_derived(config))
        for i, c in enumerate(self.constraints):
            try:
                ok = c(env)
            except Missing:
                continue  # a constraint on an inactive parameter does not apply
            except ExprError as e:
                e.where = ("constraints", i)
                raise
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
        return self._walk(lambda p: p.family.center(p), fixed)

    def contains(self, config: dict) -> bool:
        """Whether a config (parameters only) could have come from this space: active parameters
        present and inside their support, inactive ones absent, every constraint met."""
        for name, p in self.params.items():
            active = self.is_active(name, config)
            if active != (name in config):
                return False
            if not active:
                continue
            if not p.family.contains(p, config[name]):
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
        """None if some config satisfies every constraint; else what rejected the draws. Derived values
        are computed on the draws too (ExprError when one fails), so what validates, a trial can run."""
        rng = np.random.default_rng(0)
        rejection, feasible = Rejection(0), False
        points = self.grid()
        for i in range(max(draws, len(points))):
            if feasible and i >= CHECKED_DRAWS:
                return None
            config = self.sample(rng, points[i % len(points)])
            bad = self.violated(config)
            if bad is None:
                feasible = True
                continue
            rejection.draws += 1
            rejection.by_constraint[bad.source] = rejection.by_constraint.get(bad.source, 0) + 1
        return None if feasible else rejection


__all__ = ["Space", "clean", "ExprError"]

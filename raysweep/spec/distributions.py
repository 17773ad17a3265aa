"""Parameter distributions, one class per family (as Optuna's distributions): the keys a family takes,
its checks, sampling, snapping, its middle, its support, narrowing around good values, and what it is
in Ray Tune's and HyperOpt's terms. Adding a distribution means adding one class here.

Methods take the `Param` (the validated spec entry) they act on; a family holds no per-parameter state."""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .errors import allowed


class At(ValueError):
    """A validation error at a sub-field of the model being validated."""

    def __init__(self, field: str | tuple, message: str):
        super().__init__(message)
        self.field = (field,) if isinstance(field, (str, int)) else tuple(field)


def _native(value):
    return value.item() if isinstance(value, np.generic) else value


def _snap(value: float, q: float, up: bool | None = None) -> float:
    """value on the grid of q: nearest, or the next step up/down."""
    ratio = value / q
    steps = round(ratio) if up is None else math.ceil(ratio - 1e-9) if up else math.floor(ratio + 1e-9)
    return float(f"{steps * q:.12g}")


class Family:
    name: ClassVar[str]
    takes: ClassVar[frozenset] = frozenset()  # keys besides `distribution` and `when`
    needs: ClassVar[frozenset] = frozenset()
    log: ClassVar[bool] = False
    categorical: ClassVar[bool] = False
    grid: ClassVar[bool] = False        # enumerated, never sampled
    continuous: ClassVar[bool] = False  # a real-valued range (the LR range test can set its bounds)
    sampled: ClassVar[bool] = True      # a searcher draws it (a constant is only written into configs)

    def check(self, p) -> None:
        """Raise At(field, message) for a value the family cannot use."""

    def sample(self, p, rng: np.random.Generator):
        raise NotImplementedError

    def clean(self, p, value):
        """A native Python value on the family's grid (HyperOpt and Tune return numpy values)."""
        return _native(value)

    def center(self, p):
        raise NotImplementedError

    def contains(self, p, value) -> bool:
        raise NotImplementedError

    def edges(self, p) -> list[tuple[tuple, Any]]:
        """(key path, value) of the values that bound what it can take (checked against the trainer)."""
        return []

    def refuse(self, p, value) -> tuple[str, str] | None:
        """(message, fix) when `value` is not one this parameter can take."""
        if self.contains(p, value):
            return None
        return f"{value!r} is not a value of this {self.name} parameter", "give a value it can take"

    def narrow(self, p, seen: list, margin: float) -> dict:
        """Spec data for the family narrowed around `seen` (values of the best configs)."""
        return data_of(p)

    def tune(self, p):
        """Ray Tune's search domain (PBT resamples mutations from it)."""
        raise NotImplementedError

    def hyperopt(self, p, label: str, options: list | None = None):
        """HyperOpt's expression; `options` are a choice's branches when children hang off it."""
        raise NotImplementedError


def all_numbers(values) -> bool:
    """Every value an int or a float: ordered, unlike names (YAML's true and false are not numbers here)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def data_of(p, **changes) -> dict:
    """A parameter as spec data that validates back to an equal Param."""
    return {**p.model_dump(mode="json", exclude_unset=True), "distribution": p.distribution, **changes}


# -- ranges ---------------------------------------------------------------------------------------
class Uniform(Family):
    name = "uniform"
    takes = needs = frozenset({"min", "max"})
    continuous = True

    def check(self, p):
        for k in ("min", "max"):
            v = getattr(p, k)
            if isinstance(v, bool) or not math.isfinite(v):
                raise At(k, f"must be a finite number, got {v!r}")
        if not p.min < p.max:
            raise At("max", f"min must be < max (got min={p.min}, max={p.max}); swap or widen them")
        if self.log and p.min <= 0:
            raise At("min", f"log-scale bounds must be > 0 (got min={p.min}); use e.g. 1e-6")

    def _warp(self, x):  # the axis sampling and narrowing are uniform on
        return math.log(x) if self.log else x

    def _unwarp(self, x):
        return math.exp(x) if self.log else x

    def sample(self, p, rng):
        return self.clean(p, self._unwarp(rng.uniform(self._warp(p.min), self._warp(p.max))))

    def center(self, p):
        return self.clean(p, self._unwarp((self._warp(p.min) + self._warp(p.max)) / 2))

    def contains(self, p, value) -> bool:
        tol = 1e-9 * max(1.0, abs(p.max))  # quantised values snap to k*q: float fuzz at the bounds
        return isinstance(value, (int, float)) and p.min - tol <= value <= p.max + tol

    def edges(self, p):
        return [(("min",), p.min), (("max",), p.max)]

    def refuse(self, p, value):
        if self.contains(p, value):
            return None
        return f"{value!r} is outside [{p.min}, {p.max}]", "give a value inside the parameter's range"

    def narrow(self, p, seen, margin):
        """The hull of the values widened by margin x the original width on each side (in log space
        for log scales), clipped to the original bounds."""
        m = margin * (self._warp(p.max) - self._warp(p.min))
        lo = max(p.min, self._unwarp(self._warp(min(seen)) - m))
        hi = min(p.max, self._unwarp(self._warp(max(seen)) + m))
        return self.bounded(p, lo, hi, seen[0])

    def bounded(self, p, lo: float, hi: float, fallback) -> dict:
        """Spec data for the same family on [lo, hi] (a constant when nothing is left between them)."""
        lo, hi = self._inside(p, lo, hi)
        if not lo < hi:
            return {"distribution": "constant", "value": fallback, **_when(p)}
        return {"distribution": self.name, "min": lo, "max": hi, **_when(p)}

    def _inside(self, p, lo, hi):
        return lo, hi

    def tune(self, p):
        from ray import tune

        return (tune.loguniform if self.log else tune.uniform)(p.min, p.max)

    def hyperopt(self, p, label, options=None):
        from hyperopt import hp

        if self.log:
            return hp.loguniform(label, math.log(p.min), math.log(p.max))
        return hp.uniform(label, p.min, p.max)


class LogUniform(Uniform):
    name = "loguniform"
    log = True


class QUniform(Uniform):
    """A range on the grid of q; bounds are multiples of q so every sample stays inside them."""
    name = "quniform"
    takes = needs = frozenset({"min", "max", "q"})

    def check(self, p):
        super().check(p)
        _check_q(p)
        if p.q > (p.max - p.min) * (1 + 1e-9):  # float fuzz: 0.4 - 0.1 * 3 < 0.1
            raise At("q", f"q={p.q} is wider than the range [{p.min}, {p.max}]; use a smaller q")
        for k in ("min", "max"):
            ratio = getattr(p, k) / p.q
            if abs(ratio - round(ratio)) > 1e-9 * max(1.0, abs(ratio)):
                raise At(k, f"{k}={getattr(p, k)} is not a multiple of q={p.q}; "
                            f"use a multiple so every sample stays inside [min, max]")

    def clean(self, p, value):
        return _snap(_native(value), p.q)

    def _inside(self, p, lo, hi):
        lo, hi = _snap(lo, p.q, up=False), _snap(hi, p.q, up=True)
        if p.min is not None:  # k*q may miss a bound by float fuzz: then it is the bound
            tol = 1e-9 * max(1.0, abs(p.max))
            lo = p.min if lo <= p.min + tol else lo
            hi = p.max if hi >= p.max - tol else hi
        return (lo, hi) if hi - lo >= p.q * (1 - 1e-9) else (lo, lo)

    def bounded(self, p, lo, hi, fallback):
        data = super().bounded(p, lo, hi, fallback)
        return {**data, "q": p.q} if data["distribution"] != "constant" else data

    def tune(self, p):
        from ray import tune

        return (tune.qloguniform if self.log else tune.quniform)(p.min, p.max, p.q)

    def hyperopt(self, p, label, options=None):
        from hyperopt import hp

        if self.log:
            return hp.qloguniform(label, math.log(p.min), math.log(p.max), p.q)
        return hp.quniform(label, p.min, p.max, p.q)


class QLogUniform(QUniform):
    name = "qloguniform"
    log = True


class Int(Uniform):
    """Whole numbers in [min, max], both included."""
    name = "int"
    continuous = False

    def check(self, p):
        super().check(p)
        for k in ("min", "max"):
            v = getattr(p, k)
            if float(v) != int(v):
                raise At(k, f"distribution '{self.name}' needs whole numbers, got {v}")
            setattr(p, k, int(v))

    def clean(self, p, value):
        return int(round(_native(value)))

    def sample(self, p, rng):
        if self.log:  # uniform in log space over [min, max + 1), floored: every integer reachable
            return min(p.max, int(math.floor(math.exp(rng.uniform(math.log(p.min), math.log(p.max + 1))))))
        return int(rng.integers(p.min, p.max + 1))

    def _inside(self, p, lo, hi):
        return max(p.min, math.floor(lo)), min(p.max, math.ceil(hi))

    def tune(self, p):
        from ray import tune

        return (tune.lograndint if self.log else tune.randint)(p.min, p.max + 1)  # Tune's upper bound is exclusive

    def hyperopt(self, p, label, options=None):
        from hyperopt import hp

        if self.log:
            return hp.qloguniform(label, math.log(p.min), math.log(p.max), 1)
        return hp.randint(label, p.min, p.max + 1)


class LogInt(Int):
    name = "logint"
    log = True


# -- unbounded ------------------------------------------------------------------------------------
class Normal(Family):
    name = "normal"
    takes = frozenset({"mu", "sigma"})
    q_family: ClassVar[str] = "uniform"  # what narrowing turns it into: a bounded range

    def check(self, p):
        if not p.sigma > 0:
            raise At("sigma", f"sigma must be > 0 (got {p.sigma})")

    def sample(self, p, rng):
        return self.clean(p, rng.normal(p.mu, p.sigma))

    def center(self, p):
        return self.clean(p, p.mu)

    def contains(self, p, value) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value)

    def narrow(self, p, seen, margin):
        """Uniform over the hull of the values widened by margin x 4 sigma."""
        m = margin * 4 * p.sigma
        return FAMILIES[self.q_family].bounded(p, min(seen) - m, max(seen) + m, seen[0])

    def tune(self, p):
        from ray import tune

        return tune.randn(p.mu, p.sigma)

    def hyperopt(self, p, label, options=None):
        from hyperopt import hp

        return hp.normal(label, p.mu, p.sigma)


class QNormal(Normal):
    name = "qnormal"
    takes = frozenset({"mu", "sigma", "q"})
    needs = frozenset({"q"})
    q_family = "quniform"

    def check(self, p):
        super().check(p)
        _check_q(p)

    def clean(self, p, value):
        return _snap(_native(value), p.q)

    def tune(self, p):
        from ray import tune

        return tune.qrandn(p.mu, p.sigma, p.q)

    def hyperopt(self, p, label, options=None):
        from hyperopt import hp

        return hp.qnormal(label, p.mu, p.sigma, p.q)


# -- finite sets ----------------------------------------------------------------------------------
class Choice(Family):
    name = "choice"
    takes = needs = frozenset({"values"})
    categorical = True

    def check(self, p):
        if not p.values:
            raise At("values", "must list at least one value")
        for i, v in enumerate(p.values):
            if index_of(p.values[:i], v) is not None:
                raise At(("values", i), f"duplicate value {v!r}; list each value once")

    def sample(self, p, rng):
        return p.values[int(rng.integers(len(p.values)))]

    def center(self, p):
        return p.values[len(p.values) // 2]

    def contains(self, p, value) -> bool:
        return index_of(p.values, value) is not None

    def edges(self, p):
        return [(("values", i), v) for i, v in enumerate(p.values)]

    def refuse(self, p, value):
        if self.contains(p, value):
            return None
        return f"{value!r} is not one of the values", allowed(p.values)

    def narrow(self, p, seen, margin):
        """Unordered values: those seen. Numbers are ordered, so they narrow like a range over their
        sorted positions: the hull of the values seen widened by margin x the steps, rounded up (a
        neighbour each side at any margin > 0), since a short coarse stage ranks sizes as unreliably
        as it ranks a learning rate."""
        if not all_numbers(p.values):
            return {"distribution": self.name, "values": [v for v in p.values if v in seen], **_when(p)}
        order = sorted(p.values)
        at = [order.index(v) for v in p.values if v in seen]
        pad = math.ceil(margin * (len(order) - 1) - 1e-9)
        lo, hi = order[max(0, min(at) - pad)], order[min(len(order) - 1, max(at) + pad)]
        return {"distribution": self.name, "values": [v for v in p.values if lo <= v <= hi], **_when(p)}

    def tune(self, p):
        return list(p.values)  # PBT resamples a list uniformly

    def hyperopt(self, p, label, options=None):
        """A choice of indices (or, for a parent, of branches holding its index): HyperOpt would
        flatten a dict value into the config and turn a list into a tuple."""
        from hyperopt import hp

        return hp.choice(label, options if options is not None else list(range(len(p.values))))

    def clean(self, p, value):
        return p.values[int(value)]


class Grid(Choice):
    """Every value is run (Tune's grid_search), never sampled."""
    name = "grid"
    grid = True


class Constant(Family):
    name = "constant"
    takes = needs = frozenset({"value"})
    sampled = False

    def sample(self, p, rng):
        return p.value

    def center(self, p):
        return p.value

    def contains(self, p, value) -> bool:
        return value == p.value

    def edges(self, p):
        return [(("value",), p.value)]

    def tune(self, p):
        return p.value

    def hyperopt(self, p, label, options=None):
        return p.value


def index_of(values: list, value) -> int | None:
    """Where value is in values, types compared too: True is not 1, nor 1.0 the same choice as 1."""
    return next((i for i, v in enumerate(values) if type(v) is type(value) and v == value), None)


def _check_q(p) -> None:
    if not p.q > 0:
        raise At("q", f"q must be > 0 (got {p.q})")


def _when(p) -> dict:
    return {"when": p.when} if p.when else {}


FAMILIES: dict[str, Family] = {f.name: f() for f in (Uniform, LogUniform, QUniform, QLogUniform, Int, LogInt,
                                                        Choice, Grid, Normal, QNormal, Constant)}
NAMES = tuple(FAMILIES)


def infer(given: set, values: dict[str, Any]) -> str | None:
    """The family a W&B-style entry without `distribution:` means, from the keys it gives."""
    if "value" in given:
        return "constant"
    if "values" in given:
        return "choice"
    if {"min", "max"} <= given:
        if "q" in given:
            return "quniform"
        return "int" if isinstance(values["min"], int) and isinstance(values["max"], int) else "uniform"
    if {"mu", "sigma"} & given:
        return "normal"
    return None

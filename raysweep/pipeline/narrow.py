"""Coarse-to-fine (guide 002, phase 2): the space narrowed around the best configs of a wide search."""
from __future__ import annotations

import math

from ..spec import Param, Spec


def param_data(p: Param) -> dict:
    """A parameter as spec data that validates back to an equal Param."""
    return {**p.model_dump(mode="json", exclude_unset=True), "distribution": p.distribution}


def _snap(value: float, q: float, up: bool) -> float:
    steps = math.ceil(value / q - 1e-9) if up else math.floor(value / q + 1e-9)
    return float(f"{steps * q:.12g}")


def narrow_param(p: Param, seen: list, margin: float) -> dict | None:
    """The narrowed form of one parameter given its values in the top configs (None: drop it).
    Ranges become the hull of the values widened by `margin` x the original width on each side,
    measured in log space for log-scale parameters and clipped to the original bounds; choices keep
    the values seen; normal distributions become uniform over the hull widened by margin x 4 sigma."""
    if not seen:
        return None
    d = p.distribution
    when = {"when": p.when} if p.when else {}
    if d == "constant":
        return param_data(p)
    if p.is_categorical:
        return {"distribution": d, "values": [v for v in p.values if v in seen], **when}
    lo_k, hi_k = min(seen), max(seen)
    if p.min is None:  # normal, qnormal: unbounded
        lo, hi = -math.inf, math.inf
        m = margin * 4 * p.sigma
        new_lo, new_hi = lo_k - m, hi_k + m
    elif p.is_log:
        lo, hi = p.min, p.max
        m = margin * math.log(hi / lo)
        new_lo, new_hi = max(lo, lo_k * math.exp(-m)), min(hi, hi_k * math.exp(m))
    else:
        lo, hi = p.min, p.max
        m = margin * (hi - lo)
        new_lo, new_hi = max(lo, lo_k - m), min(hi, hi_k + m)
    if d in ("int", "logint"):
        new_lo, new_hi = max(lo, math.floor(new_lo)), min(hi, math.ceil(new_hi))
    elif p.q is not None:
        tol = 1e-9 * max(1.0, abs(hi))  # k*q may miss a bound by float fuzz: then it is the bound
        new_lo, new_hi = _snap(new_lo, p.q, False), _snap(new_hi, p.q, True)
        new_lo = lo if new_lo <= lo + tol else new_lo
        new_hi = hi if new_hi >= hi - tol else new_hi
    if not new_lo < new_hi or p.q is not None and new_hi - new_lo < p.q * (1 - 1e-9):  # a single value is left
        return {"distribution": "constant", "value": seen[0], **when}
    dist = {"normal": "uniform", "qnormal": "quniform"}.get(d, d)
    return {"distribution": dist, "min": new_lo, "max": new_hi, **({"q": p.q} if p.q is not None else {}), **when}


def narrow_spec(spec: Spec, top: list[dict], margin: float) -> Spec:
    """The spec with its parameters narrowed around `top` (parameter values of the best configs).
    Conditional parameters whose condition no top config meets are dropped; a condition keeps only
    the parent values still searched."""
    params: dict = {}
    for name, p in spec.parameters.items():
        data = narrow_param(p, [c[name] for c in top if name in c], margin)
        if data is None:
            continue
        if p.parent is not None:
            parent = params.get(p.parent, {})
            allowed = parent.get("values", [parent.get("value")])
            kept = [v for v in p.parent_values if v in allowed]
            if not kept:
                continue
            data["when"] = {p.parent: kept if isinstance(p.when[p.parent], list) else kept[0]}
        params[name] = data
    return spec.derive(parameters=params)

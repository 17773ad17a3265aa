"""Stage 1: the LR range test, run on the cluster like a trial, and the coarse range it suggests.

The test measures the learning rate the optimizer sees. A spec may search another parameter that
sets it (`base_lr` with `lr = base_lr * batch_size / 32`, or lr_scaling): the suggestion is mapped
back through that proportion. When the spec searches the optimizer, each optimizer gets its own test
and the coarse range covers all their suggestions (or stays the spec's when one suggests nothing)."""
from __future__ import annotations

import math
from dataclasses import asdict

from .. import console
from ..spec import Space, Spec, TrainSettings
from ..spec.distributions import data_of
from ..spec.settings import scaled_lr
from ..sweep.progress import error_line
from ..sweep.resources import plan
from ..train.lr_range import range_test, suggest
from ..train.run import spec_dirs


def effective_lr(space: Space, config: dict, param: str, value: float) -> float:
    return scaled_lr(TrainSettings.model_validate(space.with_derived({**config, param: value})))


def lr_per_unit(space: Space, config: dict, param: str, at: float) -> float | None:
    """The optimizer's lr per unit of `param` around `at`, or None if it is not proportional."""
    try:
        one, two = effective_lr(space, config, param, at), effective_lr(space, config, param, 2 * at)
    except ValueError:
        return None
    ratio = one / at
    return ratio if ratio > 0 and math.isclose(two, 2 * one, rel_tol=1e-6) else None


def lr_param(spec: Spec) -> str:
    """The parameter whose range the test sets: the spec's choice, else `lr`, else the one continuous
    parameter a derived `lr` is computed from (`lr: base_lr * batch_size / 32` -> base_lr)."""
    if spec.stages.lr_range_test.param or "lr" in spec.parameters or "lr" not in spec.derived:
        return spec.stages.lr_range_test.param or "lr"
    from ..spec import Expr

    used = [n for n in sorted(Expr(spec.derived["lr"]).names)
            if n in spec.parameters and spec.parameters[n].family.continuous]
    return used[0] if len(used) == 1 else "lr"


def typical(space: Space, fixed: dict | None) -> dict:
    """The space's center if it meets the constraints, else a seeded feasible draw."""
    import numpy as np

    center = space.center(fixed)
    return center if space.violated(center) is None else space.sample_feasible(np.random.default_rng(0), fixed) or center


def run_lr_test(spec: Spec, log=console.say) -> dict:
    import ray

    lrt = spec.stages.lr_range_test
    space = Space(spec)
    param = lr_param(spec)
    p = space.params.get(param)
    searched = p is not None and p.family.continuous and p.min > 0 and p.parent is None
    opt = space.params.get("optimizer")
    optimizers = list(opt.values) if opt is not None and opt.is_categorical else [None]
    bases = [typical(space, {"optimizer": o} if o else None) for o in optimizers]
    worker = plan(spec.resources).worker or plan(spec.resources).trial
    task = ray.remote(range_test).options(num_cpus=worker.get("CPU", 1), num_gpus=worker.get("GPU", 0))
    device = "cuda" if worker.get("GPU") else "cpu"
    refs = [task.remote(space.with_derived(b), spec.task, spec_dirs(spec), lrt.start_lr, lrt.end_lr, lrt.num_steps,
                        lrt.smoothing, lrt.diverge_factor, device) for b in bases]
    runs, found = [], {}  # found: optimizer -> the suggested range in units of `param`, or None
    for o, base, ref in zip(optimizers, bases, refs, strict=False):
        label = f"lr range test{f' ({o})' if o else ''}:"
        found[o] = None
        try:
            curve = ray.get(ref)
        except Exception as e:  # a config the task cannot build: say so, keep the spec's range
            log(f"{label} failed: {error_line(e)}")
            continue
        s = suggest(curve.lrs, curve.smoothed)
        unit = lr_per_unit(space, base, param, base[param]) if searched else None
        runs.append({"optimizer": o or TrainSettings.model_validate(space.with_derived(base)).optimizer,
                     "config": space.with_derived(base), "curve": curve.to_dict(), "suggestion": asdict(s),
                     "lr_per_unit": unit})
        if s.low is None:
            log(f"{label} no suggestion: {s.reason}")
            continue
        log(f"{label} steepest descent at lr {s.steepest_lr:.3g}, lowest loss at {s.min_loss_lr:.3g}; "
            f"suggested lr range {s.low:.3g} .. {s.high:.3g}" + (f" ({curve.stopped})" if curve.stopped else ""))
        if unit:
            found[o] = (s.low / unit, s.high / unit)
    out = {"param": param, "runs": runs, "range": None, "note": ""}
    if not lrt.set_range:
        out["note"] = "set_range is off: the coarse stage searches the spec's range"
    elif not searched:
        out["note"] = f"no searched continuous parameter '{param}': the coarse range stays as the spec has it"
    else:
        out["range"], out["note"] = coarse_range(param, (p.min, p.max), found)
    log(f"lr range test: {out['note']}")
    return out


def coarse_range(param: str, bounds: tuple[float, float], found: dict) -> tuple[list | None, str]:
    """The coarse range of `param` from each optimizer's suggestion (None: its test suggested nothing)
    and a line saying why. One range serves every optimizer the space searches, so one without a
    suggestion keeps the spec's range: narrowed to the others' lrs, it would be ruled out unseen
    (SGD's lrs sit 10-100x above Adam's)."""
    lo_spec, hi_spec = bounds
    blind = [o for o, r in found.items() if r is None]
    if not found or len(blind) == len(found):
        return None, f"no usable suggestion (or '{param}' does not set the lr in proportion): spec's range kept"
    if blind:
        return None, (f"no usable suggestion for {', '.join(map(str, blind))}: the spec's range is kept, so that "
                      f"{'it is' if len(blind) == 1 else 'they are'} searched at lrs the test could not find")
    lows, highs = [r[0] for r in found.values()], [r[1] for r in found.values()]
    lo, hi = max(lo_spec, min(lows)), min(hi_spec, max(highs))
    if lo < hi:
        return [lo, hi], f"coarse range of {param}: {lo:.3g} .. {hi:.3g} (spec: {lo_spec:g} .. {hi_spec:g})"
    return None, (f"suggested {min(lows):.3g} .. {max(highs):.3g} lies outside the spec's range "
                  f"{lo_spec:g} .. {hi_spec:g}: kept the spec's range")


def with_lr_range(spec: Spec, result: dict | None) -> Spec:
    """The spec with the test's range for its lr parameter (unchanged without one)."""
    if not result or not result.get("range"):
        return spec
    name, (lo, hi) = result["param"], result["range"]
    p = spec.parameters[name]
    data = {k: data_of(q) for k, q in spec.parameters.items()}
    data[name] = p.family.bounded(p, lo, hi, lo)
    return spec.derive(parameters=data)

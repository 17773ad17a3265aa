"""Checks across fields that pydantic's per-field validation cannot see."""
from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from .errors import allowed, did_you_mean
from .expr import Expr, ExprError
from .model import NAME_RE, PARAM_RE, Spec
from .settings import BUILTIN_TASKS, TRAIN_KEYS, TrainSettings


def check_spec(spec: Spec) -> None:
    def fail(path, message, fix=None):
        raise spec.error(path, message, fix)

    params = spec.parameters
    _check_task(spec, fail)
    _check_names(spec, fail)
    _check_conditions(spec, fail)
    known = set(TRAIN_KEYS) | set(params) | set(spec.fixed) | {"epochs"}
    for name, source in spec.derived.items():
        path = ("derived", name)
        if not NAME_RE.match(name):
            fail(path, f"'{name}' is not a valid name", "use letters, digits and _")
        if name in params or name in spec.fixed:
            fail(path, f"'{name}' is both derived and a {'parameter' if name in params else 'fixed setting'}",
                 f"rename the derived value or remove parameters.{name}")
        _check_expr(source, known, path, fail)
        known.add(name)
    for i, source in enumerate(spec.constraints):
        _check_expr(source, known, ("constraints", i), fail)
    _check_search(spec, fail)
    _check_scheduler(spec, known, fail)
    _check_stages(spec, fail)
    from .space import Space  # the space, once the expressions it evaluates are known to be valid

    space = Space(spec)
    _check_points_complete(spec, space, fail)
    _check_feasible(spec, space, fail)


def _check_task(spec, fail):
    task = spec.task
    if ":" in task:
        module, _, obj = task.partition(":")
        if not (all(p.isidentifier() for p in module.split(".")) and obj.isidentifier()):
            fail(("task",), f"'{task}' is not `package.module:object`", "write e.g. `task: mypkg.tasks:my_task`")
    elif task not in BUILTIN_TASKS:
        fail(("task",), f"'{task}' is not a built-in task{did_you_mean(task, BUILTIN_TASKS)}",
             f"{allowed(BUILTIN_TASKS)}, or `package.module:object` for your own")


def _check_names(spec, fail):
    for name in spec.parameters:
        if not PARAM_RE.match(name):
            fail(("parameters", name), f"'{name}' is not a valid parameter name",
                 "start with a letter or _, then letters, digits, _, . or - (expressions refer to names of "
                 "letters, digits and _)")
        if name in spec.fixed:
            fail(("fixed", name), f"'{name}' is both fixed and a parameter", f"remove fixed.{name} or parameters.{name}")
    for name in spec.fixed:
        if not PARAM_RE.match(name):
            fail(("fixed", name), f"'{name}' is not a valid setting name", "use letters, digits, _, . and -")
    for i, group in enumerate(spec.groups):
        if not any(n.startswith(group + ".") for n in [*spec.parameters, *spec.fixed]):
            fail(("groups", i), f"no parameter is in group '{group}'", f"name its parameters {group}.<name>")


def _check_conditions(spec, fail):
    params = spec.parameters
    for name, p in params.items():
        if p.when is None:
            continue
        path = ("parameters", name, "when", p.parent)
        parent = params.get(p.parent)
        if parent is None:
            fail(path, f"parent '{p.parent}' is not a parameter{did_you_mean(p.parent, params)}",
                 "name a choice parameter of this file")
        if not parent.is_categorical:
            fail(path, f"parent '{p.parent}' has distribution '{parent.distribution}'",
                 "a condition's parent must be a choice (`values: [...]`)")
        for v in p.parent_values:
            if v not in parent.values:
                fail(path, f"{v!r} is not a value of '{p.parent}'{did_you_mean(v, parent.values)}",
                     allowed(parent.values))
        if p.family.grid:
            fail(("parameters", name, "distribution"), "a grid parameter cannot be conditional",
                 "use `values:` (a choice) for a conditional parameter")
        seen, cur = [name], p.parent
        while cur is not None:
            if cur in seen:
                fail(("parameters", name, "when"), f"conditions form a cycle: {' -> '.join(seen + [cur])}",
                     "make one of them unconditional")
            seen.append(cur)
            cur = params[cur].parent if cur in params else None


def check_train_values(spec, fail):
    """Values meant for the trainer must be ones the trainer accepts: check each bound and choice
    (for a Task; a training function's parameters are its own, whatever their names)."""
    fields = TrainSettings.model_fields
    for key, value in spec.fixed.items():
        if key in fields:
            check_train_value(key, value, ("fixed", key), fail)
    for name, p in spec.parameters.items():
        if name not in fields:
            continue
        for where, value in p.family.edges(p):
            check_train_value(name, value, ("parameters", name, *where), fail)


_ADAPTERS: dict = {}


def check_train_value(key, value, path, fail):
    field = TrainSettings.model_fields[key]
    adapter = _ADAPTERS.setdefault(key, TypeAdapter(field.annotation))
    try:
        adapter.validate_python(value, strict=False)
        TrainSettings.model_validate({key: value})
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        hint = ""
        if err["type"] == "literal_error":
            opts = [o.strip(" '") for o in err["ctx"]["expected"].replace(" or ", ", ").split(",")]
            hint = did_you_mean(value, opts)
        fail(path, f"{value!r} is not a valid {key}{hint}: {err['msg'][0].lower()}{err['msg'][1:]}")


def _check_expr(source, known, path, fail):
    try:
        expr = Expr(source)
    except ExprError as e:
        fail(path, str(e))
    for name in sorted(expr.names - known):
        fail(path, f"`{source}` uses unknown name '{name}'{did_you_mean(name, known)}",
             "use a parameter, a fixed setting, a trainer setting, `epochs` or an earlier derived value")


def _check_search(spec, fail):
    s, params = spec.search, spec.parameters
    grids = [n for n, p in params.items() if p.family.grid]
    if s.method == "hyperopt" and grids:
        fail(("parameters", grids[0], "distribution"), "method hyperopt cannot enumerate a grid",
             "use `values:` (a choice) or method: grid")
    if s.method == "grid" and not any(p.is_categorical and p.parent is None for p in params.values()):
        fail(("search", "method"), "method grid needs a parameter to enumerate",
             "give at least one unconditional parameter with `values:`")
    for i, point in enumerate(s.points_to_evaluate):
        for key, value in point.items():
            path = ("search", "points_to_evaluate", i, key)
            if key not in params:
                fail(path, f"'{key}' is not a parameter{did_you_mean(key, params)}", allowed(params))
            why = params[key].family.refuse(params[key], value)
            if why:
                fail(path, *why)
    baseline = spec.stages.final.baseline
    for key in (baseline if isinstance(baseline, dict) else ()):  # its values may lie outside the ranges
        path = ("stages", "final", "baseline", key)
        if key not in params:
            fail(path, f"'{key}' is not a parameter{did_you_mean(key, params)}",
                 "give the baseline values of searched parameters; fixed settings already apply to it")


def _check_points_complete(spec, space, fail):
    """A point that gives some parameters is completed by drawing the rest: it must leave a feasible
    config, and every parameter it gives must apply under the values it gives."""
    import numpy as np

    rng = np.random.default_rng(0)
    for i, point in enumerate(spec.search.points_to_evaluate):
        config = space.sample_feasible(rng, point, tries=200)
        if config is None:
            fail(("search", "points_to_evaluate", i), "no config with these values meets the constraints",
                 "change the point or the constraints")
        for key in point:
            if key not in config:
                p = space.params[key]
                fail(("search", "points_to_evaluate", i, key), f"'{key}' applies only when {p.parent} is "
                     f"{' or '.join(map(repr, p.parent_values))}",
                     f"set {p.parent} to {' or '.join(map(repr, p.parent_values))} in the point, or drop {key}")


def _check_scheduler(spec, known, fail):
    sch = spec.scheduler
    max_epochs = spec.stopping.max_epochs
    if sch.max_t is not None and sch.max_t > max_epochs:
        fail(("scheduler", "max_t"), f"max_t {sch.max_t} exceeds stopping.max_epochs {max_epochs}",
             "lower max_t or raise stopping.max_epochs")
    if sch.cuts_by_epoch and sch.grace_period > (sch.max_t or max_epochs):
        fail(("scheduler", "grace_period"),
             f"grace_period {sch.grace_period} exceeds the {sch.max_t or max_epochs} epochs a trial runs",
             "lower grace_period")
    for name, p in sch.mutations.items():
        path = ("scheduler", "mutations", name)
        if name not in known - {"epochs"}:
            fail(path, f"'{name}' is not a parameter or setting{did_you_mean(name, known)}", "mutate a parameter, e.g. lr")
        if name in spec.parameters and spec.parameters[name].parent is not None:
            fail(path, f"'{name}' is conditional; PBT would add it to trials where it does not apply",
                 "mutate unconditional parameters only")
        if p.when is not None:
            fail(path + ("when",), "a mutation cannot be conditional", "remove `when:`")
        if p.family.grid:
            fail(path + ("distribution",), "a mutation cannot be a grid", "use `values:`")
        if name in TrainSettings.model_fields:
            for where, value in p.family.edges(p):
                check_train_value(name, value, path + where, fail)


def _check_stages(spec, fail):
    st, params = spec.stages, spec.parameters
    lrt = st.lr_range_test
    if lrt.enabled and lrt.set_range and "param" in lrt.model_fields_set:
        path = ("stages", "lr_range_test", "param")
        p = params.get(lrt.param)
        if p is None:
            fail(path, f"'{lrt.param}' is not a parameter{did_you_mean(lrt.param, params)}",
                 "name the searched learning-rate parameter, or set set_range: false")
        if not p.family.continuous or p.parent is not None or p.min <= 0:
            fail(path, f"'{lrt.param}' is a {'conditional ' if p.parent else ''}{p.distribution} parameter; "
                       "the test can only set the range of an unconditional positive continuous one",
                 "make it loguniform, or set set_range: false")
    for name in ("coarse", "fine", "seeds"):
        stage = getattr(st, name)
        if "epochs" in stage.model_fields_set and stage.epochs > spec.stopping.max_epochs:
            fail(("stages", name, "epochs"), f"{stage.epochs} epochs exceeds stopping.max_epochs "
                 f"{spec.stopping.max_epochs}", "lower it or raise stopping.max_epochs")


def _check_feasible(spec, space, fail):
    try:
        rejection = space.check_feasible()
    except ExprError as e:
        fail(e.where or ("constraints",), str(e), "make the expression valid for every value of its parameters")
    if rejection is not None:
        worst = max(rejection.by_constraint, key=rejection.by_constraint.get)
        index = spec.constraints.index(worst)
        fail(("constraints", index),
             f"no sampled config satisfies the constraints ({rejection.draws} draws; `{worst}` rejected "
             f"{rejection.by_constraint[worst]})", "widen the parameters it uses or relax the constraint")

"""Import of Weights & Biases sweep files: every key mapped to raysweep's or rejected with the reason."""
from __future__ import annotations

import math
import re

from .. import console
from .distributions import NAMES as DISTRIBUTIONS
from .errors import SpecError, did_you_mean
from .model import Stopping
from .yaml_io import locate

_NOTED: set = set()  # files whose ignored W&B keys were already named (a command loads a spec more than once)
_NOT_USED = ("program", "command", "entity")  # W&B's: how to launch a run; raysweep runs the task itself
_Q_DISTS = ("q_uniform", "q_log_uniform", "q_log_uniform_values", "q_normal")

_WANDB_ONLY = {"early_terminate", "program", "command", "run_cap", "entity", "project"}
_RAYSWEEP_ONLY = {"task", "fixed", "search", "scheduler", "resources", "stages", "stopping", "tracking",
                  "constraints", "derived", "extends", "storage_path"}
_WANDB_DISTS = {
    "constant": "constant", "categorical": "choice", "int_uniform": "int", "uniform": "uniform",
    "q_uniform": "quniform", "log_uniform_values": "loguniform", "q_log_uniform_values": "qloguniform",
    "normal": "normal", "q_normal": "qnormal",
    "log_uniform": "loguniform", "q_log_uniform": "qloguniform",  # bounds are exponents: converted below
}
_REJECTED_DISTS = {
    "categorical_w_probabilities": "weighted choices are not supported; drop `probabilities` and use `categorical`",
    "inv_log_uniform": "no inverse-log distribution; search the reciprocal with log_uniform_values",
    "inv_log_uniform_values": "no inverse-log distribution; search the reciprocal with log_uniform_values",
    "log_normal": "no log-normal distribution; use log_uniform_values",
    "q_log_normal": "no log-normal distribution; use q_log_uniform_values",
    "beta": "no beta distribution; use uniform",
    "q_beta": "no beta distribution; use q_uniform",
}
_METHODS = {"random": "random", "grid": "grid", "bayes": "hyperopt"}


def is_wandb(data: dict) -> bool:
    """A W&B file has a W&B-only key or `method: bayes`, or has `method` and no raysweep-only section."""
    if _WANDB_ONLY & data.keys() or data.get("method") == "bayes":
        return True
    return "method" in data and not (_RAYSWEEP_ONLY - {"task"}) & data.keys()


def convert(data: dict, pos: dict, file: str) -> tuple[dict, dict]:
    """Return the raysweep equivalent of a W&B sweep and positions pointing into the W&B file."""

    def fail(path, message, fix=None):
        raise SpecError(message, *locate(pos, path), ".".join(map(str, path)), fix)

    out: dict = {}
    new_pos = dict(pos)
    unused = []
    for key, value in data.items():
        if key in ("name", "description", "task", "parameters", "metric"):
            continue
        if key in _RAYSWEEP_ONLY:  # raysweep's own sections may sit beside W&B's keys
            out[key] = value
        elif key == "method":
            if not isinstance(value, str) or value not in _METHODS:
                fail(("method",), f"W&B method '{value}' has no raysweep equivalent", "use grid, random or bayes")
            out["method"] = _METHODS[value]
        elif key == "run_cap":
            out["search"] = {"num_samples": value}
            new_pos[("search", "num_samples")] = pos[("run_cap",)]
        elif key == "project":
            out["tracking"] = {"experiment": value}
            new_pos[("tracking", "experiment")] = pos[("project",)]
        elif key == "early_terminate":
            stopping = data.get("stopping")
            max_epochs = stopping.get("max_epochs") if isinstance(stopping, dict) else None
            out["scheduler"] = _early_terminate(value, fail, max_epochs or Stopping.model_fields["max_epochs"].default)
            if "max_t" in out["scheduler"]:  # a trial's budget is W&B's max_iter
                out.setdefault("stopping", {})["max_epochs"] = out["scheduler"]["max_t"]
            for k in out["scheduler"]:
                new_pos[("scheduler", k)] = pos[("early_terminate",)]
        elif key in _NOT_USED:
            unused.append(key)
        else:
            fail((key,), f"unknown W&B sweep key '{key}'",
                 "W&B keys: method, metric, parameters, early_terminate, run_cap, name, description, project, "
                 "program, command, entity")
    # W&B allows any name; raysweep's folders and experiments take letters, digits, _ . -
    out["name"] = re.sub(r"[^A-Za-z0-9_.-]", "_", str(data.get("name", "wandb_sweep"))) or "wandb_sweep"
    if "description" in data:
        out["description"] = data["description"]
    if "task" not in data:
        fail((), "a W&B sweep names a program; raysweep needs the task to train",
             "add `task: digits_mlp` (built-in) or `task: package.module:function` (your training function)")
    if unused and file not in _NOTED:
        _NOTED.add(file)
        console.note(f"{file}: W&B's {', '.join(unused)} not used: raysweep runs task {data['task']} itself")
    out["task"] = data["task"]
    out["metric"] = _metric(data.get("metric"), fail, out)
    params, groups = _params(data.get("parameters") or {}, fail, new_pos)
    out["parameters"] = params
    if groups:
        out["groups"] = groups
    return out, new_pos


def _params(params, fail, pos: dict, prefix: str = "", path: tuple = ("parameters",)) -> tuple[dict, list]:
    """W&B's parameters, nested groups flattened to dotted names (the positions follow them)."""
    if not isinstance(params, dict):
        fail(path, "W&B parameters are a mapping of names", "write e.g. `parameters: {lr: {min: 0.001, max: 0.1}}`")
    out, groups = {}, []
    for name, p in params.items():
        full, here = prefix + str(name), path + (name,)
        if prefix:  # a nested name: errors point into its group
            for key, where in list(pos.items()):
                if key[:len(here)] == here:
                    pos[("parameters", full) + key[len(here):]] = where
        if isinstance(p, dict) and "parameters" in p:
            extra = sorted(set(p) - {"parameters"})
            if extra:
                fail(here + (extra[0],), "a nested W&B group holds only `parameters:`", f"remove {extra[0]}")
            sub, subgroups = _params(p["parameters"], fail, pos, full + ".", here + ("parameters",))
            out.update(sub)
            groups += [full, *subgroups]
        else:
            out[full] = _param(p, fail, here)
    return out, groups


def _metric(metric, fail, out):
    if not isinstance(metric, dict):
        fail(("metric",), "W&B metric must be a mapping with `name` and `goal`", "add `metric: {name: val_loss, goal: minimize}`")
    converted = {}
    for key, value in metric.items():
        if key == "name":
            converted["name"] = value
        elif key == "goal":
            converted["goal"] = value
        elif key == "target":
            out.setdefault("stopping", {})["target"] = value
        elif key in ("impute", "impute_while_running"):
            fail(("metric", key), "metric imputation is not supported: raysweep records failed trials as errored or diverged",
                 "remove it")
        else:
            fail(("metric", key), f"unknown W&B metric key '{key}'", "allowed: name, goal, target")
    converted.setdefault("goal", "minimize")  # W&B's default
    return converted


def _param(p, fail, path):
    if not isinstance(p, dict):
        fail(path, "a W&B parameter is a mapping", "write e.g. `{values: [1, 2]}` or `{min: 0, max: 1}`")
    if "probabilities" in p:
        fail(path + ("probabilities",), _REJECTED_DISTS["categorical_w_probabilities"])
    p = dict(p)
    dist = p.get("distribution")
    if dist in _REJECTED_DISTS:
        fail(path + ("distribution",), f"W&B distribution '{dist}': {_REJECTED_DISTS[dist]}")
    if dist is not None and dist not in DISTRIBUTIONS:  # raysweep's own names pass through
        if dist not in _WANDB_DISTS:
            fail(path + ("distribution",), f"unknown W&B distribution '{dist}'{did_you_mean(dist, _WANDB_DISTS)}",
                 "allowed: " + ", ".join(_WANDB_DISTS))
        p["distribution"] = _WANDB_DISTS[dist]
        if dist in ("log_uniform", "q_log_uniform"):  # W&B bounds are natural-log exponents
            for k in ("min", "max"):
                if isinstance(p.get(k), (int, float)):
                    p[k] = math.exp(p[k])
        if dist in _Q_DISTS:
            q = p.setdefault("q", 1)  # W&B's default
            if dist != "q_normal" and isinstance(q, (int, float)) and q > 0:
                # W&B rounds each sample to a multiple of q (round(x / q) * q): its bounds, so rounded,
                # are the range it samples; a log range starts at q, never at 0
                for k in ("min", "max"):
                    if isinstance(p.get(k), (int, float)):
                        p[k] = float(f"{round(p[k] / q) * q:.12g}")
                if dist != "q_uniform" and isinstance(p.get("min"), float):
                    p["min"] = max(p["min"], float(q))
    if "value" in p and "distribution" not in p:
        p["distribution"] = "constant"
    return p


def _early_terminate(et, fail, max_epochs: int):
    """W&B's hyperband stops runs asynchronously at brackets min_iter * eta^k, counted in logged
    steps: that is ASHA counting reports (raysweep's trials report once per epoch)."""
    path = ("early_terminate",)
    if not isinstance(et, dict) or et.get("type") != "hyperband":
        fail(path + ("type",), "only `type: hyperband` exists in W&B", "write `early_terminate: {type: hyperband, min_iter: 3}`")
    if "strict" in et:
        fail(path + ("strict",), "W&B's strict mode has no ASHA equivalent (ASHA always compares within a rung)",
             "remove it")
    unknown = set(et) - {"type", "min_iter", "max_iter", "s", "eta"}
    if unknown:
        fail(path + (sorted(unknown)[0],), f"unknown early_terminate key '{sorted(unknown)[0]}'",
             "allowed: type, min_iter, max_iter, s, eta")
    eta = et.get("eta", 3)
    if "min_iter" in et:
        out = {"type": "asha", "grace_period": et["min_iter"], "reduction_factor": eta}
        if "max_iter" in et:
            out["max_t"] = et["max_iter"]
        budget = et.get("max_iter", max_epochs)
        if isinstance(et["min_iter"], int) and isinstance(budget, int) and et["min_iter"] > budget:
            fail(path + ("min_iter",), f"min_iter {et['min_iter']} exceeds the {budget} epochs a trial runs "
                 f"({'max_iter' if 'max_iter' in et else 'stopping.max_epochs'})",
                 "lower min_iter, or add max_iter (or a raysweep `stopping: {max_epochs: N}`)")
        return out
    if "max_iter" in et:
        s = et.get("s", 0)
        return {"type": "asha", "grace_period": max(1, round(et["max_iter"] / eta ** s)), "reduction_factor": eta,
                "max_t": et["max_iter"]}
    fail(path, "hyperband needs `min_iter`, or `max_iter` with `s`", "add `min_iter: 3`")

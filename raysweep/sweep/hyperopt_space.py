"""A spec's space in HyperOpt's terms: each family gives its own expression; a conditional parameter
lives inside its parent's `hp.choice` branch, labelled by the path to it."""
from __future__ import annotations

from ..spec import Space
from ..spec.distributions import index_of


def hyperopt_space(space: Space) -> dict:
    return {n: _hp(space, n, "") for n, p in space.params.items() if p.parent is None}


def _hp(space: Space, name: str, prefix: str):
    p, label = space.params[name], prefix + name
    kids = space.children(name)
    if not kids:
        return p.family.hyperopt(p, label)
    return p.family.hyperopt(p, label, [
        {name: i, **{k: _hp(space, k, f"{label}={v}/") for k in kids if v in space.params[k].parent_values}}
        for i, v in enumerate(p.values)])


def hyperopt_point(space: Space, config: dict) -> dict:
    """A flat config as HyperOpt's trial vals: label -> value, choices as indices."""
    point = {}

    def visit(name, prefix):
        p, label = space.params[name], prefix + name
        if name not in config or not p.family.sampled:
            return
        value = config[name]
        if p.is_categorical:
            point[label] = index_of(p.values, value)
            for kid in space.children(name):
                if value in space.params[kid].parent_values:
                    visit(kid, f"{label}={value}/")
        else:
            point[label] = value

    for n, p in space.params.items():
        if p.parent is None:
            visit(n, "")
    return point


def from_hyperopt(space: Space, sample: dict) -> dict:
    """Flatten HyperOpt's nested choice branches back to one config of native values."""
    flat: dict = {}

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            else:
                flat[k] = v

    walk(sample)
    return {n: p.family.clean(p, flat[n]) for n, p in space.params.items() if n in flat}

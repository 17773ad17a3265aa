"""Coarse-to-fine: the space narrowed around the best configs of a wide search (README, "How raysweep tunes")."""
from __future__ import annotations

from ..spec import Param, Spec


def narrow_param(p: Param, seen: list, margin: float) -> dict | None:
    """The narrowed form of one parameter given its values in the top configs (None: drop it); each
    family narrows its own way (distributions.py): ranges to the hull of the values widened by
    `margin` x the original width, choices to the values seen."""
    return p.family.narrow(p, seen, margin) if seen else None


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

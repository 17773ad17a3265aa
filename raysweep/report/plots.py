"""Figures saved next to a run (and to MLflow): matplotlib without a display."""
from __future__ import annotations

from ..spec.distributions import all_numbers


def lr_range_plot(result: dict, path: str) -> str:
    """Smoothed loss against lr (log scale), one curve per optimizer, with the steepest point and
    the suggested range marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in result["runs"]:
        curve, s = run["curve"], run["suggestion"]
        line, = ax.plot(curve["lrs"], curve["smoothed"], label=run["optimizer"])
        if s["steepest_lr"] is not None:
            i = min(range(len(curve["lrs"])), key=lambda j: abs(curve["lrs"][j] - s["steepest_lr"]))
            ax.plot([curve["lrs"][i]], [curve["smoothed"][i]], "o", color=line.get_color())
            ax.axvspan(s["low"], s["high"], color=line.get_color(), alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (as the optimizer sees it)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"LR range test: dot = steepest descent, band = suggested range\n{result['note']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    fig.clf()
    _pyplot().close(fig)
    return path


def _axis_values(values: list):
    """Numbers as they are; anything else as positions, with the labels to put on them."""
    if all_numbers(values):
        return [float(v) for v in values], None
    labels = sorted({str(v) for v in values})
    return [labels.index(str(v)) for v in values], labels


def metric_vs_params(trials, params: list[str], log: dict, metric: str, path: str) -> str:
    """The metric against each parameter, one panel each (log x for log-scale parameters)."""
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    cols = min(3, len(params)) or 1
    rows = -(-len(params) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    stages = sorted({t.stage for t in trials})
    for ax, p in zip(axes.flat, params, strict=False):
        mine = [t for t in trials if p in t.config]
        xs, labels = _axis_values([t.config[p] for t in mine])  # one axis for all stages
        for stage in stages:
            at = [i for i, t in enumerate(mine) if t.stage == stage]
            ax.scatter([xs[i] for i in at], [mine[i].value for i in at], s=14, alpha=0.7, label=stage)
        if labels:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        if log.get(p):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(p)
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return _save(fig, path)


def learning_curves(top, stopped, metric: str, path: str) -> str:
    """The sweep metric by epoch: the top trials in colour, trials stopped early in grey."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for t in stopped:
        curve = t.curves.get(metric, [])
        ax.plot(range(1, len(curve) + 1), curve, color="0.7", lw=0.8)
    for t in top:
        curve = t.curves.get(metric, [])
        ax.plot(range(1, len(curve) + 1), curve, lw=1.6, label=f"{t.stage} {t.trial_id}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"top {len(top)} trials (colour) and {len(stopped)} stopped early (grey)", fontsize=9)
    if top:
        ax.legend(fontsize=8)
    return _save(fig, path)


def best_so_far(convergence, metric: str, path: str) -> str:
    """Diminishing returns: the best value found against trials run and against epochs spent."""
    plt = _pyplot()
    fig, (by_trial, by_epoch) = plt.subplots(1, 2, figsize=(10, 3.8))
    for c in convergence:
        by_trial.plot(range(1, len(c.best_so_far) + 1), c.best_so_far, drawstyle="steps-post", label=c.stage)
        by_epoch.plot(c.epochs_spent, c.best_so_far, drawstyle="steps-post", label=c.stage)
    by_trial.set_xlabel("trials started")
    by_epoch.set_xlabel("epochs spent")
    for ax in (by_trial, by_epoch):
        ax.set_ylabel(f"best {metric} so far")
        ax.legend(fontsize=8)
    return _save(fig, path)


def parallel_coordinates(trials, params: list[str], log: dict, metric: str) -> str:
    """Every trial as a line across its parameters, coloured by the metric (plotly, interactive);
    an HTML fragment without plotly.js (the page carries it once)."""
    import math

    import plotly.graph_objects as go

    dims = []
    for p in params:
        mine = [t.config.get(p) for t in trials]
        xs, labels = _axis_values(["(none)" if v is None else v for v in mine] if None in mine else mine)
        if log.get(p) and not labels:
            dims.append({"label": f"log10 {p}", "values": [math.log10(x) for x in xs]})
        else:
            dims.append({"label": p, "values": xs, **({"tickvals": list(range(len(labels))), "ticktext": labels}
                                                       if labels else {})})
    values = [t.value for t in trials]
    dims.append({"label": metric, "values": values})
    fig = go.Figure(go.Parcoords(line={"color": values, "colorscale": "Viridis", "showscale": True}, dimensions=dims))
    fig.update_layout(margin={"l": 60, "r": 60, "t": 40, "b": 30}, height=420)
    return fig.to_html(full_html=False, include_plotlyjs=False)

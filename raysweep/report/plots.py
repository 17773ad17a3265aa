"""Figures saved next to a run (and to MLflow): matplotlib without a display."""
from __future__ import annotations


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

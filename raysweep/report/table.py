"""Plain-text views of results for the terminal."""
from __future__ import annotations

from ..pipeline.outcomes import BASELINE_KEY


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def top_table(result, k: int = 5, params: list[str] | None = None) -> str:
    ranked = result.ranked()[:k]
    if not ranked:
        return "(no trial finished with a value)"
    params = params or sorted({p for t in ranked for p in t.config} - {BASELINE_KEY})[:8]
    header = ["#", "trial", result.metric, "status", "epochs", *params]
    rows = [[str(i + 1), t.trial_id + (" (untuned baseline)" if t.config.get(BASELINE_KEY) else ""), fmt(t.value),
             t.status, str(t.epochs), *(fmt(t.config.get(p, "")) for p in params)] for i, t in enumerate(ranked)]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) for row in [header, *rows])

"""Analysis and views of sweep results: `build` reads a finished sweep back from MLflow, analyses it
and writes the report (HTML or markdown, with PNGs), logged as artifacts of the run it analyses."""
from __future__ import annotations

from .analysis import Analysis, analyse


def build(client, run_id: str, out: str, fmt: str = "html", log: bool = True) -> tuple[list[str], Analysis]:
    from ..tracking.read import load_sweep
    from ..tracking.summary import log_report
    from .render import write

    analysis = analyse(load_sweep(client, run_id))
    files = write(analysis, out, fmt)
    if log:
        log_report(client, run_id, files)
    return files, analysis


__all__ = ["Analysis", "analyse", "build"]

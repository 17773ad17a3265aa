"""The report as a self-contained HTML page (figures embedded, parallel coordinates interactive) or as
markdown for the terminal, from one list of sections so both say the same."""
from __future__ import annotations

import base64
import html
import math
import os

from ..spec.objective import ranked
from . import plots
from .analysis import RULES, SEARCH_STAGES, Analysis
from .table import fmt

Table = tuple[list[str], list[list[str]]]


def _value(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v)


def _top_table(trials, params: list[str], metric: str) -> Table:
    header = ["#", "stage", "trial", metric, "status", "epochs", *params]
    return header, [[str(i + 1), t.stage, t.trial_id, _value(t.value), t.status, str(t.epochs),
                     *(_value(t.config.get(p)) for p in params)] for i, t in enumerate(trials)]


def sections(a: Analysis, figures: dict[str, str]) -> list[tuple[str, list]]:
    """(title, blocks): a block is text, a Table, ("figure", key) or ("html", key)."""
    s, metric = a.sweep, a.sweep.metric
    best = a.top(1)
    head = [f"Experiment **{s.experiment}**, {s.kind} run `{s.run_id}`; metric `{metric}` ({s.mode})."]
    if best:
        head.append(f"Best trial: {best[0].stage} {best[0].trial_id}, {metric} = {_value(best[0].value)}.")
    if s.test:
        head.append("Held-out test: " + ", ".join(f"{k} = {_value(v)}" for k, v in sorted(s.test.items())) + ".")
    if s.baseline_test:
        head.append("The untuned baseline (the spec's fixed settings and defaults, nothing searched), trained beside "
                    "it on the same seed: " + ", ".join(f"{k} = {_value(v)}" for k, v in sorted(s.baseline_test.items()))
                    + ".")
    out = [("Summary", head)]

    tops = [f"Top trials over all search stages, then each stage's ({len([t for st in s.stages for t in st.trials])} "
            "trials in all).", _top_table(a.top(5), a.params, metric)]
    for stage in s.stages:
        stage_top = ranked(stage.trials, s.mode, lambda t: t.value)[:3]
        tops += [f"**{stage.name}**: {len(stage.trials)} trials.", _top_table(stage_top, a.params, metric)]
    out.append(("Top configurations", tops))

    if a.finalists:
        f = a.finalists
        rows = [[str(i + 1), ", ".join(f"{k}={_value(v)}" for k, v in r["config"].items() if k in a.params),
                 ", ".join(_value(v) for v in r["values"].values()), f"{_value(r['mean'])} ± {_value(r['std'])}",
                 f"[{_value((r.get('ci95') or [None])[0])}, {_value((r.get('ci95') or [None, None])[1])}]"]
                for i, r in enumerate(f.rows)]
        verdict = ("not tested (fewer than two finalists with two seeds)" if f.lead_p is None else
                   f"Welch's t-test of the winner against the runner-up: p = {f.lead_p:.3f}, so the lead is "
                   + ("real (p < 0.05)" if f.lead_real else "within seed noise"))
        out.append(("Finalists over seeds", [(["#", "config", "per seed", "mean ± std", "95% interval"], rows), verdict]))

    if a.importance:
        imp = (["parameter", "importance", "± std"], [[i.param, f"{i.mean:.3f}", f"{i.std:.3f}"] for i in a.importance])
        out.append(("Parameter importance", [
            f"fANOVA (Optuna's FanovaImportanceEvaluator; Hutter, Hoos and Leyton-Brown, ICML 2014) of `{metric}` "
            f"over the {len(a.ranked())} searched trials with a value: the mean over 8 random forests of different "
            "seeds, ± their std. Parameters only some trials have (conditional ones) are left out.",
            imp]))
    else:
        out.append(("Parameter importance", ["Too few finished trials (or no varied parameter) to estimate it."]))

    figs = [("html", "parallel")] if "parallel" in figures else []
    figs += [("figure", k) for k in ("params", "curves", "lr_range", "best_so_far") if k in figures]
    out.append(("Figures", figs))

    counts = a.counts()
    rows = [[RULES[n].name, str(c), RULES[n].sign, RULES[n].advice] for n, c in counts.items()]
    diag = [f"Each trial's curves checked against four rules; {sum(counts.values())} of "
            f"{sum(len(st.trials) for st in s.stages)} trials fire one.", (["failure", "trials", "sign", "advice"], rows)]
    if a.diagnoses:
        diag.append((["trial", "stage", "failure"], [[tid, next(t.stage for st in s.stages for t in st.trials
                                                                  if t.trial_id == tid), RULES[n].name]
                                                     for tid, n in sorted(a.diagnoses.items())][:40]))
    out.append(("Failure diagnosis", diag))

    conv = [f"**{c.stage}**: best moved {c.gain_second_half:.4g} over its second half of trials (noise {c.noise:.4g}): "
            + ("converged, more trials of this space are unlikely to help." if c.converged else "still improving.")
            for c in a.convergence] or ["Too few trials to judge."]
    out.append(("Diminishing returns", conv))
    out.append(("What to try next", [("list", a.advice)]))
    return out


def _md_table(t: Table) -> str:
    header, rows = t
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows])


def markdown(a: Analysis, figures: dict[str, str]) -> str:
    lines = [f"# raysweep report: {a.sweep.experiment}"]
    for title, blocks in sections(a, figures):
        lines.append(f"\n## {title}")
        for b in blocks:
            if isinstance(b, str):
                lines.append(b)
            elif b[0] == "list":
                lines += [f"- {x}" for x in b[1]]
            elif b[0] == "figure":
                lines.append(f"![{b[1]}]({os.path.basename(figures[b[1]])})")
            elif b[0] == "html":
                lines.append("(parallel coordinates: in the HTML report)")
            else:
                lines.append(_md_table(b))
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def page(a: Analysis, figures: dict[str, str]) -> str:
    from plotly.offline import get_plotlyjs

    body = []
    for title, blocks in sections(a, figures):
        body.append(f"<h2>{html.escape(title)}</h2>")
        for b in blocks:
            if isinstance(b, str):
                body.append(f"<p>{_inline(b)}</p>")
            elif b[0] == "list":
                body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "figure":
                with open(figures[b[1]], "rb") as f:
                    data = base64.b64encode(f.read()).decode()
                body.append(f'<img alt="{b[1]}" src="data:image/png;base64,{data}">')
            elif b[0] == "html":
                body.append(figures[b[1]])
            else:
                header, rows = b
                body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                            + "</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>raysweep report: {html.escape(a.sweep.experiment)}"
            f"</title><style>{style}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>raysweep report: {html.escape(a.sweep.experiment)}</h1>{''.join(body)}</body></html>")


def draw(a: Analysis, out: str) -> dict[str, str]:
    """The figures as PNG files in `out` (and the parallel coordinates as an HTML fragment)."""
    figures: dict[str, str] = {}
    trials = [t for st in a.sweep.stages if st.name in SEARCH_STAGES for t in st.trials if t.value is not None]
    metric = a.sweep.metric
    if trials and a.params:
        figures["parallel"] = plots.parallel_coordinates(trials, a.params, a.log, metric)
        shown = [i.param for i in a.importance[:6]] or a.params[:6]
        figures["params"] = plots.metric_vs_params(trials, shown, a.log, metric, os.path.join(out, "metric_vs_params.png"))
    stopped = [t for st in a.sweep.stages for t in st.trials if t.status in ("stopped", "early_stopped")]
    if trials:
        figures["curves"] = plots.learning_curves(a.top(5), stopped, metric, os.path.join(out, "learning_curves.png"))
    if a.sweep.lr_test:
        figures["lr_range"] = plots.lr_range_plot(a.sweep.lr_test, os.path.join(out, "lr_range.png"))
    if a.convergence:
        figures["best_so_far"] = plots.best_so_far(a.convergence, metric, os.path.join(out, "best_so_far.png"))
    return figures


def write(a: Analysis, out: str, fmt_: str = "html") -> list[str]:
    """The report's files in `out`: report.html or report.md first, then its PNGs."""
    os.makedirs(out, exist_ok=True)
    figures = draw(a, out)
    path = os.path.join(out, f"report.{'html' if fmt_ == 'html' else 'md'}")
    with open(path, "w") as f:
        f.write(page(a, figures) if fmt_ == "html" else markdown(a, figures))
    return [path, *(p for k, p in figures.items() if k != "parallel")]

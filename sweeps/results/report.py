"""`pricer report STUDY`: the study's verdict as one self-contained HTML page (plotly inlined,
readable offline), also logged to the study's parent run in MLflow.

The page holds the verdict table (`sweeps.results.verdict`), one plain sentence per comparison,
and the plots: optimisation history with the default's value, error by trial coloured by model,
test error against cost per 1,000 prices (`sweeps.results.costs`), predicted against true price
for the winner (log axes), error by category and by price band (the winner against the random
forest, or against the best trial when the forest is the winner), parameter importance, and the
price ranges' coverage. Axes that number trials take whole numbers only.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from pricer.atomic import write_text
from pricer.metrics import BAND_NAMES, price_band
from pricer.predict.compare import dollars
from sweeps.results.costs import cost_figure
from sweeps.results.verdict import Entry, StudyResults, Verdict, verdict

ARTIFACT_DIR = "report"


@dataclass(frozen=True)
class Report:
    path: Path
    size_kb: float
    artifact: str
    headline: str  # who won, and where the best trial stands
    sentences: list[str]


def write_report(tracking_uri: str, study: str, out: Path, *, storage: str | None = None) -> Report:
    """Write the page to `out` and log it to the study's parent run under ``report/``.

    Args:
        storage: the Optuna storage (for parameter importance and the enqueued default); None
            takes the parent run's ``storage`` param, and the page says so when it can't open it.

    Raises:
        SpecError: unknown study, or no finished trial.
    """
    results = StudyResults(tracking_uri, study)
    found = verdict(results)
    parent = results.tracker.study_runs(study)[0]
    storage = storage or results.tracker.client.get_run(parent).data.params.get("storage")
    optuna_study = _optuna_study(storage, study)
    try:
        page = render(found, results, optuna_study)
    finally:
        if optuna_study is not None:
            from sweeps.run.studies import close_storage

            close_storage(optuna_study)  # its pooled connections would outlive the page
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    results.tracker.log_artifact(parent, out, ARTIFACT_DIR)
    sentences = found.sentences()
    return Report(out, out.stat().st_size / 1024, f"{ARTIFACT_DIR}/{out.name}", found.headline(), sentences)


def _optuna_study(storage: str | None, name: str):
    """The Optuna study, or None when its storage can't be opened here (a redacted password)."""
    if not storage or "***" in storage:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 -- any storage failure only costs the page two plots
        return None


def render(found: Verdict, results: StudyResults, optuna_study) -> str:
    """The page as one HTML string."""
    other = _runner_up(found)
    against = f"the winner against {other.label}" if other is not None else "the winner"
    figures = [("Optimisation history", "history", _history(results, optuna_study)),
               ("Error by trial, coloured by model", "by-trial", _by_trial(results)),
               ("Test error against cost per 1,000 prices", "costs", cost_figure(found.entries)),
               (f"Predicted against true price: {found.winner.label}", "scatter-winner",
                _scatter(found.winner, found.truth)),
               (f"Error by category: {against}", "by-category", _by_category(found)),
               (f"Error by price band: {against}", "by-band", _by_band(found)),
               ("Parameter importance", "importance", _importance(optuna_study)),
               ("Price ranges: coverage of the true test prices", "coverage", _coverage(results))]
    parts, first = [], True
    for title, div_id, (figure, note) in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        if figure is not None:
            parts.append(figure.to_html(full_html=False, include_plotlyjs=first,
                                        div_id=div_id, config={"displaylogo": False}))
            first = False
    sentences = "".join(f"<li>{html.escape(sentence)}</li>" for sentence in found.sentences())
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in found.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(found.study)}: the verdict</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.winner {{ font-weight: bold; }} tr.baseline {{ color: #666; }}
.note {{ color: #555; font-size: 14px; }}
</style></head><body>
<h1>{html.escape(found.study)}: which model prices best, and how sure that is</h1>
<p>Every row is scored on the same {len(found.truth):,} test items (never used to train or tune anything).
The contenders are chosen on the validation items; the winner is the one with the lowest test
$ error, a classical baseline included, and the best trial is marked beside it. Intervals are
95 % bootstrap intervals; each row's difference against the winner is paired item by item, with
the Wilcoxon signed-rank p-value. A row is said to differ from the winner only when the interval
excludes zero and p &lt; 0.05; where the two disagree, its sentence says why.</p>
<p id='headline'><strong>{html.escape(found.headline())}</strong></p>
{_table(found)}
<h2>In plain words</h2><ul>{sentences}</ul>
{notes}
{''.join(parts)}
</body></html>
"""


def _table(found: Verdict) -> str:
    head = ("contender", "group", "test $ error", "95 % CI", "vs winner (paired)", "95 % CI", "Wilcoxon p",
            "hit rate", "range coverage", "peak GiB", "trial hours")
    rows = [_tr(e, found, "winner" if e is found.winner else "baseline" if e.group == "baseline" else "")
            for e in found.entries]
    header = "".join(f"<th>{h}</th>" for h in head)
    return f"<table id='verdict'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _tr(e: Entry, found: Verdict, cls: str) -> str:
    from pricer.metrics import bootstrap_interval

    mae = sum(e.errors) / len(e.errors)
    low, high = bootstrap_interval(e.errors)
    if e.versus is not None:
        d_low, d_high = e.versus.difference_interval
        versus = (dollars(e.versus.difference, signed=True),
                  f"[{dollars(d_low, signed=True)}, {dollars(d_high, signed=True)}]", f"{e.versus.p_value:.3g}")
    else:
        versus = ("", "", "")
    coverage = e.metrics.get("test_coverage")

    def fmt(value, spec: str) -> str:
        return "" if value is None else format(value, spec)

    marks = [mark for mark, who in (("the winner", found.winner), ("the best trial", found.best_trial)) if e is who]
    label = e.label + (f" ({', '.join(marks)})" if marks else "")
    cells = (html.escape(label), e.group, dollars(mae), f"[{dollars(low)}, {dollars(high)}]", *versus,
             fmt(e.row.test_hit_rate, ".1%"), fmt(coverage, ".1%"), fmt(e.peak_mem_gib, ".2f"), fmt(e.hours, ".2f"))
    return f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


# --- plots: each returns (figure or None, a note or "") ------------------------------------------

def _history(results: StudyResults, optuna_study):
    import plotly.graph_objects as go

    trials = sorted((r for r in results.finished()), key=lambda r: r.trial)
    if not trials:
        return None, "no finished trial"
    metric, maximize = results.objective
    values = [getattr(r, metric) for r in trials]
    best, running = [], -math.inf if maximize else math.inf
    for v in values:
        running = max(running, v) if maximize else min(running, v)
        best.append(running)
    fig = go.Figure()
    fig.add_scatter(x=[r.trial for r in trials], y=values, mode="markers", name=f"validation {metric}",
                    text=[r.model for r in trials])
    fig.add_scatter(x=[r.trial for r in trials], y=best, mode="lines", name="best so far")
    default, note = _default_trial(results, optuna_study)
    if default is not None:
        fig.add_hline(y=getattr(default, metric), line_dash="dash",
                      annotation_text=f"the default (trial {default.trial}): {getattr(default, metric):,.3g}")
    fig.update_layout(xaxis=trial_axis([r.trial for r in trials]), yaxis_title=f"validation {metric}", height=380)
    return fig, note


def _default_trial(results: StudyResults, optuna_study):
    """The enqueued default: Optuna's first trial with fixed params, else trial 0."""
    number, note = 0, "the default is taken to be trial 0 (the Optuna storage was not readable here)"
    if optuna_study is not None:
        fixed = [t.number for t in optuna_study.trials if "fixed_params" in t.system_attrs]
        if fixed:
            number, note = fixed[0], ""
    for row in results.finished():
        if row.trial == number:
            return row, note
    return None, "the default trial did not finish"


def _by_trial(results: StudyResults):
    import plotly.graph_objects as go

    fig = go.Figure()
    for model in sorted({r.model for r in results.finished()}):
        rows = [r for r in results.finished() if r.model == model and r.test_mae is not None]
        fig.add_scatter(x=[r.trial for r in rows], y=[r.test_mae for r in rows], mode="markers",
                        name=model, marker={"size": 10})
    fig.update_layout(xaxis=trial_axis([r.trial for r in results.finished()]), yaxis_title="test $ error",
                      height=380)
    return fig, ""


def trial_axis(trials: list[int]) -> dict:
    """A plotly x axis for trial numbers: ticks on whole numbers only (plotly's own choice puts
    them at 0, 0.2, 0.4... when a study has a trial or two), about ten of them at most."""
    span = max(trials, default=0) - min(trials, default=0)
    return {"title": "trial", "tickmode": "linear", "tick0": 0, "dtick": max(1, math.ceil(span / 10)),
            "tickformat": "d"}


def _scatter(winner: Entry, truth: list[float]):
    import plotly.graph_objects as go

    pairs = [(t, p) for t, p in zip(truth, winner.predictions, strict=True) if p is not None and p > 0]
    missing = len(truth) - len(pairs)
    fig = go.Figure()
    fig.add_scatter(x=[t for t, _ in pairs], y=[p for _, p in pairs], mode="markers", name="test items",
                    marker={"size": 6, "opacity": 0.6})
    top = max([*truth, *(p for _, p in pairs), 1.0])
    fig.add_scatter(x=[0.5, top], y=[0.5, top], mode="lines", name="y = x", line={"dash": "dot"})
    fig.update_xaxes(type="log", title="true price ($)")
    fig.update_yaxes(type="log", title="predicted price ($)")
    fig.update_layout(height=480)
    return fig, (f"{missing} item(s) without a price or priced at $0 are not drawn (log axes)" if missing else "")


def _forest(found: Verdict) -> Entry | None:
    return next((e for e in found.entries if e.group == "baseline" and e.row.model == "random_forest"), None)


def _runner_up(found: Verdict) -> Entry | None:
    """What the winner is drawn against by category and band: the random forest (the one to
    beat), or the best trial when the forest is the winner."""
    forest = _forest(found)
    if forest is not None and forest is not found.winner:
        return forest
    return found.best_trial if found.best_trial is not found.winner else None


def _grouped(found: Verdict, key, order: list[str] | None = None):
    import plotly.graph_objects as go

    categories = found.categories() if key == "category" else None
    if key == "category" and not categories:
        return None, "no trial's run has a predictions.csv (categories unknown)"
    groups = categories if categories else [BAND_NAMES[price_band(t)] for t in found.truth]
    names = order or sorted(set(groups))
    fig = go.Figure()
    for entry in [found.winner, _runner_up(found)]:
        if entry is None:
            continue
        means = []
        for name in names:
            errs = [e for e, g in zip(entry.errors, groups, strict=True) if g == name]
            means.append(sum(errs) / len(errs) if errs else None)
        fig.add_bar(x=names, y=means, name=entry.label)
    counts = {n: groups.count(n) for n in names}
    fig.update_layout(barmode="group", yaxis_title="test $ error", height=400,
                      xaxis={"ticktext": [f"{n} ({counts[n]})" for n in names], "tickvals": names})
    return fig, "" if _runner_up(found) else "no random forest baseline in this study"


def _by_category(found: Verdict):
    return _grouped(found, "category")


def _by_band(found: Verdict):
    return _grouped(found, "band", list(BAND_NAMES))


def _importance(optuna_study):
    import warnings

    import plotly.graph_objects as go

    if optuna_study is None:
        return None, "the Optuna storage could not be opened here, so no parameter importance"
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState

    finished = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(finished) < 2:
        return None, f"parameter importance needs at least 2 finished trials ({len(finished)} here)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = (lambda t: t.values[0]) if len(optuna_study.directions) > 1 else None
            importances = get_param_importances(optuna_study, target=target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, f"parameter importance could not be computed ({exc})"
    names = list(importances)[::-1]
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"))
    fig.update_layout(xaxis_title="importance (fANOVA)", height=120 + 30 * len(names))
    return fig, f"from {len(finished)} finished trials: few trials make this a sketch, not a measurement"


def _coverage(results: StudyResults):
    import plotly.graph_objects as go

    rows = []
    for row in results.finished():
        metrics = results.run_metrics(row)
        if metrics.get("test_coverage") is not None:
            rows.append((row, metrics))
    if not rows:
        return None, "no trial logged a price range (prices read greedily, or trials from before ranges)"
    labels = [f"trial {r.trial} ({r.model})" for r, _ in rows]
    fig = go.Figure()
    fig.add_bar(x=labels, y=[m.get("interval_test_coverage_raw") for _, m in rows], name="raw quantiles")
    fig.add_bar(x=labels, y=[m["test_coverage"] for _, m in rows], name="calibrated on validation")
    nominal = results.nominal_coverage(rows[0][0])
    fig.add_hline(y=nominal, line_dash="dash", annotation_text=f"nominal {nominal:.0%}")
    fig.update_layout(barmode="group", yaxis={"title": "share of test prices inside the range", "range": [0, 1]},
                      height=400)
    widths = ", ".join(f"trial {r.trial} {m['test_interval_width']:.2f}" for r, m in rows
                       if m.get("test_interval_width") is not None)
    return fig, f"mean relative width (high - low) / true price: {widths}"

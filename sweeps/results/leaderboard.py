"""A study's trials and baselines from MLflow, best first by the study's objective.

Everything ranked is scored on the same validation items (the objective the sampler saw);
finished trials and baselines are ranked, pruned and failed trials follow unranked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pricer.errors import SpecError
from sweeps.track.redact import redact
from sweeps.track.tracking import STATE, STUDY, MlflowTracker

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}


@dataclass(frozen=True)
class Row:
    """One leaderboard line. Metrics are on the validation items (``test_*`` on the test items);
    None where a run has none (a failed trial). ``mae_low`` / ``mae_high``: the 95 % bootstrap
    interval of the validation dollar error. A refit (the trial `refit_of` retrained on all the
    data, `sweeps.run.refit`) carries that trial's number in `trial` too."""

    rank: int | None
    trial: int | None
    model: str
    variant: str
    lora_r: int | None
    learning_rate: float | None
    mae: float | None
    mae_low: float | None
    mae_high: float | None
    rmsle: float | None
    hit_rate: float | None
    test_mae: float | None
    test_rmsle: float | None
    test_hit_rate: float | None
    state: str
    minutes: float | None
    baseline: bool
    run_id: str
    refit_of: int | None = None
    # the price range's share of test prices covered, and its mean (high - low) / true price
    test_coverage: float | None = None
    test_interval_width: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _number(value: str | None, kind: type) -> int | float | None:
    try:
        return kind(float(value)) if value not in (None, "None") else None
    except ValueError:
        return None


def _row(run, baseline: bool) -> Row:
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    refit_of = _number(t.get("pricer.refit_of"), int)
    state = t.get(STATE) or ("RUNNING" if run.info.status == "RUNNING" else "FAIL")
    return Row(rank=None, trial=_number(t.get("pricer.trial"), int), model=t.get("pricer.model", p.get("model", "?")),
               variant=t.get("pricer.variant", ""), lora_r=_number(p.get("lora_r"), int),
               learning_rate=_number(p.get("learning_rate"), float), mae=m.get("val_mae"),
               mae_low=m.get("val_mae_low"), mae_high=m.get("val_mae_high"), rmsle=m.get("val_rmsle"),
               hit_rate=m.get("val_hit_rate"), test_mae=m.get("test_mae"), test_rmsle=m.get("test_rmsle"),
               test_hit_rate=m.get("test_hit_rate"), state=state, minutes=m.get("minutes"), baseline=baseline, run_id=run.info.run_id,
               refit_of=refit_of, test_coverage=m.get("test_coverage"),
               test_interval_width=m.get("test_interval_width"))


def objective_of(tracker: MlflowTracker, study: str) -> tuple[str, bool]:
    """The study's objective metric and whether it is maximised, as its parent run records."""
    parents = tracker.study_runs(study)
    if not parents:
        raise SpecError(f"study {study!r}: no runs in {redact(tracker.tracking_uri)}; launch it first "
                        "(or pass the --tracking-uri it was launched with)")
    tags = tracker.client.get_run(parents[0]).data.tags
    return tags.get("pricer.objective", "mae"), tags.get("pricer.direction") == "maximize"


def leaderboard(tracking_uri: str, study: str) -> list[Row]:
    """Trials, refits and baselines of `study`, ranked by its objective on validation items."""
    tracker = MlflowTracker(tracking_uri, study, create=False)
    metric, maximize = objective_of(tracker, study)
    rows = [_row(r, False) for role in ("trial", "refit") for r in tracker.runs(role)
            if r.data.tags.get(STUDY, study) == study]
    rows += [_row(r, True) for r in tracker.runs("baseline")]

    def key(row: Row) -> tuple:
        value = getattr(row, metric)
        finished = row.state == "COMPLETE" and value is not None and math.isfinite(value)
        score = (-value if maximize else value) if finished else math.inf
        return (not finished, _STATE_ORDER.get(row.state, 9), score, row.trial if row.trial is not None else -1,
                row.refit_of is None)

    rows.sort(key=key)
    ranked, rank = [], 0
    for row in rows:
        if row.state == "COMPLETE" and getattr(row, metric) is not None:
            rank += 1
            row = Row(**{**row.to_dict(), "rank": rank})
        ranked.append(row)
    return ranked


def best_trial_row(rows: list[Row]) -> Row:
    """The top finished refit if the study has one (trained on all the data), else the top
    finished trial; never a baseline."""
    for row in [r for r in rows if r.refit_of is not None] + rows:
        if not row.baseline and row.rank is not None:
            return row
    raise SpecError("no finished trial yet: launch the study (or wait for a trial to complete)")


def render(rows: list[Row], title: str = ""):
    """A `rich.table.Table` of the rows: validation error with its 95 % interval, then the test
    split's scores (what a trial is worth on items nothing was tuned on)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None)
    columns = ("rank", "trial", "model", "r", "lr", "val $ error [95% CI]", "val RMSLE", "val hits %",
               "test $ error", "test RMSLE", "test hits %", "range cover %", "range width", "state", "min")
    for name in columns:
        table.add_column(name, justify="left" if name in ("model", "state") else "right",
                         no_wrap=name in ("model", "state", "val $ error [95% CI]"))

    def fmt(value, spec: str) -> str:
        return "" if value is None else format(value, spec)

    def pct(value) -> str:
        return fmt(None if value is None else 100 * value, ".1f")

    for row in rows:
        style = "dim" if row.baseline else ("bold" if row.rank == 1 else None)
        val = fmt(row.mae, ",.2f")
        if row.mae is not None and row.mae_low is not None:
            val += f" [{row.mae_low:,.0f}-{row.mae_high:,.0f}]"
        # a model name comes from an MLflow tag: "[/x]" would crash the table, "[link=...]" fake a link
        model = escape(f"{row.model} ({row.variant})" if row.variant else row.model)
        trial = "baseline" if row.baseline else fmt(row.trial, "d") + (" refit" if row.refit_of is not None else "")
        table.add_row(fmt(row.rank, "d"), trial, model,
                      fmt(row.lora_r, "d"), fmt(row.learning_rate, ".1e"), val,
                      fmt(row.rmsle, ".3f"), pct(row.hit_rate), fmt(row.test_mae, ",.2f"),
                      fmt(row.test_rmsle, ".3f"), pct(row.test_hit_rate), pct(row.test_coverage),
                      fmt(row.test_interval_width, ".2f"), escape(row.state), fmt(row.minutes, ".1f"),
                      style=style)
    return table

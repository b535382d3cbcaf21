"""A study's trials and baselines from MLflow, best first by the study's objective.

Everything ranked is scored on the same validation items (the objective the sampler saw);
finished trials and baselines are ranked, pruned and failed trials follow unranked.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass

from pricer.errors import SpecError
from sweeps.track.redact import redact
from sweeps.track.tracking import REASON, REFIT_OF, STATE, STUDY, MlflowTracker

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
    fail_reason: str | None = None  # why a failed (or pruned) trial stopped, as its run records

    def to_dict(self) -> dict:
        return asdict(self)


def _number(value: str | None, kind: type) -> int | float | None:
    try:
        return kind(float(value)) if value not in (None, "None") else None
    except ValueError:
        return None


def _row(run, baseline: bool) -> Row:
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    refit_of = _number(t.get(REFIT_OF), int)
    state = t.get(STATE) or ("RUNNING" if run.info.status == "RUNNING" else "FAIL")
    return Row(rank=None, trial=_number(t.get("pricer.trial"), int), model=t.get("pricer.model", p.get("model", "?")),
               variant=t.get("pricer.variant", ""), lora_r=_number(p.get("lora_r"), int),
               learning_rate=_number(p.get("learning_rate"), float), mae=m.get("val_mae"),
               mae_low=m.get("val_mae_low"), mae_high=m.get("val_mae_high"), rmsle=m.get("val_rmsle"),
               hit_rate=m.get("val_hit_rate"), test_mae=m.get("test_mae"), test_rmsle=m.get("test_rmsle"),
               test_hit_rate=m.get("test_hit_rate"), state=state, minutes=m.get("minutes"), baseline=baseline, run_id=run.info.run_id,
               refit_of=refit_of, test_coverage=m.get("test_coverage"),
               test_interval_width=m.get("test_interval_width"), fail_reason=t.get(REASON))


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
    rows += [_row(r, True) for r in tracker.baseline_runs()]

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


def failures(rows: list[Row]) -> str:
    """One line: how many trials failed and why, their reasons grouped ("2 of 9 trials failed:
    loss is nan (2)"); "" when none failed. A reason is grouped by its head, the text before its
    first ":", ";" or "(", so the same failure with other numbers in its details counts once."""
    trials = [r for r in rows if not r.baseline and r.refit_of is None]
    failed = [r for r in trials if r.state == "FAIL"]
    if not failed:
        return ""
    heads = Counter(re.split(r"[:;(]", r.fail_reason or "no reason recorded", maxsplit=1)[0].strip() or "?"
                    for r in failed)
    why = ", ".join(f"{head} ({count})" for head, count in heads.most_common())
    return f"{len(failed)} of {len(trials)} trials failed: {why}"


def best_trial_row(rows: list[Row]) -> Row:
    """The top finished refit if the study has one (trained on all the data), else the top
    finished trial; never a baseline."""
    for row in [r for r in rows if r.refit_of is not None] + rows:
        if not row.baseline and row.rank is not None:
            return row
    raise SpecError("no finished trial yet: launch the study (or wait for a trial to complete)")

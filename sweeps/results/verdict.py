"""The verdict of a study: which model prices best on the test items, and how sure that is.

Every finished trial and baseline scored the same test items in the same order (their
``predictions.json`` in MLflow; the baselines' also holds the true prices), so any two can be
compared item by item (`pricer.predict.compare`). `verdict` picks the contenders: each model's
best finished trial (its refit when a run tagged ``pricer.refit_of`` retrained it), then the best
per family and per variant (base / instruct), and the baselines, each against the overall winner.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException

from pricer.errors import SpecError
from pricer.predict.compare import Paired, compare
from sweeps.results.leaderboard import Row, best_trial_row, leaderboard, objective_of
from sweeps.track.records import PREDICTIONS
from sweeps.track.tracking import MlflowTracker

REFIT_OF = "pricer.refit_of"


@dataclass
class Entry:
    """One contender: its leaderboard row, label, group, test predictions and errors."""

    row: Row
    label: str
    group: str  # "model", "family", "variant" or "baseline"
    predictions: list[float | None]
    errors: list[float]
    family: str = ""
    peak_mem_gib: float | None = None
    hours: float | None = None
    versus: Paired | None = None  # against the winner (None for the winner itself)
    metrics: dict = field(default_factory=dict)  # the run's final MLflow metrics
    items: list[dict] = field(default_factory=list, repr=False)  # the test rows' title/category/price/range


@dataclass(frozen=True)
class Verdict:
    study: str
    winner: Entry
    entries: list[Entry]
    truth: list[float]
    notes: list[str]

    def sentences(self) -> list[str]:
        """One plain sentence per run compared with the winner (a run that is both its model's
        and its family's best is said once)."""
        seen, out = set(), []
        for e in self.entries:
            if e.versus is not None and e.row.run_id not in seen:
                seen.add(e.row.run_id)
                out.append(e.versus.sentence())
        return out


class StudyResults:
    """A study's runs and their per-item test predictions, each downloaded once."""

    def __init__(self, tracking_uri: str, study: str) -> None:
        self.tracking_uri, self.study = tracking_uri, study
        self.rows = leaderboard(tracking_uri, study)
        self.tracker = MlflowTracker(tracking_uri, study, create=False)
        self._json: dict[str, dict] = {}
        self._csv: dict[str, list[dict]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="pricer-verdict-")
        self.objective = objective_of(self.tracker, study)  # (metric, maximize)

    def finished(self) -> list[Row]:
        return [r for r in self.rows if not r.baseline and r.rank is not None]

    def find(self, ref: str) -> Row:
        """A trial by number, a run by id, or a baseline by name.

        Raises:
            SpecError: no such run in the study (the message lists what there is).
        """
        for row in self.rows:
            if ref == row.run_id or (row.trial is not None and not row.baseline and ref == str(row.trial)) or (
                    row.baseline and ref == row.model):
                if row.state != "COMPLETE":
                    raise SpecError(f"study {self.study!r}: trial {row.trial} is {row.state.lower()}, not finished; "
                                    "compare finished trials")
                return row
        trials = ", ".join(str(r.trial) for r in self.finished()) or "none finished"
        baselines = ", ".join(r.model for r in self.rows if r.baseline) or "none"
        raise SpecError(f"study {self.study!r}: no trial, run id or baseline {ref!r} (finished trials: {trials}; "
                        f"baselines: {baselines})")

    def predictions(self, row: Row) -> dict:
        if row.run_id not in self._json:
            try:
                path = self.tracker.client.download_artifacts(row.run_id, PREDICTIONS,
                                                              str(Path(self._tmp.name) / row.run_id))
            except (OSError, MlflowException) as exc:
                raise SpecError(f"{name_of(row)}: no {PREDICTIONS} in its MLflow run (logged before per-item "
                                "predictions existed?); launch the study again in a fresh workdir") from exc
            self._json[row.run_id] = json.loads(Path(path).read_text())
        return self._json[row.run_id]

    def test_rows(self, row: Row) -> list[dict]:
        """A trial's ``predictions.csv``: title, category, price, predicted (and its range)."""
        if row.run_id not in self._csv:
            try:
                path = self.tracker.client.download_artifacts(row.run_id, "predictions.csv",
                                                              str(Path(self._tmp.name) / f"{row.run_id}-csv"))
            except (OSError, MlflowException):  # a baseline logs no predictions.csv
                self._csv[row.run_id] = []
                return []
            with open(path, newline="") as handle:
                self._csv[row.run_id] = [{k: _cell(v) for k, v in r.items()} for r in csv.DictReader(handle)]
        return self._csv[row.run_id]

    def truth(self) -> list[float]:
        """The study's test prices: a baseline's record of them, else a trial's predictions.csv."""
        for row in self.rows:
            if row.baseline:
                truth = self.predictions(row).get("truth")
                if truth and truth.get("test"):
                    return [float(t) for t in truth["test"]]
        for row in self.finished():
            rows = self.test_rows(row)
            if rows:
                return [float(r["price"]) for r in rows]
        raise SpecError(f"study {self.study!r}: no run recorded the test prices; launch it with test_items")

    def errors(self, row: Row, truth: list[float]) -> tuple[list[float | None], list[float]]:
        """A run's test predictions and dollar errors (a miss scores as $0, as in `pricer.metrics`)."""
        predicted = self.predictions(row).get("test") or []
        if len(predicted) != len(truth):
            raise SpecError(f"{name_of(row)}: {len(predicted)} test predictions for the study's {len(truth)} test "
                            "items (test_items differs between runs); compare runs that scored the same items")
        return predicted, [abs((p or 0.0) - t) for p, t in zip(predicted, truth, strict=True)]

    def refits(self) -> dict[int, Row]:
        """Trial number -> the latest finished run tagged ``pricer.refit_of`` with that number."""
        runs = self.tracker.client.search_runs([self.tracker.experiment_id],
                                               filter_string=f"tags.`{REFIT_OF}` LIKE '%'",
                                               order_by=["attributes.start_time ASC"])
        from sweeps.results.leaderboard import _row

        out = {}
        for run in runs:
            if run.info.status == "FINISHED":
                try:
                    out[int(run.data.tags[REFIT_OF])] = _row(run, False)
                except ValueError:
                    continue
        return out

    def run_metrics(self, row: Row) -> dict:
        return self.tracker.client.get_run(row.run_id).data.metrics

    def nominal_coverage(self, row: Row) -> float:
        """The price range's nominal coverage the trial was run with (its ``interval`` param)."""
        return float(self.tracker.client.get_run(row.run_id).data.params.get("interval", 0.8))

    def run_tags(self, row: Row) -> dict:
        return self.tracker.client.get_run(row.run_id).data.tags


def name_of(row: Row) -> str:
    if row.baseline:
        return f"{row.model} (baseline)"
    variant = f" ({row.variant})" if row.variant else ""
    return f"trial {row.trial}: {row.model}{variant}"


def _cell(value: str) -> object:
    if value in ("", None):
        return None
    try:
        return float(value)
    except ValueError:
        return value


def family_of(results: StudyResults, row: Row) -> str:
    from pricer.model.catalog import CATALOG

    tagged = results.run_tags(row).get("pricer.family")
    if tagged:
        return tagged
    entry = CATALOG.get(row.model)
    return entry.family if entry is not None else row.model


def compare_runs(tracking_uri: str, study: str, a: str, b: str) -> Paired:
    """`pricer compare STUDY A B`: two runs (trial numbers, run ids or baseline names) on the
    study's test items, paired item by item."""
    results = StudyResults(tracking_uri, study)
    row_a, row_b = results.find(a), results.find(b)
    truth = results.truth()
    _, errors_a = results.errors(row_a, truth)
    _, errors_b = results.errors(row_b, truth)
    return compare(name_of(row_a), errors_a, name_of(row_b), errors_b)


def verdict(results: StudyResults) -> Verdict:
    """The contenders of `results` against the overall winner (the study's best finished trial,
    or its refit).

    Raises:
        SpecError: no finished trial.
    """
    finished = results.finished()
    best_trial_row(results.rows)  # one line when nothing finished
    truth = results.truth()
    refits = results.refits()
    notes: list[str] = []

    def entry(row: Row, group: str, label: str) -> Entry:
        shown = refits.get(row.trial, row) if not row.baseline else row
        predicted, errors = results.errors(shown, truth)
        metrics = results.run_metrics(shown)
        minutes = metrics.get("minutes")
        return Entry(shown, label + (" (refit)" if shown is not row else ""), group, predicted, errors,
                     family=family_of(results, row) if not row.baseline else "baseline",
                     peak_mem_gib=metrics.get("peak_mem_gib"), hours=None if minutes is None else minutes / 60,
                     items=results.test_rows(shown), metrics=metrics)

    winner = entry(finished[0], "winner", name_of(finished[0]))
    entries: list[Entry] = []
    best_by: dict[tuple[str, str], Row] = {}
    for row in finished:  # best first
        best_by.setdefault(("model", row.model), row)
        best_by.setdefault(("family", family_of(results, row)), row)
        best_by.setdefault(("variant", row.variant or "?"), row)
    for (group, key), row in best_by.items():
        if group == "model":
            label = name_of(row)
        else:
            label = f"best {group} {key}: {name_of(row)}"
        entries.append(entry(row, group, label))
    entries.sort(key=lambda e: ("model", "family", "variant").index(e.group))
    entries += [entry(r, "baseline", name_of(r)) for r in results.rows if r.baseline and r.mae is not None]
    for e in entries:
        if e.row.run_id != winner.row.run_id:
            e.versus = compare(name_of(e.row), e.errors, winner.label, winner.errors)
    variants = {key: row for (group, key), row in best_by.items() if group == "variant"}
    if len(variants) == 2 and len({r.model for r in variants.values()}) == 2:
        names = " and ".join(f"{r.model} ({k})" for k, r in sorted(variants.items()))
        notes.append(f"The base/instruct comparison here is {names}: different models, so size and family "
                     "differ too, not only the variant. It is the question in miniature, not its answer.")
    return Verdict(results.study, winner, entries, truth, notes)

"""`pricer export STUDY --ensemble K`: the top-K trials and the best classical baseline(s) of a
study as one predictor folder, weighted on the validation items only.

Everything comes from MLflow: each member's per-item predictions on the study's validation and
test items (``predictions.json``), the adapters and the fitted baseline models. The weights see
validation only; the test split scores the ensemble beside each of its members, and pairs it
item by item with each member and each baseline (`pricer.predict.compare`), so the export says
whether the blend beats every part of it or only looks better.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pricer.atomic import replacing_folder, write_text
from pricer.errors import SpecError
from pricer.metrics import Metrics, score
from pricer.predict.baselinefile import SUFFIX
from pricer.predict.compare import Paired, compare
from pricer.predict.ensemble import Member, combine, fit_weights, save_ensemble
from sweeps.results.export import _MARKER, CARD, check_replaceable
from sweeps.results.leaderboard import Row, leaderboard
from sweeps.track.records import read_predictions
from sweeps.track.redact import redact
from sweeps.track.tracking import MlflowTracker


@dataclass(frozen=True)
class Scored:
    """A member (or the ensemble itself) with its weight and its scores on both splits."""

    name: str
    weight: float
    val: Metrics
    test: Metrics | None


@dataclass(frozen=True)
class EnsembleExport:
    folder: Path
    ensemble: Scored
    members: list[Scored]
    baselines: dict[str, Metrics]  # every baseline's test scores, the constant included
    paired: list[Paired]  # the ensemble (A) against each member, then each other baseline, on test

    @property
    def beats_every_member(self) -> bool:
        members = {s.name for s in self.members}
        against = [p for p in self.paired if p.b in members]
        return bool(against) and all(p.told_apart and p.difference < 0 for p in against)

    def to_dict(self) -> dict:
        def brief(m: Metrics | None) -> dict | None:
            return None if m is None else {"mae": m.mae, "rmsle": m.rmsle, "hit_rate": m.hit_rate, "n": m.n}

        return {"folder": str(self.folder),
                "ensemble": {"val": brief(self.ensemble.val), "test": brief(self.ensemble.test)},
                "members": [{"name": s.name, "weight": s.weight, "val": brief(s.val), "test": brief(s.test)}
                            for s in self.members],
                "baselines_test": {k: brief(v) for k, v in self.baselines.items()},
                "paired_test": [p.to_dict() for p in self.paired],
                "beats_every_member": self.beats_every_member}


def _name(row: Row) -> str:
    if row.baseline:
        return row.model
    return f"refit-of-{row.trial}" if row.refit_of is not None else f"trial-{row.trial}"


def export_ensemble(tracking_uri: str, study: str, out: Path, *, k: int = 2, baselines: int = 1) -> EnsembleExport:
    """Write the ensemble folder to `out` (replacing a previous export) and score it.

    Args:
        k: how many of the best finished trials join (fewer if fewer finished).
        baselines: how many classical baselines join, best validation error first (never the
            constant).
    """
    if k < 0 or baselines < 0 or k + baselines < 1:
        raise SpecError("--ensemble K: K >= 1 trials (or --baselines >= 1)")
    rows = leaderboard(tracking_uri, study)
    trials = [r for r in rows if not r.baseline and r.rank is not None][:k]
    classical = sorted((r for r in rows if r.baseline and r.model != "constant" and r.mae is not None),
                       key=lambda r: r.mae)[:baselines]
    if not trials and k:
        raise SpecError("no finished trial yet: launch the study (or wait for a trial to complete)")
    chosen = trials + classical
    tracker = MlflowTracker(tracking_uri, study, create=False)
    out = Path(out)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        staged = tmp / "ensemble"
        (staged / "members").mkdir(parents=True)
        fetched: dict[str, dict] = {}  # run id -> predictions.json, each downloaded once

        def predictions_of(row: Row) -> dict:
            if row.run_id not in fetched:
                fetched[row.run_id] = read_predictions(tracker, row.run_id, tmp / f"p{len(fetched)}", _name(row))
            return fetched[row.run_id]

        baseline_rows = [r for r in rows if r.baseline]
        if not baseline_rows:
            raise SpecError(f"study {study!r}: no baseline runs, so no true prices to fit weights on")
        truth = predictions_of(baseline_rows[0]).get("truth")
        if not truth:
            raise SpecError(f"study {study!r}: its baselines were logged without true prices; relaunch it")
        preds = [predictions_of(r) for r in chosen]
        for name, p in zip(map(_name, chosen), preds, strict=True):
            for split in ("validation", "test"):
                if len(p[split]) != len(truth[split]):
                    raise SpecError(f"{name}: {len(p[split])} {split} predictions for {len(truth[split])} items "
                                    "(eval_items / test_items differ between trials); ensemble trials that "
                                    "scored the same items")
        weights = fit_weights([p["validation"] for p in preds], truth["validation"])
        members = []
        for row, weight in zip(chosen, weights, strict=True):
            # the name comes from an MLflow tag and becomes a folder: Member takes only a plain one
            name = _name(row)
            if row.baseline:
                filename = f"model{SUFFIX}"
                member = Member(name, "baseline", f"members/{name}/{filename}", weight)
                try:
                    local = tracker.client.download_artifacts(row.run_id, f"model/{filename}", str(tmp / name))
                except OSError as exc:  # an older launch logged a joblib pickle, which is no longer loaded
                    raise SpecError(f"{name}: no model/{filename} in its MLflow run (a study launched by an older "
                                    "version, whose baselines are joblib pickles); launch it again in a fresh "
                                    "workdir, then export") from exc
            else:
                member = Member(name, "adapter", f"members/{name}", weight)
                local = tracker.client.download_artifacts(row.run_id, "adapter", str(tmp / name))
            target = staged / member.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local, target)
            members.append(member)

        def scored(name: str, weight: float, validation: list, test: list) -> Scored:
            return Scored(name, weight, score(truth["validation"], validation),
                          score(truth["test"], test) if truth["test"] else None)

        members_scored = [scored(m.name, m.weight, p["validation"], p["test"])
                          for m, p in zip(members, preds, strict=True)]
        ensemble = scored("ensemble", 1.0, combine([p["validation"] for p in preds], weights),
                          combine([p["test"] for p in preds], weights))
        every_baseline = {r.model: score(truth["test"], predictions_of(r)["test"])
                          for r in baseline_rows if truth["test"]}
        result = EnsembleExport(out, ensemble, members_scored, every_baseline,
                                _paired(ensemble, members_scored, every_baseline))
        save_ensemble(staged, members, result.to_dict())
        write_text(staged / CARD, _card(study, tracking_uri, result))
        with replacing_folder(out) as place:
            for part in staged.iterdir():
                part.rename(place / part.name)
    return result


def _paired(ensemble: Scored, members: list[Scored], baselines: dict[str, Metrics]) -> list[Paired]:
    if ensemble.test is None:
        return []
    against = {s.name: s.test for s in members if s.test is not None}
    against.update((name, m) for name, m in baselines.items() if name not in against)
    return [compare("ensemble", ensemble.test.errors, name, m.errors) for name, m in against.items()]


def _card(study: str, tracking_uri: str, result: EnsembleExport) -> str:
    def line(name: str, weight: str, val: Metrics, test: Metrics | None) -> str:
        t = f"${test.mae:,.2f} | {test.rmsle:.3f} | {100 * test.hit_rate:.1f}" if test else "– | – | –"
        return f"| {name} | {weight} | ${val.mae:,.2f} | {t} |"

    rows = [line("**ensemble**", "", result.ensemble.val, result.ensemble.test)]
    rows += [line(s.name, f"{s.weight:.2f}", s.val, s.test) for s in result.members]
    baselines = "\n".join(f"| {name} | ${m.mae:,.2f} | {m.rmsle:.3f} | {100 * m.hit_rate:.1f} |"
                          for name, m in result.baselines.items())
    paired = "\n".join(f"- {p.sentence()}" for p in result.paired) or "- no test items were scored"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""{_MARKER}
# {study}: ensemble price predictor

The study's best fine-tuned trials and its best classical baseline, combined in log-price space
(a weighted geometric mean) with weights fitted on the validation items only. Exported {when}
from `{redact(tracking_uri)}`.

| member | weight | val $ error | test $ error | test RMSLE | test hits % |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Every baseline on the same test items:

| baseline | test $ error | test RMSLE | test hits % |
|---|---|---|---|
{baselines}

Paired item by item on the test items (bootstrap interval of the mean difference, Wilcoxon p):

{paired}

## Use

```bash
pricer predict --adapter {{this folder}} "Product title and description ..."
pricer evaluate --adapter {{this folder}} --items items.jsonl --json
```
"""


def register_ensemble(tracking_uri: str, study: str, folder: Path, name: str) -> tuple[str, str]:
    """Log an exported ensemble folder as an MLflow model on the study's parent run (it belongs to
    no single trial) and register it as a new version of `name`, with its validation and test
    scores.

    Returns:
        (the logged model's URI, the new version).
    """
    from pricer.model.adapter import read_meta
    from sweeps.track.registry import log_predictor

    meta = read_meta(folder)
    scores = meta["metrics"]["ensemble"]
    metrics = {f"{split}_{k}": v for split in ("val", "test") if scores[split]
               for k, v in scores[split].items() if k != "n"}
    parent = MlflowTracker(tracking_uri, study, create=False).study_runs(study)[0]
    members = ", ".join(m["name"] for m in meta["members"])
    uri, version = log_predictor(tracking_uri, parent, Path(folder), register=name, metrics=metrics,
                                 tags={"pricer.study": study, "pricer.kind": "ensemble", "pricer.members": members},
                                 description=f"{study}: ensemble of {members}; test $ error "
                                             f"{metrics.get('test_mae', float('nan')):.2f}")
    return uri, str(version)

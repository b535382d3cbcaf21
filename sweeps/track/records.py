"""What a study records in its runs: a trial's result (curves, final metrics, costs, adapter,
predictions), the baselines beside the trials, and Optuna's plots on the parent run. Written
through the `Tracker` protocol of `sweeps.track.tracking`.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pricer.errors import SpecError
from sweeps.track.tracking import BASELINE_SET, ROLE, STATE, Tracker

PREDICTIONS = "predictions.json"


def _metrics(prefix: str, metrics: Any) -> dict[str, float]:
    """``val_mae``, ``val_rmsle``... and the dollar error's 95 % bootstrap interval
    (``val_mae_low`` / ``val_mae_high``) when the per-item errors are known."""
    values = metrics.to_dict()
    out = {f"{prefix}_{k}": float(values[k]) for k in ("mae", "rmsle", "hit_rate", "band_rate", "misses", "n",
                                                        "coverage", "interval_width", "prompt_tokens_mean",
                                                        "seconds_per_1000", "peak_rss_gib")
           if values.get(k) is not None}
    interval = metrics.mae_interval()
    if interval is not None:
        out[f"{prefix}_mae_low"], out[f"{prefix}_mae_high"] = interval
    return out


def log_predictions(tracker: Any, run_id: str, validation: list, test: list, truth: dict | None = None) -> None:
    """Per-item predictions on the study's validation and test items (same items, same order for
    every trial and baseline): what an ensemble is fitted and scored on. The baselines' file also
    holds the true prices (``truth``), so an export needs no copy of the data."""
    payload = {"validation": validation, "test": test, **({"truth": truth} if truth else {})}
    tracker.log_json(run_id, payload, PREDICTIONS)


def read_predictions(tracker: Any, run_id: str, folder: Path, name: str) -> dict:
    """A run's `log_predictions` file, downloaded into `folder`.

    Raises:
        SpecError: the run has none (logged before per-item predictions existed), naming it `name`.
    """
    from mlflow.exceptions import MlflowException

    try:
        path = tracker.client.download_artifacts(run_id, PREDICTIONS, str(folder))
    except (OSError, MlflowException) as exc:
        raise SpecError(f"{name}: no {PREDICTIONS} in its MLflow run (logged before per-item predictions "
                        "existed?); launch the study again in a fresh workdir") from exc
    return json.loads(Path(path).read_text())


def log_trial_result(tracker: Tracker, run_id: str, result: Any, *, gpu_hours: float,
                     streamed: Collection[int] = ()) -> None:
    """A finished (or pruned) trial's `pricer.train.loop.Result`: curves, final metrics, costs, and
    the artifacts export and a reader need (adapter, predictions CSV, scatter chart).

    Args:
        streamed: train-loss steps already logged while the trial ran (logged once, not twice).
    """
    import csv

    from pricer.metrics import scatter_chart

    # e.g. the steps a resumed trial's first try trained
    steps = {step: {"train_loss": loss} for step, loss in result.train_losses if step not in streamed}
    # val_mae / val_rmsle / val_hit_rate arrived through report(), the final step's included
    reported = {"val_mae", "val_rmsle", "val_hit_rate"}
    final = {**{k: v for k, v in _metrics("val", result.val_metrics).items() if k not in reported}, "wall_s": result.wall_s, "minutes": result.wall_s / 60,
             "train_tokens_per_s": result.train_tokens_per_s, "peak_mem_gib": result.peak_mem_gib,
             "steps": result.steps, "train_s": result.train_s, "gpu_hours": gpu_hours}
    if result.test_metrics is not None:
        final.update(_metrics("test", result.test_metrics))
    if result.interval:  # the range's calibration factor and the coverages before it
        final.update({f"interval_{k}": v for k, v in result.interval.items() if isinstance(v, (int, float))})
    if result.plan is not None:  # how the step ran in the memory budget
        final.update(micro_batch_size=result.plan.micro_batch_size,
                     gradient_checkpointing=int(result.plan.gradient_checkpointing))
    steps[result.steps] = {**steps.get(result.steps, {}), **final}
    tracker.log_steps(run_id, steps)  # the curve and the final numbers in one call
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        summary = {k: v for k, v in result.to_dict().items() if k not in ("predictions", "val_predictions")}
        result_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        tracker.log_artifact(run_id, result_path)
        if result.predictions:
            csv_path = Path(tmp) / "predictions.csv"
            with csv_path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(result.predictions[0]))
                writer.writeheader()
                writer.writerows(result.predictions)
            tracker.log_artifact(run_id, csv_path)
            truths = [p["price"] for p in result.predictions]
            preds = [p["predicted"] for p in result.predictions]
            chart = scatter_chart(truths, preds, Path(tmp) / "scatter.png",
                                  title=f"{result.config.model}: test predictions")
            tracker.log_artifact(run_id, chart)
    log_predictions(tracker, run_id, result.val_predictions, [p["predicted"] for p in result.predictions])
    if result.adapter_dir is not None and Path(result.adapter_dir).is_dir():
        tracker.log_artifact(run_id, Path(result.adapter_dir), "adapter")


def log_baselines(tracker: Tracker, parent_id: str, results: list) -> str:
    """Scored baselines as runs beside the trials (``pricer.role=baseline``): each entry is
    (name, validation Metrics, test Metrics or None, predictions {"validation", "test"} or None,
    the fitted model's file or None), on the validation items the trials are ranked on and the
    test items they are scored on.

    Returns:
        The set's id (every run's ``pricer.baseline_set`` tag): workers started together each log
        a set, and `MlflowTracker.baseline_runs` reads the oldest one only.
    """
    set_id = uuid.uuid4().hex[:12]
    for name, val, test, predictions, model_file in results:
        run_id = tracker.start_run(f"baseline-{name}", parent_id=parent_id,
                                   tags={ROLE: "baseline", "pricer.baseline": name, STATE: "COMPLETE",
                                         "pricer.model": name, "pricer.variant": "", BASELINE_SET: set_id})
        tracker.log_metrics(run_id, {**_metrics("val", val), **(_metrics("test", test) if test else {})})
        if predictions is not None:
            log_predictions(tracker, run_id, predictions["validation"], predictions["test"],
                            predictions.get("truth"))
        if model_file is not None:
            tracker.log_artifact(run_id, Path(model_file), "model")
        tracker.end_run(run_id, "FINISHED")
    return set_id


def log_study_plots(tracker: Tracker, run_id: str, study: Any) -> list[str]:
    """Optuna's optimisation history and parameter importances as HTML on the parent run.

    Returns:
        The names of the plots written (importances need >= 2 finished trials that differ).
    """
    import warnings

    import optuna.visualization as vis
    from optuna.trial import TrialState

    written = []
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots = {"optimization_history.html": vis.plot_optimization_history,
             "param_importances.html": vis.plot_param_importances}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plot in plots.items():
            if finished < (2 if name == "param_importances.html" else 1):
                continue
            try:
                target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
                with warnings.catch_warnings():  # "too few trials to compute importances"
                    warnings.simplefilter("ignore", UserWarning)
                    figure = plot(study, target=target) if target else plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few finished trials for this plot yet
            path = Path(tmp) / name
            figure.write_html(str(path), include_plotlyjs=True)
            tracker.log_artifact(run_id, path, "optuna")
            written.append(name)
    return written

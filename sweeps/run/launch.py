"""Launch or continue a study: data once, baselines once, then trials until the study's total,
then the refits of the best trials on all the data when the study asks for them (`sweeps.run.refit`).

Every worker (this process, or others on one shared storage) runs the same loop; the total in
``n_trials`` is counted over the shared storage, so N workers together run N trials, not N each.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import TrialFailed
from sweeps.run.objective import Objective
from sweeps.run.presence import Presence
from sweeps.run.stop import raise_if_stopped
from sweeps.run.studies import (
    SURPLUS,
    WAIT_POLL_S,
    close_storage,
    heartbeat_settings,
    open_study,
    optuna_experimental,
    prepare_data,
)
from sweeps.spec.study import StudySpec
from sweeps.track.records import log_baselines, log_study_plots
from sweeps.track.redact import redact
from sweeps.track.tracking import MlflowTracker

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

def counted(study: optuna.Study) -> int:
    """Trials that count toward the study's total: finished or running, except failed trials
    that a heartbeat retry replaced (the retry counts instead)."""
    from optuna.storages import fail_stale_trials

    with optuna_experimental():
        fail_stale_trials(study)  # a dead worker's RUNNING trial must not count: fail and re-queue it first
    return _counting(study.get_trials(deepcopy=False))


def _counting(trials: list) -> int:
    from optuna.trial import TrialState

    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in states and not t.system_attrs.get(SURPLUS)
               and not (t.state == TrialState.FAIL and t.number in retried))


def within_total(objective: Objective, total: int | None):
    """`objective`, unless its trial is past the study's total. Two workers that each counted
    the total not yet reached, at the same moment, both created a trial: 4 trials for a total of
    3. The later of the two finds the earlier-numbered ones already fill the total; it is failed
    at once (system attribute ``pricer.surplus``, not counted, no MLflow run). A trial from the
    queue (enqueued, or a heartbeat retry) always runs: its parameters would be lost."""

    def guarded(trial: optuna.Trial):
        system = trial.storage.get_trial_system_attrs(trial._trial_id)
        queued = "fixed_params" in system or "failed_trial" in system
        if total is not None and not queued:
            earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
            if _counting(earlier) >= total:
                trial.storage.set_trial_system_attr(trial._trial_id, SURPLUS, True)
                raise TrialFailed(f"surplus: the study's total of {total} was reached by other workers meanwhile")
        return objective(trial)

    return guarded


def _running(study: optuna.Study) -> list[int]:
    from optuna.trial import TrialState

    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def enqueue(spec: StudySpec, study: optuna.Study) -> None:
    """The study file's known-good trials, once per study (skipped if already there)."""
    for params in spec.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)


def open_run(spec: StudySpec, *, progress: bool = True) -> tuple[Path, MlflowTracker, optuna.Study, str]:
    """What every worker does before its first trial: the stores checked, the data built, the
    study and its MLflow parent run opened, the baselines fitted and the enqueued trials queued
    (each once per study). A fleet calls it once before its workers start, so that they don't
    all build the data and fit the baselines at the same moment.

    Returns:
        (the dataset folder, the tracker, the study, the parent run's id).
    """
    from sweeps.track.preflight import check_stores

    heartbeat_settings()  # a bad PRICER_HEARTBEAT_S / PRICER_GRACE_S is one line, before anything is made
    check_stores(spec.storage, spec.tracking_uri)  # before anything is built or created
    data = prepare_data(spec, progress=progress)
    tracker = MlflowTracker(spec.tracking_uri, spec.name)
    study = open_study(spec, tracker)
    parent_id, created = tracker.study_run(spec.name, {"pricer.objective": spec.objective.metric,
                                                       "pricer.direction": spec.objective.directions[0]})
    if created:
        tracker.log_params(parent_id, {"storage": spec.storage, "data": str(data),
                                       "data_source": ", ".join(spec.data.resolve_all(spec.path)),
                                       "objective": ",".join(spec.objective.names),
                                       "sampler": spec.sampler.type, "pruner": spec.pruner.type})
    if spec.path is not None:
        # the study file as written, less any password in its storage or tracking URL
        tracker.client.log_text(parent_id, redact(Path(spec.path).read_text()), Path(spec.path).name)
    if not tracker.runs("baseline"):
        _baselines(spec, tracker, parent_id, data)
    enqueue(spec, study)
    return data, tracker, study, parent_id


def launch(spec: StudySpec, *, progress: bool = True) -> optuna.Study:
    """Run the study's trials until ``n_trials`` exist in its storage (all workers together) or
    ``timeout`` passes; re-running continues the same study and the same MLflow parent run.

    Returns:
        The Optuna study (its best trial holds the MLflow run id in ``user_attrs``).
    """
    import optuna

    started = time.monotonic()
    data, tracker, study, parent_id = open_run(spec, progress=progress)

    objective = Objective(spec, str(data), tracker, parent_id, progress=progress)
    total = spec.n_trials
    waiting = done = False
    presence = Presence(study, *heartbeat_settings())
    try:
        while spec.timeout is None or time.monotonic() - started < spec.timeout:
            raise_if_stopped()
            if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
                done = True
                break
            if total is None or counted(study) < total:
                study.optimize(within_total(objective, total), n_trials=1, catch=(TrialFailed,))
                continue
            if not (running := _running(study)):
                done = True
                break
            # Total reached, but a RUNNING trial may belong to a dead worker: leaving now would
            # leave it RUNNING for good. Wait until it finishes, or its heartbeat goes stale and
            # counted() fails and re-queues it; the total is then short and this worker runs it.
            if not waiting:
                log.warning("study %s: total of %d reached with trial(s) %s still running; waiting for them "
                            "to finish (or to be retried here if their worker is gone)", spec.name, total,
                            ", ".join(map(str, running)))
                waiting = True
            time.sleep(WAIT_POLL_S)
        if done and spec.refit is not None:  # a worker stopped by its timeout starts no refit either
            from sweeps.run.refit import run_refits

            run_refits(spec, study, str(data), tracker, parent_id, progress=progress)
    finally:
        _leave(presence, tracker, parent_id, study)
    return study


def _leave(presence: Presence, tracker: MlflowTracker, parent_id: str, study: optuna.Study) -> None:
    """The shared parent run is ended (with the study's plots) by the last worker out only; this
    worker's database connections are closed either way."""
    try:
        if presence.leave():
            log_study_plots(tracker, parent_id, study)
            tracker.end_run(parent_id, "FINISHED")
            # one entry per end: a fleet's soak counts them (exactly one per launch of the fleet)
            tracker.log_metrics(parent_id, {"parent_run_ends": 1}, step=os.getpid())
    finally:
        close_storage(study)


def _baselines(spec: StudySpec, tracker: MlflowTracker, parent_id: str, data: Path) -> None:
    """The classical baselines, fitted once on the train split and scored on the validation
    items the trials are ranked on and the test items they are scored on; each fitted model is
    logged too, so an ensemble export can carry the best one."""
    import tempfile

    from pricer.data.dataset import as_items, load_splits
    from pricer.predict.baselinefile import SUFFIX, save_baseline
    from pricer.predict.baselines import BASELINES, fit_baselines, score_baseline
    from sweeps.spec.space import to_config

    config = to_config(spec, {p.name: p.first for p in spec.search_space.values() if not p.when})
    splits = load_splits(data)
    val = as_items(splits["validation"])[:config.eval_items]
    test = as_items(splits["test"])[:config.test_items]
    fitted = fit_baselines(splits["train"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in BASELINES:
            val_metrics, val_preds = score_baseline(fitted[name], val)
            test_metrics, test_preds = score_baseline(fitted[name], test) if test else (None, [])
            model_file = save_baseline(fitted[name], Path(tmp) / name / f"model{SUFFIX}")
            predictions = {"validation": val_preds, "test": test_preds,
                           "truth": {"validation": [i.price for i in val], "test": [i.price for i in test]}}
            results.append((name, val_metrics, test_metrics, predictions, model_file))
        log_baselines(tracker, parent_id, results)

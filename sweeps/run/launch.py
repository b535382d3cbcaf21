"""Launch or continue a study: data once, baselines once, then trials until the study's total,
then the refits of the best trials on all the data when the study asks for them (`sweeps.run.refit`).

Every worker (this process, or others on one shared storage) runs the same loop; the total in
``n_trials`` is counted over the shared storage, so N workers together run N trials, not N each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import TrialFailed
from pricer.phases import phase
from sweeps.run.budget import REQUEUED, requeue
from sweeps.run.objective import REASON_ATTR, RUN_ID_ATTR, Objective
from sweeps.run.presence import Presence, end_orphan_runs, end_parent_run
from sweeps.run.process import start_trial_server, trial_context
from sweeps.run.stop import raise_if_stopped
from sweeps.run.studies import (
    SURPLUS,
    WAIT_POLL_S,
    close_storage,
    heartbeat_settings,
    open_study,
    optuna_experimental,
    prepare_data,
    reseed,
    worker_number,
)
from sweeps.spec.study import StudySpec
from sweeps.track.records import log_baselines
from sweeps.track.redact import redact
from sweeps.track.tracking import MlflowTracker

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

def counted(study: optuna.Study) -> int:
    """Trials that count toward the study's total: finished or running, except failed trials
    that a retry replaced (a heartbeat retry, or a re-queue: `sweeps.run.budget`; the retry
    counts instead)."""
    from optuna.storages import fail_stale_trials

    with optuna_experimental():
        fail_stale_trials(study)  # a dead worker's RUNNING trial must not count: fail and re-queue it first
    return _counting(study.get_trials(deepcopy=False))


def _counting(trials: list) -> int:
    from optuna.trial import TrialState

    # every try a retry replaced, not only the first: a retry of a retry names both
    retried = {n for t in trials for n in t.system_attrs.get("retry_history") or ()}
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in states and not t.system_attrs.get(SURPLUS)
               and not (t.state == TrialState.FAIL and (t.number in retried or t.system_attrs.get(REQUEUED))))


def within_total(objective: Objective, total: int | None):
    """`objective`, unless its trial is past the study's total. Two workers that each counted
    the total not yet reached, at the same moment, both created a trial: 4 trials for a total of
    3. The later of the two finds the earlier-numbered ones already fill the total; it is failed
    at once (system attribute ``pricer.surplus``, not counted, no MLflow run). A trial from the
    queue (enqueued, or a heartbeat retry) always runs: its parameters would be lost."""

    def guarded(trial: optuna.Trial):
        try:
            system = trial.storage.get_trial_system_attrs(trial._trial_id)
            queued = "fixed_params" in system or "failed_trial" in system
            if total is not None and not queued:
                earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
                if _counting(earlier) >= total:
                    trial.storage.set_trial_system_attr(trial._trial_id, SURPLUS, True)
                    raise TrialFailed(f"surplus: the study's total of {total} was reached by other workers meanwhile")
            return objective(trial)
        except KeyboardInterrupt as exc:
            # a stop that came before the trial's run started (the objective re-queues the others)
            if not trial.storage.get_trial_system_attrs(trial._trial_id).get(REQUEUED):
                requeue(trial, limited=True, drop=(RUN_ID_ATTR, REASON_ATTR))
                trial.set_user_attr(REASON_ATTR, f"{str(exc) or 'interrupted (Ctrl-C)'} before it started "
                                                 "(re-queued: not charged to the study's n_trials)")
            raise

    return guarded


def _running(study: optuna.Study) -> list[int]:
    from optuna.trial import TrialState

    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def enqueue(spec: StudySpec, study: optuna.Study) -> None:
    """The study file's known-good trials, once per study (skipped if already there)."""
    for params in spec.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)


def open_run(spec: StudySpec, *, progress: bool = True,
             worker: bool = False) -> tuple[Path, MlflowTracker, optuna.Study, str]:
    """What every worker does before its first trial: the stores checked, the data built, the
    study and its MLflow parent run opened, the baselines fitted and the enqueued trials queued
    (each once per study). A fleet calls it once before its workers start, so that they don't
    all build the data and fit the baselines at the same moment.

    Args:
        worker: this process runs trials next: their forkserver starts once the stores answer.

    Returns:
        (the dataset folder, the tracker, the study, the parent run's id).
    """
    from sweeps.track.preflight import check_stores

    # a bad PRICER_HEARTBEAT_S / PRICER_GRACE_S / PRICER_TRIAL_START is one line, before anything is made
    heartbeat_settings()
    trial_context()
    with phase("check the stores"):
        check_stores(spec.storage, spec.tracking_uri)  # before anything is built or created
    if worker:
        start_trial_server()
    with phase("data build"):
        data = prepare_data(spec, progress=progress)
    with phase("open the study and its MLflow run"):
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
        end_orphan_runs(tracker, study)
    if not tracker.runs("baseline"):
        with phase("baselines"):
            _baselines(spec, tracker, parent_id, data)
    enqueue(spec, study)
    return data, tracker, study, parent_id


def launch(spec: StudySpec, *, progress: bool = True,
           on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> optuna.Study:
    """Run the study's trials until ``n_trials`` exist in its storage (all workers together) or
    ``timeout`` passes; re-running continues the same study and the same MLflow parent run.

    Args:
        progress: progress bars for the data build and inside each trial.
        on_trial: called with each trial this worker finished (complete, pruned or failed).

    Returns:
        The Optuna study (its best trial holds the MLflow run id in ``user_attrs``).
    """
    import optuna

    started = time.monotonic()
    data, tracker, study, parent_id = open_run(spec, progress=progress, worker=True)
    callbacks = [lambda _study, trial: on_trial(trial)] if on_trial else None

    objective = Objective(spec, str(data), tracker, parent_id, progress=progress)
    total = spec.n_trials
    waiting = done = False
    presence = Presence(study, *heartbeat_settings())
    seed_by_rank(spec, study, presence)
    try:
        while spec.timeout is None or time.monotonic() - started < spec.timeout:
            raise_if_stopped()
            if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
                done = True
                break
            if total is None or counted(study) < total:
                objective.backoff.wait()  # the tracking store was down at the last trial's start
                study.optimize(within_total(objective, total), n_trials=1, catch=(TrialFailed,),
                               callbacks=callbacks)
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


def seed_by_rank(spec: StudySpec, study: optuna.Study, presence: Presence) -> None:
    """Workers started by hand together (no `PRICER_WORKER` number) open an empty study alike, so
    their seeded samplers proposed the same trials: each worker after the first on the roll shifts
    its seed by its rank. The first, or a worker alone, keeps the study's seed."""
    if spec.sampler.seed is None or worker_number() is not None:
        return
    if rank := presence.rank():
        reseed(spec, study, rank)


def _leave(presence: Presence, tracker: MlflowTracker, parent_id: str, study: optuna.Study) -> None:
    """The shared parent run is ended (with the study's plots) by the last worker out only; this
    worker's database connections are closed either way."""
    try:
        if presence.leave():
            end_parent_run(tracker, parent_id, study)
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
        tracker.keep_oldest_baselines(log_baselines(tracker, parent_id, results))

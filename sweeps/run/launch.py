"""Launch or continue a study: data once, baselines once, then trials until the study's total,
then the refits of the best trials on all the data when the study asks for them (`sweeps.run.refit`).

Every worker (this process, or others on one shared storage) runs the same loop; the total in
``n_trials`` is counted over the shared storage, so N workers together run N trials, not N each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import DataError, SpecError, TrialFailed
from sweeps.run.objective import RUN_ID_ATTR, Objective
from sweeps.spec.space import grid
from sweeps.spec.study import StudySpec
from sweeps.track.redact import redact
from sweeps.track.tracking import REASON, STATE, MlflowTracker, log_baselines, log_study_plots

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# A RUNNING trial whose worker stopped beating for GRACE_S is failed (and retried) by a live worker;
# PRICER_HEARTBEAT_S / PRICER_GRACE_S change them (a test kills a worker and waits seconds, not minutes).
HEARTBEAT_S, GRACE_S = 30, 120
# How often a worker that reached the total looks again at trials other workers still run.
WAIT_POLL_S = 5.0


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, from the environment or the defaults.

    Raises:
        SpecError: a value that is not a whole number of seconds >= 1, or a grace period not
            longer than the interval (every trial would look stale between two beats).
    """
    values = {}
    for name, default in (("PRICER_HEARTBEAT_S", HEARTBEAT_S), ("PRICER_GRACE_S", GRACE_S)):
        raw = os.environ.get(name, "").strip() or str(default)
        if not raw.isdigit() or int(raw) < 1:
            raise SpecError(f"{name}={os.environ.get(name)!r}: must be a whole number of seconds >= 1 "
                            f"(default {default})")
        values[name] = int(raw)
    heartbeat, grace = values["PRICER_HEARTBEAT_S"], values["PRICER_GRACE_S"]
    if grace <= heartbeat:
        raise SpecError(f"PRICER_GRACE_S={grace} must be longer than PRICER_HEARTBEAT_S={heartbeat}")
    return heartbeat, grace


@contextlib.contextmanager
def optuna_experimental() -> Iterator[None]:
    """Heartbeats, their retry callback, ``fail_stale_trials`` and TPE's ``group`` are what this
    module is built on; Optuna still calls them experimental, which tells a user nothing."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def prepare_data(spec: StudySpec, *, progress: bool = True) -> Path:
    """The study's curated dataset folder, built once per data spec (workers share it)."""
    from pricer.data.dataset import build

    source = spec.data.resolve(spec.path)
    key = json.dumps([source, spec.data.limit, spec.data.seed, spec.data.balance])
    out = Path(spec.workdir).resolve() / f"data-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if (out / "dataset_dict.json").is_file():
        return out
    partial = out.with_name(f"{out.name}.partial-{time.time_ns()}")
    try:
        build(source, partial, limit=spec.data.limit, seed=spec.data.seed, balance=spec.data.balance,
              progress=progress)
    except DataError as exc:
        if source != spec.data.fallback or source == spec.data.source:
            raise
        # the fallback's own error (e.g. hub offline) alone would hide the cause: the source is missing
        raise DataError(f"data.source {spec.data.source}: no such file, and its fallback failed: {exc}") from exc
    try:
        partial.rename(out)
    except OSError:  # another worker finished first: theirs is the same data
        shutil.rmtree(partial, ignore_errors=True)
    return out


def make_sampler(spec: StudySpec, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study file's sampler; ``offset`` shifts a fixed seed so that a worker joining a study
    that already holds trials does not replay the first worker's proposals."""
    import optuna

    s = spec.sampler
    seed = None if s.seed is None else s.seed + offset
    startup = {} if s.n_startup_trials is None else {"n_startup_trials": s.n_startup_trials}
    if s.type == "tpe":
        # multivariate + group: model-dependent (conditional) parameters are modelled jointly
        with optuna_experimental():
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, **startup)
    if s.type == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    if s.type == "grid":
        return optuna.samplers.GridSampler(grid(spec.search_space), seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class FailStaleRun:
    """Heartbeat-stale trial (its worker was killed or lost): Optuna has marked it FAIL; end its
    MLflow run as failed with the reason, then re-queue it (`RetryHeartbeatStaleTrialCallback`)."""

    def __init__(self, tracker: MlflowTracker, max_retry: int = 2) -> None:
        import optuna

        self.tracker = tracker
        self.grace_s = heartbeat_settings()[1]
        with optuna_experimental():
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            self.tracker.set_tags(run_id, {STATE: "FAIL", REASON: f"worker stopped sending heartbeats for "
                                                                 f"{self.grace_s} s (killed or lost); re-queued"})
            self.tracker.end_run(run_id, "FAILED")
        self.retry(study, trial)


def open_storage(url: str, on_stale: FailStaleRun | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a trial whose worker died is failed and re-queued."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    heartbeat, grace = heartbeat_settings()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            with optuna_experimental():
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                                  heartbeat_stale_trial_callback=on_stale)
        except SQLAlchemyError as exc:
            # workers started together on a fresh database race to create its tables: the loser
            # gets a UniqueViolation on CREATE TYPE and finds the schema there a moment later
            if attempt == 2:
                raise SpecError(f"storage {redact(url)}: can't open it ({type(exc).__name__}: "
                                f"{redact(str(exc).splitlines()[0])})") from exc
            time.sleep(1 + attempt)
        except (ValueError, ImportError) as exc:
            raise SpecError(f"storage {redact(url)}: can't open it ({type(exc).__name__}: {redact(exc)})") from exc
    raise AssertionError("unreachable")


def open_study(spec: StudySpec, tracker: MlflowTracker | None = None) -> optuna.Study:
    """The study in its storage, created on first use (same sampler, pruner and directions)."""
    import optuna

    from sweeps.run.pruning import make_pruner

    storage = open_storage(spec.storage, FailStaleRun(tracker) if tracker is not None else None)
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), directions=spec.objective.directions,
                                load_if_exists=True)
    if spec.sampler.seed is not None and (existing := len(study.get_trials(deepcopy=False))):
        study.sampler = make_sampler(spec, offset=existing)
    return study


def counted(study: optuna.Study) -> int:
    """Trials that count toward the study's total: finished or running, except failed trials
    that a heartbeat retry replaced (the retry counts instead)."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with optuna_experimental():
        fail_stale_trials(study)  # a dead worker's RUNNING trial must not count: fail and re-queue it first
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in states and not (t.state == TrialState.FAIL and t.number in retried))


def _running(study: optuna.Study) -> list[int]:
    from optuna.trial import TrialState

    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def enqueue(spec: StudySpec, study: optuna.Study) -> None:
    """The study file's known-good trials, once per study (skipped if already there)."""
    for params in spec.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)


def launch(spec: StudySpec, *, progress: bool = True) -> optuna.Study:
    """Run the study's trials until ``n_trials`` exist in its storage (all workers together) or
    ``timeout`` passes; re-running continues the same study and the same MLflow parent run.

    Returns:
        The Optuna study (its best trial holds the MLflow run id in ``user_attrs``).
    """
    import optuna

    from sweeps.track.preflight import check_stores

    started = time.monotonic()
    heartbeat_settings()  # a bad PRICER_HEARTBEAT_S / PRICER_GRACE_S is one line, before anything is made
    check_stores(spec.storage, spec.tracking_uri)  # before anything is built or created
    data = prepare_data(spec, progress=progress)
    tracker = MlflowTracker(spec.tracking_uri, spec.name)
    study = open_study(spec, tracker)
    parent_id, created = tracker.study_run(spec.name, {"pricer.objective": spec.objective.metric,
                                                       "pricer.direction": spec.objective.directions[0]})
    if created:
        tracker.log_params(parent_id, {"storage": spec.storage, "data": str(data),
                                       "data_source": spec.data.resolve(spec.path),
                                       "objective": ",".join(spec.objective.names),
                                       "sampler": spec.sampler.type, "pruner": spec.pruner.type})
    if spec.path is not None:
        # the study file as written, less any password in its storage or tracking URL
        tracker.client.log_text(parent_id, redact(Path(spec.path).read_text()), Path(spec.path).name)
    if not tracker.runs("baseline"):
        _baselines(spec, tracker, parent_id, data)
    enqueue(spec, study)

    objective = Objective(spec, str(data), tracker, parent_id, progress=progress)
    total = spec.n_trials
    waiting = done = False
    try:
        while spec.timeout is None or time.monotonic() - started < spec.timeout:
            if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
                done = True
                break
            if total is None or counted(study) < total:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,))
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
        log_study_plots(tracker, parent_id, study)
        tracker.end_run(parent_id, "FINISHED")
    return study


def _baselines(spec: StudySpec, tracker: MlflowTracker, parent_id: str, data: Path) -> None:
    """The classical baselines, fitted once on the train split and scored on the validation
    items the trials are ranked on and the test items they are scored on; each fitted model is
    logged too, so an ensemble export can carry the best one."""
    import tempfile

    from pricer.data.dataset import load_splits
    from pricer.predict.baselines import BASELINES, fit_baselines, save_baseline, score_baseline
    from pricer.predict.evaluate import as_items
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
            model_file = save_baseline(fitted[name], Path(tmp) / name / "model.joblib")
            predictions = {"validation": val_preds, "test": test_preds,
                           "truth": {"validation": [i.price for i in val], "test": [i.price for i in test]}}
            results.append((name, val_metrics, test_metrics, predictions, model_file))
        log_baselines(tracker, parent_id, results)

"""Opening a study: its data (built once per content), its storage (heartbeats, the stale-trial
callback that fails and re-queues a dead worker's trial), its sampler; closing its storage.

The trial loop (`sweeps.run.launch`) and the refits (`sweeps.run.refit`) both open studies here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import DataError, SpecError, TrialFailed
from sweeps.run.objective import RUN_ID_ATTR
from sweeps.spec.space import grid
from sweeps.spec.study import StudySpec
from sweeps.spec.urls import sqlite_path
from sweeps.track.redact import redact
from sweeps.track.stores import retried
from sweeps.track.tracking import REASON, STATE, MlflowTracker, tracking_errors

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# A RUNNING trial whose worker stopped beating for GRACE_S is failed (and retried) by a live worker;
# PRICER_HEARTBEAT_S / PRICER_GRACE_S change them (a test kills a worker and waits seconds, not minutes).
HEARTBEAT_S, GRACE_S = 30, 120
# A worker's number in a fleet (`sweeps.run.fleet`, a SLURM array task, a Kubernetes Job index):
# it shifts a fixed sampler seed so that workers started together don't propose the same trials.
WORKER_ENV = "PRICER_WORKER"
SURPLUS = "pricer.surplus"  # a trial created past the total by a race between workers
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
    """The study's curated dataset folder, built once per content of its sources and data settings
    (workers share it; a source that changed, or a changed setting, builds a new one)."""
    from pricer.data.dataset import cached_build

    sources = spec.data.resolve_all(spec.path)
    d = spec.data
    try:
        return cached_build(sources, Path(spec.workdir), limit=d.limit, seed=d.seed, balance=d.balance,
                            sampling=d.sampling, workers=d.workers, progress=progress)
    except DataError as exc:
        if d.sources or sources[0] != d.fallback or sources[0] == d.source:
            raise
        # the fallback's own error (e.g. hub offline) alone would hide the cause: the source is missing
        raise DataError(f"data.source {d.source}: no such file, and its fallback failed: {exc}") from exc


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
        # re-queued first: an MLflow error below crashed the worker, and the dead worker's trial
        # was never retried
        self.retry(study, trial)
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            return
        try:
            self.tracker.set_tags(run_id, {STATE: "FAIL", REASON: f"worker stopped sending heartbeats for "
                                                                 f"{self.grace_s} s (killed or lost); re-queued"})
            self.tracker.end_run(run_id, "FAILED")
        except tracking_errors() as exc:  # the run is ended later (`sweeps.run.launch.end_orphan_runs`)
            log.warning("trial %d: re-queued; MLflow could not record its failure: %s", trial.number,
                        redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


# the storage calls a worker makes (Optuna's cache calls the underscored ones); each is retried
# when the database dropped its connection
STORAGE_CALLS = (
    "create_new_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "_create_new_trial", "_set_trial_param",
    "get_trial_id_from_study_id_trial_number", "_get_best_trial_id", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial", "_get_trials",
    "record_heartbeat", "_get_stale_trial_ids",
)


@functools.cache
def reconnecting_storage() -> type:
    """`RDBStorage` whose calls are tried again (1 s, then 2 s later) when the database dropped the
    connection under them: a restarted server, or its backends terminated. Optuna rolls the
    session back and raises StorageInternalError once; the pool's pre-ping then reconnects, but
    the error itself crashed the worker (measured by `pricer bench faults`: both workers died on
    the first severed connection). A call that fails three times propagates."""
    from optuna.exceptions import StorageInternalError
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import OperationalError

    def retrying(name: str):
        call = getattr(RDBStorage, name)

        @functools.wraps(call)
        def method(self, *args, **kwargs):
            return retried(lambda: call(self, *args, **kwargs), attempts=3,
                           errors=(StorageInternalError, OperationalError))

        return method

    return type("ReconnectingRDBStorage", (RDBStorage,), {name: retrying(name) for name in STORAGE_CALLS})


def open_storage(url: str, on_stale: FailStaleRun | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a trial whose worker died is failed and re-queued."""
    from sqlalchemy.exc import SQLAlchemyError

    heartbeat, grace = heartbeat_settings()
    if (db := sqlite_path(url)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> optuna.storages.BaseStorage:
        with optuna_experimental():
            # pre-ping: a pooled connection the server dropped (restarted, or its backend
            # terminated) is replaced at checkout instead of failing the call that drew it
            return reconnecting_storage()(url, heartbeat_interval=heartbeat, grace_period=grace,
                                          heartbeat_stale_trial_callback=on_stale,
                                          engine_kwargs={"pool_pre_ping": True})

    try:
        # workers started together on a fresh database race to create its tables: the loser
        # gets a UniqueViolation on CREATE TYPE and finds the schema there a moment later
        return retried(connect, attempts=3, errors=(SQLAlchemyError,))
    except SQLAlchemyError as exc:
        raise SpecError(f"storage {redact(url)}: can't open it ({type(exc).__name__}: "
                        f"{redact(str(exc).splitlines()[0])})") from exc
    except (ValueError, ImportError) as exc:
        raise SpecError(f"storage {redact(url)}: can't open it ({type(exc).__name__}: {redact(exc)})") from exc


def _no_traceback_for_a_failed_trial(record: logging.LogRecord) -> bool:
    """Optuna logs every trial failure it catches with the exception's traceback; a `TrialFailed`
    (an out-of-memory trial, a re-queue in a tracking outage) already has its one-line reason from
    the objective, so its record keeps Optuna's line and loses the traceback (40 lines of pricer's
    own frames). Any other exception is not caught and keeps its traceback."""
    if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
        record.exc_info, record.exc_text = None, None
    return True


def open_study(spec: StudySpec, tracker: MlflowTracker | None = None) -> optuna.Study:
    """The study in its storage, created on first use (same sampler, pruner and directions)."""
    import optuna

    from sweeps.run.pruning import make_pruner

    optimize_log = logging.getLogger("optuna.study._optimize")
    if _no_traceback_for_a_failed_trial not in optimize_log.filters:
        optimize_log.addFilter(_no_traceback_for_a_failed_trial)
    storage = open_storage(spec.storage, FailStaleRun(tracker) if tracker is not None else None)
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), directions=spec.objective.directions,
                                load_if_exists=True)
    # a fleet's workers start together on an empty study: without their index in the offset,
    # a seeded sampler proposed the same trials in every worker
    reseed(spec, study, worker_number() or 0)
    return study


def worker_number() -> int | None:
    """This worker's number in `WORKER_ENV` (a fleet, a SLURM array task, a Kubernetes Job
    index), or None for a worker started without one."""
    raw = os.environ.get(WORKER_ENV, "").strip()
    return int(raw) if raw.isdigit() else None


def reseed(spec: StudySpec, study: optuna.Study, worker: int) -> None:
    """Shift a fixed sampler seed by the trials the study holds and 1000 x `worker`, so that
    neither a worker joining later nor workers started together replay each other's proposals."""
    if spec.sampler.seed is not None and (offset := len(study.get_trials(deepcopy=False)) + 1000 * worker):
        study.sampler = make_sampler(spec, offset=offset)


def close_storage(study: optuna.Study | optuna.storages.BaseStorage) -> None:
    """Dispose of the study's (or storage's) database engine, its pooled connections, as a
    worker or a reader ends: a process that opens several studies would otherwise keep every
    pool open."""
    from optuna.storages import RDBStorage

    storage = getattr(study, "_storage", study)
    storage = getattr(storage, "_backend", storage)
    if isinstance(storage, RDBStorage):
        storage.remove_session()
        storage.engine.dispose()

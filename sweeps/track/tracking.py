"""Where a study's runs are recorded: a small `Tracker` protocol and its MLflow implementation
(what a study writes into its runs is `sweeps.track.records`).

Layout in MLflow: one experiment per study; one parent run per study (tag ``pricer.role=study``,
found again on resume); a nested run per trial (``pricer.role=trial``) and one run per baseline
(``pricer.role=baseline``), both children of the parent. Runs are addressed by explicit ids
through `MlflowClient`, never the fluent API, so an exported ``MLFLOW_RUN_ID`` can't capture them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pricer.errors import SpecError
from sweeps.spec.urls import sqlite_path
from sweeps.track.redact import redact
from sweeps.track.stores import retried

ROLE, STUDY, TRIAL, STATE, REASON = "pricer.role", "pricer.study", "pricer.trial", "pricer.state", "pricer.fail_reason"
PARENT = "mlflow.parentRunId"
WORKER = "pricer.worker"  # host:pid of the worker that made the run
BASELINE_SET = "pricer.baseline_set"  # one id per worker's set of baseline runs
REFIT_OF = "pricer.refit_of"  # the search trial a refit retrains
# a metric on the parent run, one entry each time the last worker out ends it
PARENT_ENDS = "parent_run_ends"
# MLflow 3 shows an experiment without this tag as a GenAI app (traces, an empty Overview page)
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def tracking_errors() -> tuple[type[BaseException], ...]:
    """What a call to the tracking store raises when the store or the link to it fails (an
    `MlflowException`, a database error, a connection or a pipe that broke): a function, so that
    a module naming them (a trial's child imports the objective) does not import MLflow."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, OSError)


def _oldest(sets: dict[str, list]) -> str:
    """The set whose first run started first (ties: the smaller id)."""
    return min(sets, key=lambda s: (min(r.info.start_time for r in sets[s]), s))


def _outage_traceback(record: logging.LogRecord) -> bool:
    """False for MLflow's own report of a database error: it logs the whole traceback of every
    call that found the store down (40 lines a retry during an outage), then raises the error,
    which the caller here reports in one line or lets through with its traceback."""
    return not str(record.msg).startswith("SQLAlchemy database error")


class Tracker(Protocol):
    """What a study records; MLflow is one backend (a W&B or TensorBoard one would plug in)."""

    def start_run(self, name: str, *, parent_id: str | None = None,
                  tags: Mapping[str, str] | None = None) -> str: ...

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_steps(self, run_id: str, steps: Mapping[int, Mapping[str, float]]) -> None:
        """Metrics at several steps (a curve and the final numbers), in as few calls as the backend allows."""

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...

    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a local ``sqlite:///`` store go in ``artifacts/`` beside the database (not
    ./mlruns of whichever folder a worker started in); a server decides for itself."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent.resolve() / "artifacts").as_uri()


@contextlib.contextmanager
def schema_lock(tracking_uri: str) -> Iterator[None]:
    """Held while a worker opens a ``sqlite:///`` store: MLflow creates and migrates its tables
    unguarded, and two workers started together on a fresh file crash (``duplicate column name:
    step``, or alembic finding no row to update). A lock file beside the database serialises them;
    the second finds the tables made. Other stores are left to their own servers and databases."""
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(db.with_name(db.name + ".lock")):  # released on exit, or when the process dies
        yield


@functools.cache
def source_commit() -> str | None:
    """The git commit of this project's own source, asked once per process and in the package's
    folder: the worker's current folder may be another repository (or none)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed wheel): nothing to record
    return commit or None


def run_environment() -> dict[str, str]:
    """Host, the worker process and git commit, as MLflow's UI shows them."""
    tags = {"host": socket.gethostname(), WORKER: f"{socket.gethostname()}:{os.getpid()}"}
    if (commit := source_commit()) is not None:
        tags["mlflow.source.git.commit"] = commit
    return tags


class MlflowTracker:
    """`Tracker` on an MLflow tracking store (``sqlite:///...``, ``postgresql://...``, ``http://``).

    Args:
        tracking_uri: the store.
        experiment: the experiment name (the study's name).
        create: create the experiment if missing; else a missing one is a SpecError (readers
            such as the leaderboard must not leave empty experiments behind).
    """

    def __init__(self, tracking_uri: str, experiment: str, *, create: bool = True) -> None:
        from mlflow.exceptions import MlflowException

        db_log = logging.getLogger("mlflow.store.db.utils")
        if _outage_traceback not in db_log.filters:
            db_log.addFilter(_outage_traceback)
        self.tracking_uri = tracking_uri
        if not create and (db := sqlite_path(tracking_uri)) is not None:
            if not db.is_file():
                raise SpecError(f"study {experiment!r}: no MLflow store at {redact(tracking_uri)}; launch it first, "
                                "or pass the --tracking-uri it was launched with")
        root = artifact_root(tracking_uri) if create else None
        try:
            found = self._connect(experiment)
            if found is None and not create:
                raise SpecError(f"study {experiment!r}: no such experiment in {redact(tracking_uri)}; launch it "
                                "first, or pass the --tracking-uri it was launched with")
            if found is not None and found.lifecycle_stage == "deleted":
                if not create:  # a reader changes nothing: restoring is the user's call
                    raise SpecError(f"study {experiment!r}: its MLflow experiment {found.experiment_id} is "
                                    f"deleted in {redact(tracking_uri)}; restore it first (`mlflow experiments "
                                    f"restore --experiment-id {found.experiment_id}`) or launch the study again")
                self.client.restore_experiment(found.experiment_id)
            if found is None:
                try:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=root, tags={EXPERIMENT_KIND: MODEL_TRAINING})
                except MlflowException:  # another worker created it first
                    found = self.client.get_experiment_by_name(experiment)
                    if found is None:
                        raise
            if found is not None:
                self.experiment_id = found.experiment_id
        except MlflowException as exc:
            raise SpecError(f"tracking_uri {redact(tracking_uri)}: can't open the MLflow store "
                            f"({redact(exc.message)})") from exc

    def _connect(self, experiment: str):
        """The client, and the experiment if it exists. The client creates MLflow's tables on a
        fresh store, unguarded: a sqlite file is locked meanwhile (`schema_lock`); on a database
        server the worker that loses the race (a duplicate type, a half-migrated schema) tries
        again and finds the tables made."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        def connect():
            with schema_lock(self.tracking_uri):
                self.client = MlflowClient(self.tracking_uri)
                return self.client.get_experiment_by_name(experiment)

        server = urlsplit(self.tracking_uri).scheme.startswith(("postgresql", "mysql", "mssql"))
        try:
            return retried(connect, attempts=4 if server else 1, errors=(MlflowException, SQLAlchemyError))
        except SQLAlchemyError as exc:
            raise MlflowException(str(exc).splitlines()[0]) from exc

    # -- the protocol ------------------------------------------------------------------------

    def start_run(self, name: str, *, parent_id: str | None = None,
                  tags: Mapping[str, str] | None = None) -> str:
        all_tags = {**run_environment(), **(tags or {})}
        if parent_id is not None:
            all_tags[PARENT] = parent_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log_steps(run_id, {step or 0: metrics})

    def log_steps(self, run_id: str, steps: Mapping[int, Mapping[str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for step, metrics in steps.items()
                 for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, redact(v)[:5000]) for k, v in tags.items()])

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    # -- MLflow-specific ---------------------------------------------------------------------

    def log_json(self, run_id: str, obj: object, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            # a traceback or a driver's message may quote a URL with its password
            path.write_text(redact(json.dumps(obj, indent=2, default=str)) + "\n")
            self.log_artifact(run_id, path)

    def study_run(self, study: str, tags: Mapping[str, str]) -> tuple[str, bool]:
        """The study's parent run, created on first use; returns (run_id, created).

        Two workers starting together may both create one: the oldest wins and the other
        deletes its own, so every trial ends up under one parent.
        """
        found = self.study_runs(study)
        if found:
            self.client.update_run(found[0], status="RUNNING")
            return found[0], False
        mine = self.start_run(study, tags={ROLE: "study", STUDY: study, **tags})
        oldest = self.study_runs(study)[0]
        if oldest != mine:
            self.client.delete_run(mine)
            return oldest, False
        return mine, True

    def baseline_runs(self) -> list:
        """The baselines' runs of one set: the oldest. Workers started together each find no
        baselines and each log a set; the leaderboard listed every baseline once per worker."""
        sets = self._baseline_sets()
        return sets[_oldest(sets)] if sets else []

    def keep_oldest_baselines(self, set_id: str) -> bool:
        """After logging baseline set `set_id`: delete it when an older set exists (as
        `study_run` does with a parent run). Returns whether it was kept."""
        sets = self._baseline_sets()
        if not sets or _oldest(sets) == set_id:
            return True
        for run in sets.get(set_id, []):
            self.client.delete_run(run.info.run_id)
        return False

    def _baseline_sets(self) -> dict[str, list]:
        """The baselines' runs by ``pricer.baseline_set`` (runs logged before the tag: one set, "")."""
        sets: dict[str, list] = {}
        for run in self.runs("baseline"):
            sets.setdefault(run.data.tags.get(BASELINE_SET, ""), []).append(run)
        return sets

    def study_runs(self, study: str) -> list[str]:
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{study}'",
                                       order_by=["attributes.start_time ASC"])
        return [r.info.run_id for r in runs]

    def runs(self, role: str) -> list:
        """Every run of a role (``trial``, ``baseline``) in this experiment, as MLflow `Run`s."""
        from mlflow.store.entities import PagedList

        out, token = [], None
        while True:
            page: PagedList = self.client.search_runs([self.experiment_id],
                                                      filter_string=f"tags.`{ROLE}` = '{role}'",
                                                      max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    # a storage URL in a param keeps its password out; 6000 characters is MLflow's limit
    return redact(text)[:6000]

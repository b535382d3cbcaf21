"""The study's budget pays for trials that trained, not for outages (`sweeps.run.budget`).

Real stores: the Optuna study on a fresh PostgreSQL database, MLflow on a second one (taken down
for real: its connections refused and severed) or on a sqlite file; toy Llama trials of 2 steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import PG_ADMIN

from pricer.errors import TrialFailed
from sweeps.run.budget import REQUEUED
from sweeps.spec.study import load_study
from sweeps.track.tracking import REASON, MlflowTracker

PRICER = Path(sys.executable).with_name("pricer")


@pytest.fixture
def study(toy_study) -> Path:
    return toy_study("budget", trials=2)


def _database_down(url: str, down: bool) -> None:
    """Refuse new connections to the database and sever its open ones (or let them in again): the
    tracking store is gone for its clients, as when its server restarts."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        if down:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


@pytest.mark.slow
def test_a_tracking_store_down_when_trials_start_costs_no_trial_of_the_budget(study: Path, pg_url: str,
                                                                                mlflow_pg: str) -> None:
    """MLflow unreachable as a trial starts: the trial failed at once and counted, so a short
    outage failed every remaining trial in seconds. Now each such trial is re-queued, uncounted,
    the worker backs off (1, 2, 4... s), and the study still completes its whole total."""
    import optuna
    from optuna.trial import TrialState

    env = {**os.environ, "PRICER_STORAGE": pg_url, "PRICER_TRACKING_URI": mlflow_pg}
    worker = subprocess.Popen([str(PRICER), "launch", str(study)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    storage = optuna.storages.RDBStorage(pg_url)
    try:
        deadline = time.monotonic() + 600
        while True:  # the first trial done: the outage starts as the second one is about to
            assert worker.poll() is None, worker.communicate()[0]
            assert time.monotonic() < deadline, "the first trial never finished"
            try:
                trials = optuna.load_study(study_name="budget", storage=storage).get_trials(deepcopy=False)
            except KeyError:
                trials = []
            if trials and trials[0].state == TrialState.COMPLETE:
                break
            time.sleep(0.2)
        _database_down(mlflow_pg, True)
        try:
            time.sleep(5)
        finally:
            _database_down(mlflow_pg, False)
        output = worker.communicate(timeout=600)[0]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        storage.engine.dispose()
    assert worker.returncode == 0, output

    from sweeps.run.launch import counted

    search = optuna.load_study(study_name="budget", storage=pg_url)
    trials = search.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    print(f"{len(failed)} trial(s) found MLflow down and were re-queued: "
          + "; ".join(t.user_attrs.get("fail_reason", "") for t in failed))
    # on a quiet machine the next trial may already be training when the outage starts: its
    # metrics then wait for the store (no failure at all); either way nothing is charged
    assert all(t.system_attrs.get(REQUEUED) for t in failed)
    assert not failed or "tracking store unreachable" in output, output
    # each retry is one line; MLflow's own traceback of every refused call is not printed
    assert "unreachable" in output and "Traceback" not in output, output
    assert [t.state for t in trials if t.state != TrialState.FAIL] == [TrialState.COMPLETE] * 2
    assert counted(search) == 2
    tracker = MlflowTracker(mlflow_pg, "budget", create=False)
    statuses = [r.info.status for r in tracker.client.search_runs([tracker.experiment_id])]
    assert "RUNNING" not in statuses and statuses.count("FINISHED") >= 2 + 1  # trials, parent


@pytest.mark.slow
def test_a_dead_workers_trial_is_requeued_even_when_mlflow_fails_in_the_stale_trial_callback(tmp_path: Path) -> None:
    """The callback recorded the failure in MLflow before re-queuing: an MLflow error there (here a
    run MLflow doesn't know) crashed the worker, and the dead worker's trial was never retried."""
    import optuna
    from optuna.trial import TrialState

    from sweeps.run.objective import RUN_ID_ATTR
    from sweeps.run.studies import FailStaleRun

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "stale")
    study = optuna.create_study(study_name="stale", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    dead = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    dead.set_user_attr(RUN_ID_ATTR, uuid.uuid4().hex)  # no such run
    study.tell(dead, state=TrialState.FAIL)  # what fail_stale_trials does before the callback
    FailStaleRun(tracker)(study, study.trials[0])
    retry = study.get_trials(states=(TrialState.WAITING,))
    assert len(retry) == 1 and retry[0].params == study.trials[0].params
    assert retry[0].system_attrs["failed_trial"] == 0


class FailingRecorder(MlflowTracker):
    """An MLflow store whose adapter upload hits a bug (not an MLflow or I/O error)."""

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if artifact_path == "adapter":
            raise RuntimeError("the adapter upload met a bug")
        super().log_artifact(run_id, path, artifact_path)


@pytest.mark.slow
def test_a_bug_while_recording_a_trained_trial_fails_that_trial_not_the_worker(study: Path, tmp_path: Path,
                                                                                built_data: Path) -> None:
    """It crashed the worker and left the trial's run RUNNING."""
    import optuna
    from optuna.trial import TrialState

    from sweeps.run.objective import Objective

    spec = load_study(study).with_overrides(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    tracker = FailingRecorder(spec.tracking_uri, spec.name)
    parent = tracker.start_run("budget")
    search = optuna.create_study(study_name="budget", storage=spec.storage)
    search.optimize(Objective(spec, str(built_data), tracker, parent), n_trials=1, catch=(TrialFailed,))
    trial = search.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "recording its results failed: RuntimeError: the adapter upload met a bug"
    run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "the adapter upload met a bug" in run.data.tags[REASON]


def test_a_failed_trial_is_one_line_in_the_log_not_a_traceback(study: Path, tmp_path: Path, caplog) -> None:
    """Optuna logged each caught failure with its traceback: 40 lines of pricer's frames under the
    objective's own one-line reason, once per try of a tracking outage."""
    import optuna

    from sweeps.run.studies import open_study

    search = open_study(load_study(study).with_overrides(storage=f"sqlite:///{tmp_path / 'optuna.db'}"))

    def objective(trial: optuna.Trial) -> float:
        raise TrialFailed("MemoryError: the trial reached its cap")

    def crash(trial: optuna.Trial) -> float:
        raise ValueError("a bug")

    optuna.logging.enable_propagation()  # Optuna's records reach caplog, formatted as its handler would
    try:
        search.optimize(objective, n_trials=1, catch=(TrialFailed,))
        assert "Trial 0 failed" in caplog.text and "reached its cap" in caplog.text
        assert "Traceback" not in caplog.text, caplog.text
        caplog.clear()
        with pytest.raises(ValueError):
            search.optimize(crash, n_trials=1, catch=(TrialFailed,))
        assert "Traceback" in caplog.text  # an uncaught error keeps it
    finally:
        optuna.logging.disable_propagation()

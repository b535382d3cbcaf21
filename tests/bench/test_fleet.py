"""`pricer launch STUDY --workers N`: real worker processes on one PostgreSQL study, toy trials.

The storage URL (with a password; PostgreSQL here trusts any) reaches the workers in their
environment, never their argv; the workers divide the cores; each trial runs once; the parent
run is ended once, by the last worker out; SIGTERM to the fleet stops every worker and fails
their running trials cleanly (Optuna FAIL with the reason, MLflow FAILED), leaving no process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from pricer.machine import usable_cores
from sweeps.run.objective import RUN_ID_ATTR as RUN_ID
from sweeps.spec.study import load_study
from sweeps.track.tracking import REASON, MlflowTracker

PRICER = Path(sys.executable).with_name("pricer")


@pytest.fixture
def fleet_study(toy_study):
    return lambda steps: toy_study("fleet", steps=steps)


def _start(study: Path, storage: str, tracking: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PRICER_STORAGE": storage, "PRICER_TRACKING_URI": tracking}
    return subprocess.Popen([str(PRICER), "launch", str(study), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _workers(fleet: subprocess.Popen) -> list[psutil.Process]:
    """The fleet's worker processes; a child that has just exited (the data build's, a zombie until
    reaped) is not one."""
    found = []
    for proc in psutil.Process(fleet.pid).children():
        try:
            if "launch" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return found


def _kill_all(fleet: subprocess.Popen) -> None:
    if fleet.poll() is None:
        for proc in psutil.Process(fleet.pid).children(recursive=True):
            proc.kill()
        fleet.kill()
    fleet.wait()


def test_several_workers_on_a_sqlite_storage_are_refused_in_one_line(fleet_study, capsys) -> None:
    from sweeps.cli.main import main

    assert main(["launch", str(fleet_study(2)), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SQLite" in err[0] and "PostgreSQL" in err[0], err


@pytest.mark.slow
def test_a_fleet_runs_the_total_once_with_urls_out_of_argv_and_the_cores_divided(fleet_study, pg_url: str,
                                                                                  mlflow_pg: str) -> None:
    from optuna.trial import TrialState

    password = f"s3cret{uuid.uuid4().hex[:8]}"
    storage = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    study = fleet_study(2)
    fleet = _start(study, storage, mlflow_pg, "--workers", "2", "--n-trials", "3")
    try:
        deadline = time.monotonic() + 120
        while len(workers := _workers(fleet)) < 2:
            assert fleet.poll() is None, fleet.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for worker in workers:
            assert password not in " ".join(worker.cmdline())
            env = worker.environ()
            assert env["PRICER_STORAGE"] == storage
            assert env["OMP_NUM_THREADS"] == str(max(1, usable_cores() // 2))
        output = fleet.communicate(timeout=900)[0]
    finally:
        _kill_all(fleet)
    assert fleet.returncode == 0, output
    assert "study fleet: 3 complete" in output, output

    import optuna

    from sweeps.run.studies import SURPLUS

    trials = optuna.load_study(study_name="fleet", storage=storage).get_trials(deepcopy=False)
    # a trial both workers created at once past the total is failed unrun, and not counted
    counted = [t for t in trials if not t.system_attrs.get(SURPLUS)]
    assert [t.state for t in counted] == [TrialState.COMPLETE] * 3
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 3  # the workers' seeds differ
    tracker = MlflowTracker(mlflow_pg, "fleet", create=False)
    # one finished MLflow run per trial: nothing ran twice
    assert sorted(r.data.tags["pricer.trial"] for r in tracker.runs("trial")) == ["0", "1", "2"]
    assert {r.info.status for r in tracker.runs("trial")} == {"FINISHED"}
    # both workers may have found no baselines and logged them: one set is left
    names = [r.data.tags["pricer.baseline"] for r in tracker.runs("baseline")]
    assert names and len(names) == len(set(names)), names
    parent = tracker.client.get_run(tracker.study_runs("fleet")[0])
    assert parent.info.status == "FINISHED"
    # ended once, by the last worker out: after every trial's run had ended
    assert len(tracker.client.get_metric_history(parent.info.run_id, "parent_run_ends")) == 1
    assert parent.info.end_time >= max(r.info.end_time for r in tracker.runs("trial"))


@pytest.mark.slow
def test_sigterm_stops_every_worker_and_fails_their_running_trials_cleanly(fleet_study, pg_url: str,
                                                                          mlflow_pg: str) -> None:
    import optuna
    from optuna.trial import TrialState

    study = fleet_study(400)  # trials that are still training when the signal comes
    storage = optuna.storages.RDBStorage(pg_url)  # one engine for the polls below (it makes the tables)
    fleet = _start(study, pg_url, mlflow_pg, "--workers", "2", "--n-trials", "4")
    try:
        deadline = time.monotonic() + 600
        running: list = []
        while len(running) < 2:
            assert fleet.poll() is None, fleet.communicate()[0]
            assert time.monotonic() < deadline, "two trials never ran at once"
            time.sleep(1)
            try:
                running = optuna.load_study(study_name="fleet", storage=storage).get_trials(
                    deepcopy=False, states=(TrialState.RUNNING,))
            except KeyError:  # the study is not created yet
                running = []
            # training, not just created: a stop before a trial's MLflow run starts leaves it no run
            running = [t for t in running if RUN_ID in t.user_attrs]
        everything = psutil.Process(fleet.pid).children(recursive=True)
        fleet.send_signal(signal.SIGTERM)
        output = fleet.communicate(timeout=180)[0]
    finally:
        _kill_all(fleet)
        storage.engine.dispose()
    assert fleet.returncode == 143, output
    _, alive = psutil.wait_procs(everything, timeout=10)
    assert not alive, f"left running: {alive}"

    trials = optuna.load_study(study_name="fleet", storage=pg_url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.number in {r.number for r in running}]
    assert [t.state for t in stopped] == [TrialState.FAIL] * 2
    reasons = [t.user_attrs.get("fail_reason", "") for t in stopped]
    # the worker's SIGTERM or its trial process's own parent-death signal, whichever lands first
    assert reasons and all("re-queued" in r for r in reasons), reasons
    client = MlflowTracker(mlflow_pg, "fleet", create=False).client
    for trial in stopped:
        run = client.get_run(trial.user_attrs[RUN_ID])
        assert run.info.status == "FAILED" and run.data.tags[REASON].startswith("stopped by SIGTERM")


def test_several_workers_on_a_sqlite_mlflow_store_are_refused_in_one_line(fleet_study, pg_url: str, capsys) -> None:
    from sweeps.cli.main import main

    assert main(["launch", str(fleet_study(2)), "--workers", "2", "--storage", pg_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SQLite MLflow store" in err[0] and "PRICER_TRACKING_URI" in err[0], err


def test_a_gpu_id_that_is_not_here_is_refused_in_one_line(fleet_study, capsys) -> None:
    """A wrong id made CUDA hide every device: the worker trained on the CPU without a word."""
    from sweeps.cli.main import main

    assert main(["launch", str(fleet_study(2)), "--workers", "1", "--gpus", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pricer: error: --gpus 7: no GPU"), err


def test_workers_spread_over_every_visible_gpu_unless_told(fleet_study, pg_url: str, mlflow_pg: str) -> None:
    """--workers N without --gpus put every worker on GPU 0."""
    from sweeps.run.fleet import fleet_slots, parse_gpus

    spec = load_study(fleet_study(2)).with_overrides(storage=pg_url, tracking_uri=mlflow_pg)
    slots = fleet_slots(spec, 4, parse_gpus(None, ["2", "3"]))
    assert [p.env.get("CUDA_VISIBLE_DEVICES") for p in slots] == ["2", "3", "2", "3"]
    assert [p.env.get("CUDA_VISIBLE_DEVICES") for p in fleet_slots(spec, 2, parse_gpus("3", ["2", "3"]))] == ["3"] * 2
    assert [p.gpu for p in fleet_slots(spec, 2, parse_gpus(None, []))] == [None, None]  # a CPU machine


def _two_running(fleet: subprocess.Popen, storage) -> list:
    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + 600
    running: list = []
    while len(running) < 2:
        assert fleet.poll() is None, fleet.communicate()[0] if fleet.stdout else fleet.returncode
        assert time.monotonic() < deadline, "two trials never ran at once"
        time.sleep(1)
        try:
            running = optuna.load_study(study_name="fleet", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            running = []
    return running


@pytest.mark.slow
def test_workers_stop_cleanly_when_their_fleet_is_killed(fleet_study, pg_url: str, mlflow_pg: str) -> None:
    """`kill -9` of the fleet (or its terminal gone): its workers, in their own sessions, went on
    as orphans nobody could stop. Now the kernel sends each SIGTERM (the parent-death signal),
    and they fail their trials cleanly (re-queued)."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(pg_url)
    fleet = _start(fleet_study(400), pg_url, mlflow_pg, "--workers", "2", "--n-trials", "4")
    try:
        running = _two_running(fleet, storage)
        workers = _workers(fleet)
        os.kill(fleet.pid, signal.SIGKILL)
        fleet.wait()
        _, alive = psutil.wait_procs(workers, timeout=120)
        for proc in alive:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not alive, f"orphaned workers: {alive}"
    finally:
        _kill_all(fleet)
        storage.engine.dispose()
    trials = optuna.load_study(study_name="fleet", storage=pg_url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.number in {r.number for r in running}]
    reasons = [t.user_attrs.get("fail_reason", "") for t in stopped]
    # the worker's SIGTERM or its trial process's own parent-death signal, whichever lands first
    assert reasons and all("re-queued" in r for r in reasons), reasons


@pytest.mark.slow
def test_a_stop_between_starting_the_workers_and_waiting_for_them_stops_them(fleet_study, pg_url: str,
                                                                             mlflow_pg: str) -> None:
    """The fleet is held between the two (its stdout a full pipe: printing the workers' table
    blocks) when SIGTERM comes: the workers stop with it instead of running on unwatched."""
    import fcntl

    read, write = os.pipe()
    fcntl.fcntl(write, 1031, 4096)  # F_SETPIPE_SZ: one page
    os.write(write, b"." * 4096)
    env = {**os.environ, "PRICER_STORAGE": pg_url, "PRICER_TRACKING_URI": mlflow_pg}
    fleet = subprocess.Popen([str(PRICER), "launch", str(fleet_study(400)), "--workers", "2", "--n-trials", "4"],
                             env=env, stdout=write, stderr=subprocess.PIPE, start_new_session=True)
    os.close(write)
    try:
        deadline = time.monotonic() + 600
        while len(workers := _workers(fleet)) < 2:
            assert fleet.poll() is None, fleet.stderr.read()
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
        time.sleep(1)  # the fleet is now blocked printing the first worker's line
        fleet.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(workers, timeout=120)
        for proc in alive:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not alive, f"workers left running: {alive}"
    finally:
        os.set_blocking(read, False)
        while True:  # let the fleet write out and end
            try:
                if not os.read(read, 65536):
                    break
            except BlockingIOError:
                if fleet.poll() is not None:
                    break
                time.sleep(0.1)
        _kill_all(fleet)
        os.close(read)

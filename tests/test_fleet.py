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

from sweeps.run.fleet import cores
from sweeps.spec.study import load_study
from sweeps.track.tracking import REASON, MlflowTracker

STUDY = """\
name: fleet
workdir: {workdir}
data: {{source: {sample}, limit: 300}}
search_space:
  model: {{choices: [toy-llama-3.1]}}
  lora_r: {{choices: [2, 4, 8]}}
  learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
fixed: {{max_steps: {steps}, batch_size: 2, max_tokens: 32, eval_items: 4, test_items: 4, warmup_steps: 0,
        target_modules: attention}}
sampler: {{type: random, seed: 0}}
n_trials: 1
"""
PRICER = Path(sys.executable).with_name("pricer")


@pytest.fixture
def fleet_study(tmp_path: Path, sample_path: Path):
    def write(steps: int) -> Path:
        path = tmp_path / "fleet.yaml"
        path.write_text(STUDY.format(workdir=tmp_path / "runs", sample=sample_path, steps=steps))
        return path

    return write


def _start(study: Path, storage: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PRICER_STORAGE": storage}
    return subprocess.Popen([str(PRICER), "launch", str(study), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _workers(fleet: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(fleet.pid).children() if "launch" in " ".join(p.cmdline())]


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


def test_a_fleet_runs_the_total_once_with_urls_out_of_argv_and_the_cores_divided(fleet_study, pg_url: str) -> None:
    from optuna.trial import TrialState

    password = f"s3cret{uuid.uuid4().hex[:8]}"
    storage = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    study = fleet_study(2)
    fleet = _start(study, storage, "--workers", "2", "--n-trials", "3")
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
            assert env["OMP_NUM_THREADS"] == str(max(1, cores() // 2))
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
    spec = load_study(study)
    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    assert sorted(r.data.tags["pricer.trial"] for r in tracker.runs("trial")) == ["0", "1", "2"]
    parent = tracker.client.get_run(tracker.study_runs(spec.name)[0])
    assert parent.info.status == "FINISHED"
    # ended once, by the last worker out: after every trial's run had ended
    assert len(tracker.client.get_metric_history(parent.info.run_id, "parent_run_ends")) == 1
    assert parent.info.end_time >= max(r.info.end_time for r in tracker.runs("trial"))


def test_sigterm_stops_every_worker_and_fails_their_running_trials_cleanly(fleet_study, pg_url: str) -> None:
    import optuna
    from optuna.trial import TrialState

    study = fleet_study(400)  # trials that are still training when the signal comes
    storage = optuna.storages.RDBStorage(pg_url)  # one engine for the polls below (it makes the tables)
    fleet = _start(study, pg_url, "--workers", "2", "--n-trials", "4")
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
    assert all(t.user_attrs["fail_reason"] == "stopped by SIGTERM" for t in stopped)
    spec = load_study(study)
    client = MlflowTracker(spec.tracking_uri, spec.name, create=False).client
    for trial in stopped:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags[REASON] == "stopped by SIGTERM"

"""Studies survive dead workers, hung and out-of-memory trials; workers started together open fresh stores.

Workers sharing one study's total are tests/bench/test_fleet.py's (a fleet starts them together).

Every test runs real `pricer launch` workers (or `launch()` in this process) on a fresh PostgreSQL
database and a fresh sqlite MLflow store, with real trials kept tiny (the toy Llama, or SmolLM2
where a real model's size or pace matters): 1 to 4 steps of batch 2 on 32-token prompts, 4 items
scored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sweeps.run.objective import RESUMED
from sweeps.run.process import PROCESS_NAME, trial_context
from sweeps.spec.study import load_study
from sweeps.track.tracking import REASON, MlflowTracker

PRICER = Path(sys.executable).with_name("pricer")
# seconds, not minutes: a killed worker's trial is failed 3 s after its last heartbeat
FAST_HEARTBEATS = {"PRICER_HEARTBEAT_S": "1", "PRICER_GRACE_S": "3"}


@pytest.fixture
def workers():
    """The worker processes a test starts; any still alive at its end (a failed test) are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def study(toy_study) -> Path:
    """The study file (toy Llama trials of 1 step); nothing is created yet (workers started
    together create both stores)."""
    return toy_study("reliability", steps=1)


@pytest.fixture
def smollm2_study(toy_study, tiny_models) -> Path:
    """The same study with SmolLM2 trials, where a test needs a real model's size or pace."""
    return toy_study("reliability", steps=1, model="smollm2-135m-instruct")


def _launch(workers: list, study: Path, pg_url: str, n_trials: int, **env_vars: str) -> subprocess.Popen:
    """A `pricer launch` worker in its own process group (killing the group = losing the machine)."""
    env = {**os.environ, **FAST_HEARTBEATS, **env_vars}
    proc = subprocess.Popen([str(PRICER), "launch", str(study), "--storage", pg_url, "--n-trials", str(n_trials)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    workers.append(proc)
    return proc


def _trials(study: Path, storage):
    """The study's trials; `storage` a URL or an `optuna.storages.RDBStorage`."""
    import optuna

    return optuna.load_study(study_name="reliability", storage=storage).get_trials(deepcopy=False)


def _trials_if_any(study: Path, storage) -> list:
    """`_trials`, or none while the study is not created yet."""
    try:
        return _trials(study, storage)
    except KeyError:
        return []


def _tracker(study: Path) -> MlflowTracker:
    spec = load_study(study)
    return MlflowTracker(spec.tracking_uri, spec.name, create=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_workers_started_together_open_a_fresh_mlflow_store(tmp_path: Path, pg_url: str, kind: str) -> None:
    """MLflow creates its tables unguarded: without the lock (sqlite) or the retry (a database
    server), one of two workers crashed with `duplicate column name` or a UniqueViolation."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if kind == "sqlite" else pg_url
    code = "import sys; from sweeps.track.tracking import MlflowTracker; MlflowTracker(sys.argv[1], 'race')"
    both = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert MlflowTracker(uri, "race", create=False).experiment_id


@pytest.mark.slow
def test_killed_worker_takes_its_trial_process_and_a_waiting_worker_resumes_the_retry(
        toy_study, pg_url: str, workers: list) -> None:
    """`kill -9` of a worker alone (not its group): its trial process ends with it. A worker that
    starts while the dead trial is still RUNNING (heartbeat not yet stale) reaches the total at
    once, yet waits; when the trial goes stale it is failed, re-queued, and this worker runs the
    retry from the checkpoint the dead try left, not from step 0. No trial is left RUNNING."""
    import optuna
    from optuna.trial import TrialState

    steps = 40  # the toy's steps: enough of them that the kill lands while it trains
    study = toy_study("reliability", steps=steps)
    spec = load_study(study)
    checkpoint = Path(spec.workdir).resolve() / "trials" / "00000" / "checkpoint" / "checkpoint.pt"
    storage = optuna.storages.RDBStorage(pg_url)  # one engine for the polls (it makes the tables now)
    doomed = _launch(workers, study, pg_url, 1)
    deadline = time.monotonic() + 600
    # the stores opened before the trial trains: on a fast CPU its 40 steps take about 2 s
    while not ((trials := _trials_if_any(study, storage)) and "mlflow_run_id" in trials[0].user_attrs):
        assert doomed.poll() is None, doomed.communicate()[0]
        assert time.monotonic() < deadline, "the first worker never started a trial"
        time.sleep(0.2)
    storage.engine.dispose()
    client, run_id = _tracker(study).client, trials[0].user_attrs["mlflow_run_id"]
    while not checkpoint.is_file():  # wait until its trial has trained and saved step 1
        assert doomed.poll() is None, doomed.communicate()[0]
        assert time.monotonic() < deadline, "the first worker never checkpointed a step"
        time.sleep(0.05)
    # its train loss reaches MLflow while it runs (the first step's at once), not only at its end
    while not (live := client.get_metric_history(run_id, "train_loss")):
        assert time.monotonic() < deadline, "no train loss reached MLflow while the trial ran"
        time.sleep(0.05)
    assert min(m.step for m in live) == 1
    trial = _trials(study, pg_url)[0]
    assert trial.state == TrialState.RUNNING, "the trial ended before the kill: give it more steps"

    trial_processes = _trial_processes(psutil.Process(doomed.pid))
    assert len(trial_processes) == 1
    if trial_context().get_start_method() == "forkserver":  # forked from the worker's forkserver
        forkserver = trial_processes[0].parent()
        assert "forkserver" in " ".join(forkserver.cmdline())
        # started with the worker, not by its first trial: its imports ran beside the worker's start
        assert forkserver.create_time() < trial.datetime_start.timestamp()
    os.kill(doomed.pid, signal.SIGKILL)  # the worker alone: its trial process is not signalled
    doomed.wait()
    gone, alive = psutil.wait_procs(trial_processes, timeout=5)
    assert not alive, f"orphaned trial processes: {alive}"

    # a grace period the second worker starts well within: it must wait, not leave
    live_worker = _launch(workers, study, pg_url, 1, PRICER_GRACE_S="15")
    output = live_worker.communicate(timeout=900)[0]
    assert live_worker.returncode == 0, output
    assert "still running; waiting" in output, output

    trials = _trials(study, pg_url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    tracker = _tracker(study)
    killed = tracker.client.get_run(trials[0].user_attrs["mlflow_run_id"])
    assert killed.info.status == "FAILED" and "heartbeat" in killed.data.tags[REASON]
    retry = tracker.client.get_run(trials[1].user_attrs["mlflow_run_id"])
    assert retry.info.status == "FINISHED" and retry.data.tags[RESUMED] == "00000"
    resumed_from = retry.data.metrics["resumed_from_step"]
    print(f"retry resumed from step {resumed_from:g} of {steps}")
    assert resumed_from >= 1
    curve = [m.step for m in tracker.client.get_metric_history(retry.info.run_id, "train_loss")]
    assert sorted(curve) == list(range(1, steps + 1))  # the whole curve, each step once
    assert not checkpoint.parent.parent.exists()  # the spent checkpoint is removed


@pytest.mark.slow
def test_trial_past_its_trial_timeout_fails_with_the_reason(tmp_path: Path, built_data: Path, tiny_models) -> None:
    from pricer.errors import TrialFailed
    from pricer.train.config import TrainConfig
    from sweeps.run.process import run_in_child

    config = TrainConfig(model="smollm2-135m-instruct", max_steps=1, batch_size=2, max_tokens=64,
                         eval_items=4, test_items=4)
    started = time.monotonic()
    with pytest.raises(TrialFailed, match=r"^trial_timeout of 2 s exceeded$"):
        run_in_child(config, str(built_data), tmp_path / "trial", tiny_models["smollm2-135m-instruct"],
                     lambda step, m: False, timeout_s=2)
    assert time.monotonic() - started < 20
    assert not _trial_processes(psutil.Process())  # stopped, not left running


def _trial_processes(worker: psutil.Process) -> list[psutil.Process]:
    """A worker's trial processes (not multiprocessing's resource tracker or forkserver)."""
    return [p for p in worker.children(recursive=True) if p.name() == PROCESS_NAME.decode()]


@pytest.mark.slow
def test_memory_guard_prunes_before_loading_and_worker_memory_stays_flat(
        smollm2_study: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, as one worker: a config estimated beyond the budget is pruned before
    loading, with the reason; the next trials run, each logging the estimate beside the measured
    peak, and the worker's own memory is the same after each of them."""
    from optuna.trial import TrialState

    from sweeps.run.launch import launch

    study = smollm2_study
    spec = load_study(study).with_overrides(storage=pg_url)
    monkeypatch.setenv("PRICER_MEMORY_GIB", "0.5")  # SmolLM2's estimate is ~1.4 GiB
    launch(spec.with_overrides(n_trials=1), progress=False)
    monkeypatch.delenv("PRICER_MEMORY_GIB")
    launch(spec.with_overrides(n_trials=3), progress=False)

    trials = _trials(study, pg_url)
    assert [t.state for t in trials] == [TrialState.PRUNED] + [TrialState.COMPLETE] * 2
    assert "memory guard:" in trials[0].user_attrs["fail_reason"]
    assert "gradient checkpointing: estimated peak" in trials[0].user_attrs["fail_reason"]
    assert "exceeds the 0.50 GiB budget" in trials[0].user_attrs["fail_reason"]

    client = _tracker(study).client
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]
    assert runs[0].info.status == "FINISHED" and "memory guard" in runs[0].data.tags[REASON]
    assert "peak_mem_gib" not in runs[0].data.metrics  # pruned before anything was loaded
    done = [r.data.metrics for r in runs[1:]]
    for m in done:
        assert 0 < m["estimated_peak_gib"] and 0 < m["peak_mem_gib"]
    rss = [m["worker_rss_gib"] for m in done]
    print(f"worker RSS after trials 1-2: {rss}; estimate {done[0]['estimated_peak_gib']} GiB, "
          f"measured peaks {[m['peak_mem_gib'] for m in done]}")
    assert max(rss) - min(rss) < 0.1, rss


@pytest.mark.slow
def test_trial_out_of_memory_fails_with_memory_error(tmp_path: Path, built_data: Path, tiny_models,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial process capped below its real needs (PRICER_MEMORY_GIB) raises MemoryError: the
    trial fails with that reason and the worker goes on (launch catches TrialFailed)."""
    from pricer.errors import TrialFailed
    from pricer.train.config import TrainConfig
    from sweeps.run.process import run_in_child

    monkeypatch.setenv("PRICER_MEMORY_GIB", "0.8")  # a SmolLM2 trial needs 1.1-1.2 GiB of data segment
    config = TrainConfig(model="smollm2-135m-instruct", max_steps=1, batch_size=2, max_tokens=64,
                         eval_items=4, test_items=4)
    # where the cap is met (an mmap, torch's allocator, oneDNN, a thread's stack) varies by CPU and
    # by what the forkserver holds; the reason says memory and names the cap wherever it is
    with pytest.raises(TrialFailed, match=r"^MemoryError: .*PRICER_MEMORY_GIB") as failed:
        run_in_child(config, str(built_data), tmp_path / "trial", tiny_models["smollm2-135m-instruct"],
                     lambda step, m: False)
    print(f"out-of-memory trial: {failed.value}")
    assert not (tmp_path / "trial" / "pricer.json").exists()

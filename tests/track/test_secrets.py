"""A study whose storage and tracking URLs hold a password, run for real once per module (toy model,
PostgreSQL for both stores): the password reaches no file under the runs folder, the exports or
MLflow's artifacts, and no process's argv, `pricer ui`'s MLflow server included. The same study
shows what a worker does when MLflow fails inside a trial (that trial fails, the worker goes on),
how a pruned trial reads in MLflow, that the parent run is ended once per launch, that the
worker's database connections are closed, and that `pricer ui` stops its server on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from conftest import PG_ADMIN, fresh_database

from sweeps.spec.study import load_study
from sweeps.track.tracking import STATE, MlflowTracker

pytestmark = pytest.mark.slow  # three tiny trials and an MLflow server


STUDY = """\
name: secrets
workdir: {workdir}
storage: {storage}
tracking_uri: {tracking}
data: {{source: {sample}, limit: 300}}
search_space:
  model: {{choices: [toy-llama-3.1, smollm2-135m-instruct]}}
  lora_r: {{choices: [2, 4]}}
  learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
fixed: {{max_steps: 2, batch_size: 2, max_tokens: 32, eval_items: 4, test_items: 4, warmup_steps: 0,
        target_modules: attention}}
enqueue:  # SmolLM2 first, for the memory guard to prune (a toy's shape is unknown before loading)
  - {{model: smollm2-135m-instruct, lora_r: 2, learning_rate: 3.0e-3}}
  - {{model: toy-llama-3.1, lora_r: 2, learning_rate: 3.0e-3}}
  - {{model: toy-llama-3.1, lora_r: 4, learning_rate: 3.0e-3}}
sampler: {{type: random, seed: 0}}
n_trials: 1
"""


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


def _connections(url: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                             (url.rsplit("/", 1)[1],)).fetchone()[0]


def _argv_holding(secret: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if secret in line:
            found.append(f"{proc.pid}: {line}")
    return found


def _files_holding(root: Path, secret: str, skip: Path) -> list[str]:
    return [str(path.relative_to(root)) for path in root.rglob("*")
            if path.is_file() and path != skip and secret.encode() in path.read_bytes()]


@pytest.fixture(scope="module")
def secret_study(tmp_path_factory: pytest.TempPathFactory, sample_path: Path, tiny_models):
    """Two launches of the study, then an export and an ensemble export of it.

    Launch 1: the memory guard prunes trial 0 (SmolLM2, estimated ~1.4 GiB) before it loads
    anything. Launch 2: MLflow fails once inside trial 1 (its message quoting the URL, as a
    driver's does); trial 1 fails with the reason and the same worker goes on to trial 2."""
    from mlflow.exceptions import MlflowException

    import sweeps.run.launch as launch_module
    from sweeps.results.ensemble import export_ensemble
    from sweeps.results.export import export
    from sweeps.run.launch import launch

    tmp_path = tmp_path_factory.mktemp("secrets")
    password = f"s3cret{uuid.uuid4().hex[:8]}"

    class FlakyTracker(MlflowTracker):
        failed = False

        def log_metrics(self, run_id, metrics, step=None):
            if "val_mae" in metrics and not FlakyTracker.failed:
                FlakyTracker.failed = True
                raise MlflowException(f"API request to {self.tracking_uri} failed: connection reset")
            super().log_metrics(run_id, metrics, step)

    # Optuna and MLflow both keep an alembic_version table: one database each
    with fresh_database() as storage_db, fresh_database() as tracking_db, pytest.MonkeyPatch.context() as patch:
        storage, tracking = _with_password(storage_db, password), _with_password(tracking_db, password)
        study = tmp_path / "secrets.yaml"
        study.write_text(STUDY.format(workdir=tmp_path / "runs", storage=storage, tracking=tracking,
                                      sample=sample_path))
        cwd = tmp_path / "cwd"  # where MLflow puts a database store's artifacts (./mlruns)
        cwd.mkdir()
        patch.chdir(cwd)
        spec = load_study(study)

        patch.setenv("PRICER_MEMORY_GIB", "0.5")
        launch(spec, progress=False)
        patch.delenv("PRICER_MEMORY_GIB")
        connections_after_launch = _connections(storage_db)

        with pytest.MonkeyPatch.context() as flaky:
            flaky.setattr(launch_module, "MlflowTracker", FlakyTracker)
            launch(spec.with_overrides(n_trials=3), progress=False)

        export(tracking, spec.name, tmp_path / "best")
        export_ensemble(tracking, spec.name, tmp_path / "ensemble", k=1)
        yield SimpleNamespace(root=tmp_path, study=study, cwd=cwd, spec=spec, password=password,
                              storage=storage, tracking=tracking, flaky_failed=FlakyTracker.failed,
                              connections_after_launch=connections_after_launch,
                              tracker=MlflowTracker(tracking, spec.name, create=False))


@pytest.fixture(scope="module")
def trials_and_runs(secret_study):
    from sweeps.run.studies import open_study

    trials = open_study(secret_study.spec).get_trials(deepcopy=False)
    client = secret_study.tracker.client
    return trials, [client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]


def test_the_workers_storage_connections_end_with_it(secret_study) -> None:
    assert secret_study.connections_after_launch == 0, "the worker's storage connections outlived it"


def test_an_mlflow_failure_while_a_trial_trains_costs_it_nothing_and_its_curve_arrives_whole(
        secret_study, trials_and_runs) -> None:
    """The tracking store refused one validation report (its error quoting the URL, password and
    all): the trial trains on, its metrics wait and are logged later, and it finishes."""
    from optuna.trial import TrialState

    trials, runs = trials_and_runs
    assert secret_study.flaky_failed
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    history = secret_study.tracker.client.get_metric_history(runs[1].info.run_id, "val_mae")
    assert history and runs[1].info.status == "FINISHED" and runs[1].data.tags[STATE] == "COMPLETE"
    assert all(secret_study.password not in (t.user_attrs.get("fail_reason") or "") for t in trials)


def test_a_pruned_trial_reads_as_finished_with_its_state_shown(trials_and_runs) -> None:
    _, runs = trials_and_runs
    # pruned: FINISHED (the UI draws KILLED as a failure) with its state shown
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags[STATE] == "PRUNED"
    assert runs[2].info.status == "FINISHED" and runs[2].data.tags[STATE] == "COMPLETE"
    assert "mlflow.source.git.commit" in runs[2].data.tags


def test_the_parent_run_is_ended_once_per_launch(secret_study) -> None:
    tracker = secret_study.tracker
    parent = tracker.study_runs(secret_study.spec.name)[0]
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    assert len(tracker.client.get_metric_history(parent, "parent_run_ends")) == 2


def test_the_password_reaches_no_file_of_the_runs_exports_or_artifacts(secret_study) -> None:
    root = secret_study.root
    assert "***" in (root / "ensemble" / "README.md").read_text()
    assert _files_holding(root, secret_study.password, skip=secret_study.study) == []
    checked = sum(1 for p in root.rglob("*") if p.is_file())
    assert (secret_study.cwd / "mlruns").is_dir() and checked > 20  # the artifacts were where we looked
    print(f"{checked} files checked; none holds the password")


def test_pricer_ui_passes_no_password_on_a_command_line_and_stops_on_sigterm(secret_study) -> None:
    # the server gets the URI from its environment; SIGTERM stops it as Ctrl-C does
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen([str(Path(sys.executable).with_name("pricer")), "ui", str(secret_study.study),
                           "--port", str(port)],
                          cwd=secret_study.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        line = ""
        while "MLflow UI for" not in line:
            line = ui.stdout.readline()
            assert line or ui.poll() is None, "pricer ui exited"
            assert time.monotonic() < deadline, "the MLflow server never answered"
        server = psutil.Process(ui.pid).children(recursive=True)
        assert server, "no MLflow server process"
        assert _argv_holding(secret_study.password) == []
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(60) == 143
        _, alive = psutil.wait_procs(server, timeout=15)
        assert not alive, f"MLflow server processes left running: {alive}"
    finally:
        if ui.poll() is None:
            ui.kill()
    # nor anything the server wrote
    assert _files_holding(secret_study.root, secret_study.password, skip=secret_study.study) == []

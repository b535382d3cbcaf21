"""A study whose storage and tracking URLs hold a password, run for real (toy model, PostgreSQL
for both stores): the password reaches no file under the runs folder, the exports or MLflow's
artifacts, and no process's argv, `pricer ui`'s MLflow server included. The same study checks
what a worker does when MLflow fails inside a trial (that trial fails, the worker goes on), how a
pruned trial reads in MLflow, that the parent run is ended once per launch, that the worker's
database connections are closed, and that `pricer ui` stops its server on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from sweeps.spec.study import load_study
from sweeps.track.tracking import REASON, STATE, MlflowTracker

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


@pytest.fixture
def second_pg(pg_url: str):
    """Another fresh database beside `pg_url` (Optuna and MLflow both keep an alembic_version table)."""
    import psycopg
    from conftest import PG_ADMIN

    name = f"pricer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


def _connections(url: str) -> int:
    import psycopg
    from conftest import PG_ADMIN

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


def test_a_password_in_the_urls_reaches_no_file_and_no_argv(tmp_path: Path, sample_path: Path, pg_url: str,
                                                             second_pg: str, monkeypatch: pytest.MonkeyPatch,
                                                             tiny_models) -> None:
    from mlflow.exceptions import MlflowException
    from optuna.trial import TrialState

    import sweeps.run.launch as launch_module
    from sweeps.results.ensemble import export_ensemble
    from sweeps.results.export import export
    from sweeps.run.launch import launch
    from sweeps.run.studies import open_study

    password = f"s3cret{uuid.uuid4().hex[:8]}"
    storage, tracking = _with_password(pg_url, password), _with_password(second_pg, password)
    study = tmp_path / "secrets.yaml"
    study.write_text(STUDY.format(workdir=tmp_path / "runs", storage=storage, tracking=tracking, sample=sample_path))
    cwd = tmp_path / "cwd"  # where MLflow puts a database store's artifacts (./mlruns)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    spec = load_study(study)

    # launch 1: the memory guard prunes trial 0 (SmolLM2, estimated ~1.4 GiB) before it loads anything
    monkeypatch.setenv("PRICER_MEMORY_GIB", "0.5")
    launch(spec, progress=False)
    monkeypatch.delenv("PRICER_MEMORY_GIB")
    assert _connections(pg_url) == 0, "the worker's storage connections outlived it"

    # launch 2: MLflow fails once inside trial 1 (its message quoting the URL, as a driver's does);
    # trial 1 fails with the reason and the same worker goes on to trial 2
    class FlakyTracker(MlflowTracker):
        failed = False

        def log_metrics(self, run_id, metrics, step=None):
            if "val_mae" in metrics and not FlakyTracker.failed:
                FlakyTracker.failed = True
                raise MlflowException(f"API request to {self.tracking_uri} failed: connection reset")
            super().log_metrics(run_id, metrics, step)

    monkeypatch.setattr(launch_module, "MlflowTracker", FlakyTracker)
    launch(spec.with_overrides(n_trials=3), progress=False)
    monkeypatch.undo()
    monkeypatch.chdir(cwd)
    assert FlakyTracker.failed

    trials = open_study(spec).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[1].user_attrs["fail_reason"]
    assert reason.startswith("MLflow error: MlflowException") and "***" in reason and password not in reason
    tracker = MlflowTracker(tracking, spec.name, create=False)
    runs = [tracker.client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]
    # pruned: FINISHED (the UI draws KILLED as a failure) with its state shown
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags[STATE] == "PRUNED"
    assert runs[1].info.status == "FAILED" and runs[1].data.tags[REASON] == reason
    assert runs[2].info.status == "FINISHED" and runs[2].data.tags[STATE] == "COMPLETE"
    assert "mlflow.source.git.commit" in runs[2].data.tags
    parent = tracker.study_runs(spec.name)[0]
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    assert len(tracker.client.get_metric_history(parent, "parent_run_ends")) == 2  # once per launch

    export(tracking, spec.name, tmp_path / "best")
    export_ensemble(tracking, spec.name, tmp_path / "ensemble", k=1)
    assert "***" in (tmp_path / "ensemble" / "README.md").read_text()

    # pricer ui: the server gets the URI from its environment; SIGTERM stops it as Ctrl-C does
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen([str(Path(sys.executable).with_name("pricer")), "ui", str(study), "--port", str(port)],
                          cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        line = ""
        while "MLflow UI for" not in line:
            line = ui.stdout.readline()
            assert line or ui.poll() is None, "pricer ui exited"
            assert time.monotonic() < deadline, "the MLflow server never answered"
        server = psutil.Process(ui.pid).children(recursive=True)
        assert server, "no MLflow server process"
        assert _argv_holding(password) == []
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(60) == 143
        _, alive = psutil.wait_procs(server, timeout=15)
        assert not alive, f"MLflow server processes left running: {alive}"
    finally:
        if ui.poll() is None:
            ui.kill()

    holding = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != study and password.encode() in path.read_bytes():
            holding.append(str(path.relative_to(tmp_path)))
    assert holding == [], holding
    checked = sum(1 for p in tmp_path.rglob("*") if p.is_file())
    assert (cwd / "mlruns").is_dir() and checked > 20  # the artifacts were where we looked
    print(f"{checked} files checked; none holds the password")
    assert "failure.json" in {a.path for a in tracker.client.list_artifacts(runs[1].info.run_id)}

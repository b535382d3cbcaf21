"""`pricer ui` serves a study's MLflow store; Debian's headless Chromium renders its pages."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sweeps.track.tracking import ROLE, STATE, TRIAL, MlflowTracker

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
STUDY = "ui-study"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_text(url: str, profile: Path) -> str:
    """The page as rendered after its scripts ran (MLflow's UI is a JS app), tags stripped."""
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", "--window-size=1920,1080", "--dump-dom", url],
        capture_output=True, text=True, timeout=120).stdout
    dom = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A study's store as a launch leaves it: parent run, a trial under it, a baseline."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'mlflow.db'}"
    tracker = MlflowTracker(uri, STUDY)
    parent, _ = tracker.study_run(STUDY, {"pricer.objective": "mae"})
    trial = tracker.start_run("trial-0", parent_id=parent, tags={ROLE: "trial", TRIAL: "0", STATE: "COMPLETE"})
    tracker.log_params(trial, {"model": "smollm2-135m-instruct", "lora_r": 8})
    tracker.log_metrics(trial, {"val_mae": 61.25, "val_rmsle": 0.75}, step=3)
    tracker.end_run(trial)
    baseline = tracker.start_run("baseline-constant", parent_id=parent, tags={ROLE: "baseline"})
    tracker.log_metrics(baseline, {"val_mae": 97.5, "val_rmsle": 1.25})
    tracker.end_run(baseline)
    return uri, tracker.experiment_id, trial


def _pricer() -> list[str]:
    script = Path(sys.executable).parent / "pricer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweeps.cli.main"]


@pytest.fixture(scope="module")
def server(store: tuple[str, str, str]):
    """`pricer ui` as a user starts it; yields (url, its process, every process it started)."""
    import psutil

    port = _free_port()
    proc = subprocess.Popen([*_pricer(), "ui", STUDY, "--tracking-uri", store[0], "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    started: list = []
    try:
        deadline, line = time.monotonic() + 150, ""
        while time.monotonic() < deadline and "MLflow UI" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"pricer ui exited with {proc.returncode}")
        assert "MLflow UI" in line, "pricer ui never announced its URL"
        announced = re.search(r"(http://\S+)", line).group(1)
        started = psutil.Process(proc.pid).children(recursive=True)
        yield f"http://127.0.0.1:{port}", proc, started, announced
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # mlflow server runs in a group of its own: a SIGKILL of pricer ui (a test that failed
        # before the Ctrl-C one ran) would leave it serving
        for child in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


@pytest.mark.slow
def test_ui_serves_the_study_runs_through_the_api_the_page_uses(server, store) -> None:
    _, experiment_id, _ = store
    request = urllib.request.Request(f"{server[0]}/ajax-api/2.0/mlflow/runs/search",
                                     data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        names = {run["info"]["run_name"] for run in json.load(response)["runs"]}
    assert names == {STUDY, "trial-0", "baseline-constant"}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install -y chromium`; "
                    ".ci/run installs it)")
@pytest.mark.slow
def test_the_announced_url_opens_the_runs_table_with_trials_baselines_and_metrics(server, store,
                                                                                   tmp_path: Path) -> None:
    _, experiment_id, _ = store
    url = server[3]
    assert f"/#/experiments/{experiment_id}/runs?" in url
    page = _page_text(url, tmp_path / "p0")
    # MLflow's model-training menus, not the GenAI Overview (traces, token usage)
    assert "Model registry" in page and "Token Usage" not in page
    # trials and baselines side by side (not folded under the study's run), best first, with the
    # objective's column and values and the trial's parameters
    assert "2 matching runs" in page
    assert page.index("trial-0") < page.index("baseline-constant")
    assert "Sort: val_mae" in page
    assert all(column in page for column in ("val_mae", "val_rmsle", "model", "lora_r")), page
    assert "61.25" in page and "97.5" in page and "smollm2-135m-instruct" in page


def test_study_experiments_are_model_training_experiments(store) -> None:
    from sweeps.track.tracking import EXPERIMENT_KIND, MODEL_TRAINING

    tracker = MlflowTracker(store[0], STUDY, create=False)
    tags = tracker.client.get_experiment(store[1]).tags
    assert tags[EXPERIMENT_KIND] == MODEL_TRAINING


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install -y chromium`; "
                    ".ci/run installs it)")
@pytest.mark.slow
def test_chromium_renders_the_study_and_a_trial_page(server, store, tmp_path: Path) -> None:
    _, experiment_id, trial = store
    runs = _page_text(f"{server[0]}/#/experiments/{experiment_id}/runs", tmp_path / "p1")
    assert STUDY in runs and "3 matching runs" in runs
    page = _page_text(f"{server[0]}/#/experiments/{experiment_id}/runs/{trial}", tmp_path / "p2")
    assert "trial-0" in page and "val_mae" in page and "61.25" in page
    assert f"Parent run {STUDY}" in page


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_every_worker_it_forked(server) -> None:
    import psutil

    _, proc, started, _ = server
    assert started, "pricer ui should have started mlflow server"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 130
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"

"""Search on a fraction, refit the winners: a real study on toy Llama 3.1 models (random weights:
the mechanics, not the prices), SQLite Optuna storage and a sqlite MLflow store.

Two 2-step search trials train on 10 % of the train split; the better one is then retrained on
all of it (3 steps) as the last step of `launch`, in its own MLflow run tagged with the trial it
refits. Each trial is a spawned process (what dominates the time: ~3 processes, no more).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pricer.errors import SpecError
from sweeps.results.export import export
from sweeps.results.leaderboard import leaderboard
from sweeps.run.launch import launch
from sweeps.run.refit import refit
from sweeps.spec.study import RefitSpec, load_study
from sweeps.track.tracking import PARENT, REFIT_OF, MlflowTracker

STUDY = """\
name: refit-test
workdir: {workdir}
data: {{source: {sample}, limit: 600}}
search_space:
  model: {{choices: [toy-llama-3.1]}}
  lora_r: {{choices: [2, 4]}}
  learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
fixed: {{max_steps: 2, batch_size: 2, max_tokens: 32, eval_items: 4, test_items: 4, warmup_steps: 0}}
fidelity: {{train_fraction: 0.1}}
refit: {{top_k: 1, train_fraction: 1.0, max_steps: 3}}
sampler: {{type: random, seed: 0}}
n_trials: 2
objective: rmsle
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, sample_path: Path) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("refit")
    path = root / "refit-test.yaml"
    path.write_text(STUDY.format(workdir=root / "runs", sample=sample_path))
    spec = load_study(path)
    study = launch(spec, progress=False)
    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    return SimpleNamespace(root=root, spec=spec, study=study, tracker=tracker)


def _params(tracker: MlflowTracker, role: str) -> list[dict]:
    return [r.data.params for r in tracker.runs(role)]


@pytest.mark.slow
def test_trials_train_on_the_fraction_and_refits_on_all_the_data(searched) -> None:
    trials = _params(searched.tracker, "trial")
    refits = _params(searched.tracker, "refit")
    assert len(trials) == 2 and len(refits) == 1
    assert {p["train_fraction"] for p in trials} == {"0.1"}
    assert {p["train_fraction"] for p in refits} == {"1.0"}
    assert {p["max_steps"] for p in trials} == {"2"} and {p["max_steps"] for p in refits} == {"3"}


@pytest.mark.slow
def test_each_refit_is_its_own_run_tagged_with_the_trial_it_refits(searched) -> None:
    from optuna.trial import TrialState

    study = searched.study
    best = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:1]
    runs = searched.tracker.runs("refit")
    parent = searched.tracker.study_runs(searched.spec.name)[0]
    assert sorted(int(r.data.tags[REFIT_OF]) for r in runs) == sorted(t.number for t in best)
    by_trial = {t.number: t for t in study.trials}
    for run in runs:
        of = by_trial[int(run.data.tags[REFIT_OF])]
        assert run.info.status == "FINISHED" and run.data.tags[PARENT] == parent
        # the winner's own configuration, not a new draw
        assert run.data.params["lora_r"] == str(of.params["lora_r"])
        assert float(run.data.params["learning_rate"]) == pytest.approx(of.params["learning_rate"])
        assert "test_mae" in run.data.metrics


@pytest.mark.slow
def test_leaderboard_shows_refits_beside_trials_and_export_prefers_the_best_refit(searched, tmp_path: Path) -> None:
    rows = leaderboard(searched.spec.tracking_uri, searched.spec.name)
    refits = [r for r in rows if r.refit_of is not None]
    trials = [r for r in rows if not r.baseline and r.refit_of is None]
    assert len(refits) == 1 and len(trials) == 2 and all(r.rank is not None for r in refits)
    out = export(searched.spec.tracking_uri, searched.spec.name, tmp_path / "best")
    meta = json.loads((out / "pricer.json").read_text())
    assert meta["train"]["train_fraction"] == 1.0 and meta["train"]["max_steps"] == 3
    best_refit = min(refits, key=lambda r: r.rank)
    assert f"refit of trial {best_refit.refit_of}" in (out / "README.md").read_text()
    # --trial N still exports the search trial N itself
    chosen = export(searched.spec.tracking_uri, searched.spec.name, tmp_path / "trial", trial=best_refit.refit_of)
    assert json.loads((chosen / "pricer.json").read_text())["train"]["train_fraction"] == 0.1


@pytest.mark.slow
def test_refit_again_runs_nothing_new_and_too_large_a_top_k_is_one_line(searched) -> None:
    again = refit(searched.spec, progress=False)
    assert len(again.trials) == 1 and len(searched.tracker.runs("refit")) == 1
    greedy = dataclasses.replace(searched.spec, n_trials=None, timeout=60.0, refit=RefitSpec(top_k=5))
    with pytest.raises(SpecError, match=r"refit.top_k: 5 but study refit-test has only 2 finished trial\(s\)"):
        refit(greedy, progress=False)


@pytest.mark.slow
def test_refit_of_a_study_without_a_refit_section_says_how_to_add_one(searched) -> None:
    plain = dataclasses.replace(searched.spec, refit=None)
    with pytest.raises(SpecError, match=r"refit: the study has no refit section; add e.g. refit: \{top_k: 2"):
        refit(plain, progress=False)


KILLED = """\
name: refit-killed
workdir: {workdir}
data: {{source: {sample}, limit: 300}}
search_space:
  model: {{choices: [toy-llama-3.1]}}
  learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
fixed: {{max_steps: 1, batch_size: 2, max_tokens: 32, eval_items: 2, test_items: 2, warmup_steps: 0}}
fidelity: {{train_fraction: 0.5}}
refit: {{top_k: 1, max_steps: 40, checkpoint_every: 1}}
sampler: {{type: random, seed: 0}}
n_trials: 1
"""


@pytest.mark.slow
def test_a_refit_whose_worker_dies_is_retried_and_resumes_from_its_checkpoint(
        tmp_path: Path, sample_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pricer launch` is killed (-9) during its refit; `pricer refit` then finds the refit stale,
    fails its MLflow run with the reason, re-queues it and runs the retry from the dead try's
    checkpoint, not from step 0."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from optuna.trial import TrialState

    from sweeps.run.objective import RESUMED
    from sweeps.track.tracking import REASON

    path = tmp_path / "refit-killed.yaml"
    path.write_text(KILLED.format(workdir=tmp_path / "runs", sample=sample_path))
    spec = load_study(path)
    fast = {"PRICER_HEARTBEAT_S": "1", "PRICER_GRACE_S": "3"}
    worker = subprocess.Popen([str(Path(sys.executable).with_name("pricer")), "launch", str(path)],
                              env={**os.environ, **fast}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    checkpoint = Path(spec.workdir).resolve() / "refit" / "trials" / "00000" / "checkpoint" / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 600
        while not checkpoint.is_file():
            assert worker.poll() is None, worker.communicate()[0]
            assert time.monotonic() < deadline, "the refit never checkpointed a step"
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its refit process dies with it
        worker.wait()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    for name, value in fast.items():
        monkeypatch.setenv(name, value)
    study = refit(spec, progress=False)
    tries = study.get_trials(deepcopy=False)
    assert [t.state for t in tries] == [TrialState.FAIL, TrialState.COMPLETE]
    assert tries[1].user_attrs["refit_of"] == 0 and tries[1].params == tries[0].params
    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    dead = tracker.client.get_run(tries[0].user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and "heartbeat" in dead.data.tags[REASON]
    retry = tracker.client.get_run(tries[1].user_attrs["mlflow_run_id"])
    assert retry.info.status == "FINISHED" and retry.data.tags[REFIT_OF] == "0"
    assert retry.data.tags[RESUMED] == "00000" and retry.data.metrics["resumed_from_step"] >= 1
    # each try has its own MLflow run
    assert sorted(r.data.tags["pricer.refit_trial"] for r in tracker.runs("refit")) == [str(t.number) for t in tries]


def test_the_refit_study_trains_on_the_refit_fraction_unpruned_with_a_scaled_trial_timeout(tmp_path: Path,
                                                                                          sample_path: Path) -> None:
    from sweeps.run.refit import refit_spec
    from sweeps.spec.space import to_config

    path = tmp_path / "refit-test.yaml"
    path.write_text(STUDY.format(workdir=tmp_path / "runs", sample=sample_path).replace(
        "n_trials: 2\n", "n_trials: 2\ntrial_timeout: 10m\npruner: {type: median, eval_every: 1}\n"))
    spec = load_study(path)
    sibling = refit_spec(spec)
    assert sibling.name == "refit-test-refit" and sibling.workdir == Path(spec.workdir) / "refit"
    assert sibling.trial_timeout == pytest.approx(600 * 10)  # 1.0 / 0.1 of the data
    assert sibling.pruner.type == "none" and sibling.refit is None and sibling.enqueue == ()
    winner = {"model": "toy-llama-3.1", "lora_r": 4, "learning_rate": 2e-3}
    searched, refitted = to_config(spec, winner), to_config(sibling, winner)
    assert (searched.train_fraction, searched.max_steps, searched.eval_every) == (0.1, 2, 1)
    assert (refitted.train_fraction, refitted.max_steps, refitted.eval_every) == (1.0, 3, 0)
    assert (refitted.lora_r, refitted.learning_rate) == (4, 2e-3)


def test_pricer_refit_leaves_the_parent_run_to_the_last_worker_out(searched) -> None:
    """`pricer refit` beside a worker still searching: the study's parent run stays RUNNING (it
    ended it unconditionally); alone, it ends it."""
    from sweeps.run.presence import Presence
    from sweeps.run.studies import close_storage, heartbeat_settings, open_study

    search = open_study(searched.spec)
    searching = Presence(search, *heartbeat_settings())  # another worker, on the roll and alive
    parent = searched.tracker.study_runs(searched.spec.name)[0]
    try:
        refit(searched.spec, progress=False)
        assert searched.tracker.client.get_run(parent).info.status == "RUNNING"
    finally:
        searching.leave()
        close_storage(search)
    refit(searched.spec, progress=False)
    assert searched.tracker.client.get_run(parent).info.status == "FINISHED"


def test_export_ensemble_register_leaves_a_parent_run_its_workers_still_hold_running(searched, tmp_path: Path) -> None:
    """Registering an ensemble logs it on the parent run through MLflow's fluent run, which
    marked the run FINISHED on exit while the study's workers were still searching."""
    from sweeps.cli.main import main

    client = searched.tracker.client
    parent = searched.tracker.study_runs(searched.spec.name)[0]
    client.update_run(parent, status="RUNNING")  # a worker reopened it and is searching
    try:
        assert main(["export", str(searched.root / "refit-test.yaml"), "--out", str(tmp_path / "ensemble"),
                     "--ensemble", "1", "--register", "refit-test-ensemble"]) == 0
        assert client.get_run(parent).info.status == "RUNNING"
    finally:
        client.set_terminated(parent, "FINISHED")

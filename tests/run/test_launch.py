"""A launched study (the session `sweep` fixture, conftest.py): a second launch continues the first
under the same parent run, the hopeless trial is pruned on the price error, every trial's run
holds its params, curves, costs and artifacts, and the leaderboard reads them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pricer.errors import TrialFailed
from sweeps.results.leaderboard import leaderboard
from sweeps.run.studies import open_study
from sweeps.track.tracking import PARENT

pytestmark = pytest.mark.slow  # the study trains four tiny-model trials once per session


def test_second_launch_continues_the_same_study_under_the_same_parent_run(sweep) -> None:
    study = open_study(sweep.spec)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert [t.params["model"] for t in study.trials] == ["smollm2-135m-instruct", "gemma-3-270m",
                                                         "smollm2-135m-instruct"]
    parents = sweep.tracker.study_runs(sweep.spec.name)
    assert parents == sweep.first_parents and len(parents) == 1
    for trial in study.trials:
        run = sweep.tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags[PARENT] == parents[0] and run.data.tags["pricer.trial"] == str(trial.number)


def test_hopeless_trial_is_pruned_and_recorded_as_pruned(sweep) -> None:
    from optuna.trial import TrialState

    trials = open_study(sweep.spec).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    pruned = sweep.tracker.client.get_run(trials[2].user_attrs["mlflow_run_id"])
    assert pruned.info.status == "FINISHED" and pruned.data.tags["pricer.state"] == "PRUNED"
    assert pruned.data.params["learning_rate"] == "0.5"
    # stopped at its first report, on the price error (not the loss), before its last step
    assert list(trials[2].intermediate_values) == [1]
    history = sweep.tracker.client.get_metric_history(pruned.info.run_id, "val_rmsle")
    assert [m.value for m in history] == [trials[2].intermediate_values[1]]


def test_leaderboard_order_matches_the_mlflow_metrics(sweep, capsys) -> None:
    from sweeps.cli.main import main

    rows = leaderboard(sweep.spec.tracking_uri, sweep.spec.name)
    ranked = [r for r in rows if r.rank is not None]
    assert [r.rank for r in ranked] == list(range(1, len(ranked) + 1))
    for row in ranked:
        assert row.rmsle == sweep.tracker.client.get_run(row.run_id).data.metrics["val_rmsle"]
    assert [r.rmsle for r in ranked] == sorted(r.rmsle for r in ranked)
    assert sum(r.baseline for r in ranked) == 5 and sum(not r.baseline for r in ranked) == 2
    assert rows[-1].state == "PRUNED" and rows[-1].rank is None
    best = open_study(sweep.spec).best_trial
    assert next(r for r in ranked if not r.baseline).trial == best.number

    assert main(["leaderboard", str(sweep.path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in printed] == [r.run_id for r in rows]


def test_trial_runs_hold_params_curves_costs_and_artifacts(sweep) -> None:
    client = sweep.tracker.client
    trial = open_study(sweep.spec).trials[0]
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.params["model"] == "smollm2-135m-instruct" and run.data.params["lora_alpha"] == "16"
    assert {"test_mae", "test_rmsle", "test_hit_rate", "wall_s", "train_tokens_per_s", "peak_mem_gib",
            "micro_batch_size", "gradient_checkpointing"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mae")] == [1, 2]
    assert "host" in run.data.tags and "mlflow.source.git.commit" in run.data.tags
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "predictions.csv", "scatter.png", "catalog_entry.json", "result.json"} <= names
    parent = sweep.tracker.study_runs(sweep.spec.name)[0]
    plots = {a.path for a in client.list_artifacts(parent, "optuna")}
    assert "optuna/optimization_history.html" in plots


def test_a_trial_whose_process_raises_fails_with_the_reason(sweep, tmp_path: Path) -> None:
    from pricer.model import catalog
    from sweeps.run.process import run_in_child
    from sweeps.spec.space import to_config

    config = to_config(sweep.spec, {"model": "smollm2-135m-instruct", "lora_r": 4, "learning_rate": 1e-3})
    with pytest.raises(TrialFailed, match="DataError"):
        run_in_child(config, str(tmp_path / "missing.jsonl"), tmp_path / "out",
                     catalog.resolve(config.model), lambda step, metrics: False)


def test_leaderboard_shows_the_validation_interval_and_the_test_split_of_trials_and_baselines(sweep, capsys) -> None:
    from sweeps.cli.main import main

    rows = leaderboard(sweep.spec.tracking_uri, sweep.spec.name)
    finished = [r for r in rows if r.state == "COMPLETE"]
    assert len(finished) == 7  # 2 trials, 5 baselines
    for row in finished:
        assert row.mae_low <= row.mae <= row.mae_high
        assert row.test_mae is not None and row.test_rmsle is not None and row.test_hit_rate is not None
    assert main(["leaderboard", str(sweep.path)]) == 0
    printed = capsys.readouterr().out
    assert "95% CI" in printed and "test RMSLE" in printed


def test_each_validation_report_carries_the_per_item_errors(sweep) -> None:
    from sweeps.run.pruning import errors_key

    trials = open_study(sweep.spec).trials
    assert sweep.spec.objective.metric == "rmsle"  # the reports are RMSLE, the errors dollars
    client = sweep.tracker.client
    for trial in trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        mae = {m.step: m.value for m in client.get_metric_history(run_id, "val_mae")}
        rmsle = {m.step: m.value for m in client.get_metric_history(run_id, "val_rmsle")}
        for step, value in trial.intermediate_values.items():
            errors = trial.user_attrs[errors_key(step)]
            assert len(errors) == sweep.spec.fixed["eval_items"]  # the same items in every trial
            # the errors are the same evaluation's: their mean is the $ error MLflow logged at that step
            assert sum(errors) / len(errors) == pytest.approx(mae[step], abs=0.01)
            assert value == pytest.approx(rmsle[step], rel=1e-6)
    # the same items in the same order: each trial's errors at its last report are its logged
    # validation predictions' distances to the true prices the baselines recorded, item by item
    from sweeps.track.records import PREDICTIONS

    def predictions(run_id: str) -> dict:
        path = client.download_artifacts(run_id, PREDICTIONS, str(sweep.root / f"predictions-{run_id}"))
        return json.loads(Path(path).read_text())

    truth = predictions(sweep.tracker.runs("baseline")[0].info.run_id)["truth"]["validation"]
    for trial in trials:
        predicted = predictions(trial.user_attrs["mlflow_run_id"])["validation"]
        expected = [abs((p or 0) - t) for p, t in zip(predicted, truth, strict=True)]
        assert trial.user_attrs[errors_key(max(trial.intermediate_values))] == pytest.approx(expected, abs=1e-4)
    assert trials[0].user_attrs[errors_key(1)] != trials[2].user_attrs[errors_key(1)]

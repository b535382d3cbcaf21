"""A real study on CPU: both PyPI tiny models, SQLite Optuna storage, a sqlite MLflow store.

One study serves every test (module fixture): a first launch runs the two enqueued good trials,
a second launch continues the same study and adds a hopeless one (learning rate 0.5: it writes no
number at all) that the median pruner stops at its first report. Trials are 2 steps of batch 2 on
64-token prompts, scored on 8 validation and 4 test items. The objective is RMSLE: a miss scores as $0, which the
dollar error barely separates from a tiny model's early guesses but RMSLE does (~4 vs ~2.5).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pricer.errors import SpecError, TrialFailed
from pricer.predict.predictor import load_predictor
from sweeps.results.export import export
from sweeps.results.leaderboard import leaderboard
from sweeps.run.launch import launch
from sweeps.run.studies import open_study
from sweeps.spec.study import load_study
from sweeps.track.tracking import PARENT, MlflowTracker

STUDY = """\
name: sweep-test
workdir: {workdir}
data: {{source: {sample}, limit: 800}}
search_space:
  model: {{choices: [smollm2-135m-instruct, gemma-3-270m]}}
  lora_r: {{choices: [4, 8]}}
  lora_alpha_ratio: {{choices: [2]}}
  learning_rate: {{low: 1.0e-4, high: 0.5, log: true}}
fixed: {{max_steps: 2, batch_size: 2, max_tokens: 64, eval_items: 8, test_items: 4, warmup_steps: 0,
        target_modules: attention}}
enqueue:
  - {{model: smollm2-135m-instruct, lora_r: 8, learning_rate: 3.0e-3}}
  - {{model: gemma-3-270m, lora_r: 8, learning_rate: 3.0e-3}}
  - {{model: smollm2-135m-instruct, lora_r: 4, learning_rate: 0.5}}
sampler: {{type: random, seed: 0}}
pruner: {{type: median, eval_every: 1, n_startup_trials: 2}}
objective: rmsle
n_trials: 2
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, sample_path: Path) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("sweep")
    path = root / "sweep-test.yaml"
    path.write_text(STUDY.format(workdir=root / "runs", sample=sample_path))
    spec = load_study(path)
    launch(spec, progress=False)
    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    first_parents = tracker.study_runs(spec.name)
    study = launch(spec.with_overrides(n_trials=3), progress=False)
    return SimpleNamespace(root=root, path=path, spec=spec, study=study, tracker=tracker,
                           first_parents=first_parents)


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
    assert sum(r.baseline for r in ranked) == 4 and sum(not r.baseline for r in ranked) == 2
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


def test_export_writes_a_folder_predict_and_evaluate_use(sweep, sample_path: Path) -> None:
    from pricer.data.dataset import load_items
    from pricer.predict.evaluate import evaluate_items

    out = export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "best")
    card = (out / "README.md").read_text()
    best = next(r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name) if r.rank and not r.baseline)
    assert f"trial {best.trial}" in card and best.model in card and "## Metrics" in card
    items = load_items(sample_path)[:3]

    loaded = load_predictor(out)  # what `pricer predict` and `pricer evaluate --adapter` load
    assert loaded.kind == "adapter" and loaded.spec.name == best.model
    prices = loaded.predict([i.text for i in items])
    evaluation = evaluate_items(loaded.model, loaded.tokenizer, items, chat=loaded.spec.chat,
                                max_tokens=loaded.max_tokens)
    assert len(prices) == 3 and evaluation.metrics.n == 3

    assert export(sweep.spec.tracking_uri, sweep.spec.name, out) == out  # replaces its own export
    with pytest.raises(SpecError, match="PRUNED"):
        export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "pruned", trial=2)
    (sweep.root / "notes").mkdir()
    (sweep.root / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(SpecError, match="not a previous export"):
        export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "notes")


def test_merge_writes_the_lora_into_a_bf16_base_not_a_4bit_one(sweep) -> None:
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    from pricer.model.catalog import CATALOG, materialize

    out = export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "merged", trial=0, merge=True)
    merged = load_file(out / "merged" / "model.safetensors")
    base = load_file(materialize(CATALOG["smollm2-135m-instruct"]) / "model.safetensors")
    assert "quantization_config" not in json.loads((out / "merged" / "config.json").read_text())
    q, up = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert merged[q].dtype == base[q].dtype
    assert not merged[q].equal(base[q])  # LoRA targets attention: its update is in the weights
    assert merged[up].equal(base[up])    # and only there

    predictor = load_predictor(out / "merged")  # what `pricer predict --adapter OUT/merged` loads
    assert predictor.kind == "merged"
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in predictor.model.modules())  # loaded as merged
    assert not any("lora" in name for name, _ in predictor.model.named_parameters())
    assert len(predictor.predict(["Stainless steel electric kettle\n1.7 litre, auto shut-off"])) == 1


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
    assert len(finished) == 6  # 2 trials, 4 baselines
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
            assert len(errors) == 8  # eval_items, same items in every trial
            # the errors are the same evaluation's: their mean is the $ error MLflow logged at that step
            assert sum(errors) / 8 == pytest.approx(mae[step], abs=0.01)
            assert value == pytest.approx(rmsle[step], rel=1e-6)
    # the same items in the same order: the hopeless trial wrote no number, so its errors are
    # the true prices, and every other trial's error on an item is at most price + its guess
    hopeless = trials[2].user_attrs[errors_key(1)]
    first = trials[0].user_attrs[errors_key(1)]
    assert all(e >= 0 for e in first) and hopeless != first


def test_ensemble_export_weights_on_validation_and_serves_like_an_adapter(sweep, sample_path: Path, capsys) -> None:
    from pricer.data.dataset import load_items
    from pricer.model.adapter import read_meta
    from pricer.predict.predictor import evaluate, load_predictor
    from sweeps.cli.main import main
    from sweeps.results.ensemble import export_ensemble

    out = sweep.root / "ensemble"
    result = export_ensemble(sweep.spec.tracking_uri, sweep.spec.name, out, k=2)
    assert read_meta(out)["kind"] == "ensemble" and {m.name for m in result.members[:2]} == {"trial-0", "trial-1"}
    classical = [r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name)
                 if r.baseline and r.model != "constant"]
    assert len(result.members) == 3 and result.members[-1].name == min(classical, key=lambda r: r.mae).model
    assert abs(sum(m.weight for m in result.members) - 1) < 1e-9
    # the grid holds every single member, so on the items it was fitted on it can't be worse
    assert result.ensemble.val.mae <= min(m.val.mae for m in result.members) + 1e-9
    assert set(result.baselines) == {"constant", "linear", "tfidf_ridge", "random_forest"}
    assert "ensemble" in (out / "README.md").read_text()

    ensemble = load_predictor(out)  # what `pricer predict` and `pricer evaluate --adapter` load
    items = load_items(sample_path)[:2]
    prices = ensemble.predict([i.text for i in items])
    assert ensemble.kind == "ensemble" and len(prices) == 2 and all(p is not None and p >= 0 for p in prices)
    assert evaluate(ensemble, items).n == 2
    assert main(["predict", "--adapter", str(out), "--json", items[0].text]) == 0
    assert json.loads(capsys.readouterr().out)[0]["price"] is not None
    assert main(["export", str(sweep.path), "--out", str(out), "--ensemble", "1", "--register", "pricer-ens"]) == 0
    printed = capsys.readouterr().out
    assert "test $ error: ensemble" in printed and "constant" in printed
    from mlflow import MlflowClient

    version = MlflowClient(sweep.spec.tracking_uri).get_model_version("pricer-ens", "1")
    assert version.tags["pricer.kind"] == "ensemble" and float(version.tags["test_mae"]) == pytest.approx(
        json.loads((out / "pricer.json").read_text())["metrics"]["ensemble"]["test"]["mae"], rel=1e-5)


# --- shipping the best trial: a portable folder, a catalog priced, the MLflow model served -------

def test_exported_folder_is_portable_and_opens_with_pricer_and_plain_peft(sweep, tmp_path: Path, capsys,
                                                                         monkeypatch) -> None:
    import shutil

    import torch
    from peft import AutoPeftModelForCausalLM, PeftConfig, PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from pricer.model.catalog import CATALOG, materialize
    from pricer.model.weights import cache_root
    from sweeps.cli.main import main

    out = export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "portable")
    name = json.loads((out / "pricer.json").read_text())["model"]["name"]
    # named by catalog name (the tiny models have no hub id), never by the training machine's cache
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == name
    assert str(cache_root()) not in (out / "adapter_config.json").read_text()
    card = (out / "README.md").read_text()
    assert "pip install" in card and "AutoPeftModelForCausalLM" in card

    moved = Path(shutil.move(str(out), tmp_path / "elsewhere" / "best"))
    text = "Stainless steel electric kettle\\n1.7 litre, auto shut-off, boil-dry protection, 1500 W"
    assert main(["predict", "--adapter", str(moved), "--json", text]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["text"] == text and (printed[0]["price"] is None or printed[0]["price"] >= 0)

    # plain peft: the config names the base; give it the base where it can be reached
    assert PeftConfig.from_pretrained(moved).base_model_name_or_path == name
    base = AutoModelForCausalLM.from_pretrained(materialize(CATALOG[name]), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, moved)
    saved = load_file(moved / "adapter_model.safetensors")
    key = next(k for k in saved if "lora_A" in k)
    loaded = dict(model.named_parameters())[key.replace(".weight", ".default.weight")]
    assert torch.equal(loaded.detach().to(saved[key].dtype), saved[key])
    # ...and AutoPeftModelForCausalLM, where the name resolves (here: a folder of that name)
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / name).symlink_to(materialize(CATALOG[name]))
    monkeypatch.chdir(tmp_path / "bases")
    auto = AutoPeftModelForCausalLM.from_pretrained(moved)
    assert type(auto).__name__ == "PeftModelForCausalLM"


def test_pricer_predict_prices_a_catalog_keeping_every_row(sweep, sample_path: Path, tmp_path: Path,
                                                           capsys) -> None:
    import csv

    import pyarrow.parquet as pq

    from pricer.data.dataset import load_items
    from sweeps.cli.main import main

    out = export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "catalog-pricer")
    items = load_items(sample_path)[:4]
    catalog = tmp_path / "shop.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "Name", "Blurb", "Cost"])
        for n, item in enumerate(items):
            title, _, body = item.text.partition("\n")
            writer.writerow([f"S{n}", title, body, item.price])
        writer.writerow(["S-bad", "a row", "with", "too", "many", "fields"])
    priced = tmp_path / "priced.parquet"
    assert main(["predict", "--adapter", str(out), "--input", str(catalog), "--text-columns", "Name,Blurb",
                 "--out", str(priced)]) == 0
    captured = capsys.readouterr()
    assert "rows priced" in captured.out and "row 5: no price (bad_row" in captured.err
    rows = pq.read_table(priced).to_pylist()
    assert [r["sku"] for r in rows] == ["S0", "S1", "S2", "S3", "S-bad"]
    assert rows[4]["predicted_price"] is None and rows[4]["predict_problem"].startswith("bad_row")
    assert all(r["Cost"] for r in rows[:4])  # the user's own columns, kept as they were
    # a median-decoding folder adds the range around each price
    assert all(r["price_low"] <= r["predicted_price"] <= r["price_high"] for r in rows[:4]
               if r["predicted_price"] is not None) and rows[4]["price_low"] is None

    # the same file, with its price column, scored by `pricer evaluate`
    assert main(["evaluate", "--adapter", str(out), "--items", str(catalog), "--text-columns", "Name,Blurb",
                 "--price-column", "Cost", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["n"] >= 1 and scored["mae"] >= 0


def test_registered_model_loads_from_the_registry_and_is_served(sweep, tmp_path: Path, capsys) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow
    import pandas as pd

    from sweeps.cli.main import main

    assert main(["export", str(sweep.path), "--out", str(sweep.root / "registered"), "--register",
                 "sweep-pricer"]) == 0
    assert "registered sweep-pricer version 1" in capsys.readouterr().out
    client = mlflow.MlflowClient(sweep.spec.tracking_uri)
    version = client.get_model_version("sweep-pricer", "1")
    best = next(r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name) if r.rank and not r.baseline)
    assert version.run_id == best.run_id and version.tags["pricer.study"] == sweep.spec.name
    assert float(version.tags["val_rmsle"]) == pytest.approx(best.rmsle, rel=1e-5)

    texts = ["Stainless steel electric kettle\n1.7 litre, auto shut-off, boil-dry protection, 1500 W",
             "Cordless drill driver 20V\nTwo batteries, charger, 13 mm keyless chuck, LED work light",
             "Cotton bath towel set\nSix towels, 600 gsm, quick dry, machine washable"]
    mlflow.set_tracking_uri(sweep.spec.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/sweep-pricer/1")
    finally:
        mlflow.set_tracking_uri(None)
    prices = model.predict(pd.DataFrame({"text": texts}))["price"].tolist()
    assert len(prices) == 3 and any(p == p for p in prices)  # at least one number (NaN != NaN)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/sweep-pricer/1",
                              "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                             # serve starts `uvicorn` by name: the venv's bin must be on PATH
                             env={**os.environ, "MLFLOW_TRACKING_URI": sweep.spec.tracking_uri,
                                  "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 240, None
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"dataframe_records": [{"text": t} for t in texts]}).encode(),
                                         headers={"Content-Type": "application/json"})
        while answer is None and time.monotonic() < deadline and serve.poll() is None:
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    answer = json.load(response)
            except OSError:
                time.sleep(2)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-3000:]
        served = [row["price"] for row in answer["predictions"]]
        assert len(served) == 3 and any(isinstance(p, float) and p == p for p in served)
        assert served == pytest.approx(prices, nan_ok=True)
    finally:
        from sweeps.results.ui import stop

        stop(serve)  # the whole group: serve, uvicorn and its worker
        log.close()


# --- the verdict: ranges logged per trial, `pricer compare`, `pricer report` ---------------------

def _test_errors(sweep, trial: int) -> list[float]:
    """A trial's per-item test errors, read straight from its predictions.csv."""
    import csv

    run_id = open_study(sweep.spec).trials[trial].user_attrs["mlflow_run_id"]
    path = sweep.tracker.client.download_artifacts(run_id, "predictions.csv", str(sweep.root / f"csv-{trial}"))
    with open(path, newline="") as handle:
        return [abs(float(r["predicted"] or 0) - float(r["price"])) for r in csv.DictReader(handle)]


def test_every_finished_trial_logs_its_price_ranges_coverage_and_width(sweep) -> None:
    rows = [r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name) if not r.baseline and r.rank]
    for row in rows:
        metrics = sweep.tracker.client.get_run(row.run_id).data.metrics
        assert 0 <= row.test_coverage <= 1 and row.test_interval_width >= 0
        # 8 validation items are too few to calibrate on: the factor stays 1, raw and final agree
        assert metrics["interval_scale"] == 1.0
        assert metrics["interval_test_coverage_raw"] == row.test_coverage


def test_compare_pairs_two_trials_and_agrees_with_scipy(sweep, capsys) -> None:
    from scipy.stats import wilcoxon

    from sweeps.cli.main import main

    assert main(["compare", str(sweep.path), "0", "1", "--json"]) == 0
    paired = json.loads(capsys.readouterr().out)
    a, b = _test_errors(sweep, 0), _test_errors(sweep, 1)
    assert paired["n"] == 4
    assert paired["a_mae"] == pytest.approx(sum(a) / 4, abs=1e-6) and paired["b_mae"] == pytest.approx(sum(b) / 4, abs=1e-6)
    expected = 1.0 if a == b else wilcoxon(a, b).pvalue
    assert paired["p_value"] == pytest.approx(expected)
    low, high = paired["difference_interval"]
    assert low <= paired["difference"] <= high
    assert "not told apart on 4 items" in paired["sentence"] or " beats " in paired["sentence"]

    assert main(["compare", str(sweep.path), "0", "random_forest"]) == 0
    assert "Wilcoxon" in capsys.readouterr().out
    assert main(["compare", str(sweep.path), "0", "17"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no trial, run id or baseline '17'" in err
    assert main(["compare", str(sweep.path), "0", "2"]) == 2  # the pruned trial
    assert "pruned, not finished" in capsys.readouterr().err


def test_report_is_one_offline_page_logged_to_the_study_run_and_renders_in_chromium(sweep, tmp_path: Path,
                                                                                     capsys) -> None:
    import re
    import shutil
    import subprocess

    from sweeps.cli.main import main

    out = tmp_path / "report.html"
    assert main(["report", str(sweep.path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    page = out.read_text()
    assert "<table id='verdict'>" in page and "scatter-winner" in page
    # plotly.js inlined (3 MB+), no script fetched from anywhere: readable offline
    assert "<script charset=\"utf-8\" src=" not in page and len(page) > 3_000_000
    assert "random_forest (baseline)" in page and "Wilcoxon" in page
    assert ("not told apart on 4 items" in printed) or (" beats " in printed)
    parent = sweep.tracker.study_runs(sweep.spec.name)[0]
    assert {a.path for a in sweep.tracker.client.list_artifacts(parent, "report")} == {"report/report.html"}

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                          "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"<table id=\"verdict\">.*\(the winner\)", dom, flags=re.S)
    # plotly drew the winner's scatter: its div holds the rendered SVG with the points
    scatter = dom[dom.index('id="scatter-winner"'):]
    assert 'class="main-svg"' in scatter[:20000] and "scatterlayer" in scatter[:200000]


def test_a_study_with_no_finished_trial_gets_one_line(tmp_path: Path, capsys) -> None:
    from sweeps.cli.main import main
    from sweeps.track.tracking import ROLE, STUDY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "empty")
    tracker.start_run("empty", tags={ROLE: "study", STUDY: "empty"})
    capsys.readouterr()  # MLflow's own log lines from creating the store
    assert main(["report", "empty", "--tracking-uri", uri, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished trial" in err

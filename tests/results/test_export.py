"""Shipping a launched study's best trial (the session `sweep` fixture, conftest.py): the exported
adapter folder, the bf16 merge, the ensemble, a portable folder plain peft opens, a catalog priced
by `pricer predict`, and the registered MLflow model loaded and served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pricer.errors import SpecError
from pricer.predict.predictor import load_predictor
from sweeps.results.export import export
from sweeps.results.leaderboard import leaderboard

pytestmark = pytest.mark.slow  # the study trains four tiny-model trials once per session


def test_export_writes_a_folder_predict_and_evaluate_use(sweep, small_items, monkeypatch) -> None:
    from pricer.model import loading
    from pricer.predict.evaluate import evaluate_items

    out = export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "best")
    card = (out / "README.md").read_text()
    best = next(r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name) if r.rank and not r.baseline)
    assert f"trial {best.trial}" in card and best.model in card and "## Metrics" in card
    items = small_items[:3]

    read = []  # the folders a tokenizer was read from: a large vocabulary costs seconds each
    real = loading.load_tokenizer
    monkeypatch.setattr(loading, "load_tokenizer", lambda spec, folder=None: read.append(folder) or real(spec, folder))
    loaded = load_predictor(out)  # what `pricer predict` and `pricer evaluate --adapter` load
    assert loaded.kind == "adapter" and loaded.spec.name == best.model
    assert read == [out]  # the folder's own tokenizer, once, and not the base's as well
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


def test_ensemble_export_weights_on_validation_and_serves_like_an_adapter(sweep, small_items, capsys) -> None:
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
    assert set(result.baselines) == {"constant", "linear", "tfidf_ridge", "random_forest", "knn"}
    # paired on the test items with every member, then the baselines that are not members
    by_name = {p.b: p for p in result.paired}
    assert set(by_name) == {m.name for m in result.members} | set(result.baselines)
    for member in result.members:
        assert by_name[member.name].b_mae == pytest.approx(member.test.mae)
        assert by_name[member.name].a_mae == pytest.approx(result.ensemble.test.mae)
    card = (out / "README.md").read_text()
    assert "ensemble" in card and by_name["constant"].sentence() in card

    ensemble = load_predictor(out)  # what `pricer predict` and `pricer evaluate --adapter` load
    items = small_items[:2]
    prices = ensemble.predict([i.text for i in items])
    assert ensemble.kind == "ensemble" and len(prices) == 2 and all(p is not None and p >= 0 for p in prices)
    assert evaluate(ensemble, items).n == 2
    assert main(["predict", "--adapter", str(out), "--json", items[0].text]) == 0
    assert json.loads(capsys.readouterr().out)[0]["price"] is not None
    assert main(["export", str(sweep.path), "--out", str(out), "--ensemble", "1", "--register", "pricer-ens"]) == 0
    printed = capsys.readouterr().out
    paired = json.loads((out / "pricer.json").read_text())["metrics"]["paired_test"]
    best = result.members[0].name  # the leaderboard's top trial, whichever this CPU's arithmetic made it
    assert [p["b"] for p in paired][:1] == [best] and len(paired) == 1 + len(result.baselines)
    assert {p["b"] for p in paired} == {best, *result.baselines}
    assert all(f"test, paired: {p['sentence']}\n" in printed for p in paired)
    from mlflow import MlflowClient

    version = MlflowClient(sweep.spec.tracking_uri).get_model_version("pricer-ens", "1")
    assert version.tags["pricer.kind"] == "ensemble" and float(version.tags["test_mae"]) == pytest.approx(
        json.loads((out / "pricer.json").read_text())["metrics"]["ensemble"]["test"]["mae"], rel=1e-5)


def test_the_ensemble_beats_every_member_only_when_each_pairing_tells_it_apart() -> None:
    from pricer.metrics import score
    from sweeps.results.ensemble import EnsembleExport, Scored, _paired

    truth = [10.0 + 3 * i for i in range(40)]
    near = [t + (1 if i % 2 else -1) for i, t in enumerate(truth)]  # $1 off on every item

    def scored(name: str, preds: list[float]) -> Scored:
        metrics = score(truth, preds)
        return Scored(name, 0.5, metrics, metrics)

    trial, forest = scored("trial-0", [t * 1.5 for t in truth]), scored("random_forest", [t + 8 for t in truth])
    baselines = {"random_forest": forest.test, "constant": score(truth, [50.0] * len(truth))}
    ensemble = scored("ensemble", near)
    better = EnsembleExport(Path("."), ensemble, [trial, forest], baselines, _paired(ensemble, [trial, forest], baselines))
    assert [p.b for p in better.paired] == ["trial-0", "random_forest", "constant"] and better.beats_every_member
    # the fit gave the forest all the weight: the ensemble is the forest, told apart from nothing
    same = scored("ensemble", [t + 8 for t in truth])
    tied = EnsembleExport(Path("."), same, [trial, forest], baselines, _paired(same, [trial, forest], baselines))
    assert tied.paired[0].told_apart and not tied.beats_every_member
    assert "not told apart" in tied.paired[1].sentence()


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


def test_pricer_predict_prices_a_catalog_keeping_every_row(sweep, small_items, tmp_path: Path,
                                                           capsys) -> None:
    import csv

    import pyarrow.parquet as pq

    from sweeps.cli.main import main

    out = export(sweep.spec.tracking_uri, sweep.spec.name, sweep.root / "catalog-pricer")
    items = small_items[:4]
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
    assert scored["n"] == 4  # the four priced rows; the bad row is listed, not scored


def test_registered_model_loads_from_the_registry_and_is_served(sweep, tmp_path: Path, capsys) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow

    from pricer.data.dataset import load_items
    from sweeps.cli.main import main
    from sweeps.results.verdict import StudyResults

    assert main(["export", str(sweep.path), "--out", str(sweep.root / "registered"), "--register",
                 "sweep-pricer"]) == 0
    assert "registered sweep-pricer version 1" in capsys.readouterr().out
    client = mlflow.MlflowClient(sweep.spec.tracking_uri)
    version = client.get_model_version("sweep-pricer", "1")
    best = next(r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name) if r.rank and not r.baseline)
    assert version.run_id == best.run_id and version.tags["pricer.study"] == sweep.spec.name
    assert float(version.tags["val_rmsle"]) == pytest.approx(best.rmsle, rel=1e-5)

    # the trial's own test items, as one batch the way its test ran: the served prices are the ones it logged
    results = StudyResults(sweep.spec.tracking_uri, sweep.spec.name)
    logged = results.test_rows(results.find(best.run_id))
    by_title = {i.title: i.text for i in load_items(sweep.spec.data.source)}
    texts = [by_title[row["title"]] for row in logged]
    prices = [float("nan") if row["predicted"] is None else row["predicted"] for row in logged]

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
        assert len(served) == len(texts) and any(isinstance(p, float) and p == p for p in served)
        assert [p if p is not None else float("nan") for p in served] == pytest.approx(prices, nan_ok=True)
    finally:
        from sweeps.results.ui import stop

        stop(serve)  # the whole group: serve, uvicorn and its worker
        log.close()

"""Classical baselines on the real sample, and `pricer baselines` / `pricer data build`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES

from pricer.data.dataset import load_splits
from pricer.predict.baselines import BASELINES, run_baselines, volume_cubic_inches, weight_pounds
from sweeps.cli.main import main

RAW = FIXTURES / "raw_meta.jsonl"


@pytest.fixture(scope="module")
def results(built_data: Path):
    return dict(run_baselines(load_splits(built_data)))


def test_the_best_baseline_clearly_beats_the_constant(results):
    assert list(results) == list(BASELINES)
    best = min(m.mae for m in results.values())
    assert best < 0.7 * results["constant"].mae
    assert max(m.hit_rate for m in results.values()) > results["constant"].hit_rate + 0.3
    # the neighbours' own prices, with no training at all, land with the fitted models
    assert results["knn"].mae < 0.7 * results["constant"].mae
    assert results["knn"].seconds_per_1000 > 0


def test_constant_predicts_the_train_mean(results, built_data: Path):
    data = load_splits(built_data)
    mean = sum(data["train"]["price"]) / len(data["train"])
    test = data["test"]["price"]
    assert results["constant"].mae == pytest.approx(sum(abs(t - mean) for t in test) / len(test))
    assert results["constant"].n == len(test)
    assert set(results["constant"].per_category) == set(data["test"]["category"])


@pytest.mark.parametrize("details, pounds", [
    ({"Item Weight": "2.4 pounds"}, 2.4), ({"Item Weight": "16 Ounces"}, 1.0),
    ({"Package Dimensions": "7 x 5 x 1 inches; 453.6 Grams"}, 1.0), ({"Item Weight": "1 Kilograms"}, 2.2046),
    ({"Color": "red"}, None),
])
def test_weight_from_details(details, pounds):
    assert weight_pounds(details) == (pytest.approx(pounds) if pounds else None)


def test_volume_from_details():
    assert volume_cubic_inches({"Product Dimensions": "2 x 3 x 4 inches"}) == 24
    assert volume_cubic_inches({"Brand": "x"}) is None


def test_baselines_cli_json_scores_a_jsonl_on_another_items_file(sample_path: Path, tmp_path: Path, capsys):
    subset = tmp_path / "subset.jsonl"
    with sample_path.open() as src:
        subset.write_text("".join(line for _, line in zip(range(600), src, strict=False)))
    assert main(["baselines", "--data", str(subset), "--test", str(RAW), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(BASELINES)
    assert all(set(row) == {"name", "mae", "rmsle", "hit_rate", "n"} and row["n"] == 6 for row in rows)
    assert len({row["mae"] for row in rows}) == len(BASELINES)  # each scored its own predictions


def test_data_build_cli_prints_the_summary_and_bad_sources_exit_2(tmp_path: Path, capsys):
    assert main(["data", "build", "--source", str(RAW), "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "dropped:" in out and "bad_json 1" in out and "no_price 2" in out
    assert main(["baselines", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err

"""`pricer evaluate` scores a retailer's own catalog: short descriptions and prices outside the
training range are scored (the latter reported on their own), unreadable rows are listed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pricer.data.curate import MAX_PRICE, MIN_CHARS
from pricer.data.scoring import scoring_items
from pricer.data.tables import Columns
from pricer.errors import DataError


def write_catalog(path: Path, items: list, n: int = 6) -> list[dict]:
    """A retailer's CSV: real titles with one short line of description each, its own column
    names, two prices above the training range, one row without a price, one with a bad one."""
    items = items[:n]
    rows = [{"sku": f"A{k}", "name": i.title, "blurb": i.text.split("\n", 1)[-1][:60],
             "retail": f"{i.price:.2f}"} for k, i in enumerate(items)]
    rows[1]["retail"] = "1,299.00"
    rows[2]["retail"] = "2450"
    rows.append({"sku": "X1", "name": "Gift card", "blurb": "any amount", "retail": ""})
    rows.append({"sku": "X2", "name": "Bundle", "blurb": "ask in store", "retail": "call us"})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sku", "name", "blurb", "retail"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_every_priced_row_is_scored_whatever_its_length_or_price(small_items, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    rows = write_catalog(path, small_items)
    scoring = scoring_items(path, Columns(("name", "blurb"), "retail"))
    # training's curation would drop all of these as too short
    assert all(len(r["blurb"]) < MIN_CHARS for r in rows)
    assert scoring.rows == [1, 2, 3, 4, 5, 6]
    assert [i.price for i in scoring.items][1:3] == [1299.0, 2450.0]
    assert scoring.in_range == [True, False, False, True, True, True]
    assert [n for n, _ in scoring.unreadable] == [7, 8]
    assert "no_price" in scoring.unreadable[0][1] and "bad_price" in scoring.unreadable[1][1]
    assert scoring.items[0].text.startswith(rows[0]["name"].split()[0])


def test_a_file_with_no_scorable_row_names_the_reasons(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("name,retail\nkettle,\nmug,free\n")
    with pytest.raises(DataError, match=r"no row has a price and a text \(2 unreadable: bad_price, no_price\)"):
        scoring_items(path, Columns(("name",), "retail"))


# SmolLM2's trial only, as in test_evaluate: the CLI reads every folder the same way whatever its base
@pytest.mark.slow
@pytest.mark.parametrize("tiny_trial", ["smollm2-135m-instruct"], indirect=True)
def test_cli_evaluate_scores_a_short_catalog_and_shows_the_rows_outside_the_range(
        tiny_trial, small_items, tmp_path: Path, capsys) -> None:
    from sweeps.cli.main import main

    result, _ = tiny_trial
    path = tmp_path / "catalog.csv"
    write_catalog(path, small_items)
    assert main(["evaluate", "--adapter", str(result.adapter_dir), "--items", str(path),
                 "--text-columns", "name,blurb", "--price-column", "retail", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 6
    assert scores["in_training_range"]["n"] == 4 and scores["out_of_training_range"]["n"] == 2
    outside = scores["out_of_training_range"]["rows"]
    assert [r["row"] for r in outside] == [2, 3] and all(r["price"] > MAX_PRICE for r in outside)
    for r in outside:  # the error is shown, not hidden
        assert r["error"] == pytest.approx(abs((r["predicted"] or 0) - r["price"]))
    assert [u["row"] for u in scores["unreadable"]] == [7, 8]
    # the all-rows error is the mean over both parts
    parts = scores["in_training_range"], scores["out_of_training_range"]
    assert scores["mae"] == pytest.approx(sum(p["mae"] * p["n"] for p in parts) / 6)
    # median decoding prices with a range, scored as coverage on these rows
    assert scores["coverage"] is not None and scores["interval_width"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("tiny_trial", ["smollm2-135m-instruct"], indirect=True)
def test_a_trained_folder_prices_with_a_range_around_its_median(tiny_trial, tmp_path: Path, capsys) -> None:
    from sweeps.cli.main import main

    result, _ = tiny_trial
    # the trial's test pass scored the range on its rows, and the folder records its calibration
    rows = result.predictions
    covered = [r["price_low"] is not None and r["price_low"] <= r["price"] <= r["price_high"] for r in rows]
    assert result.test_metrics.coverage == pytest.approx(sum(covered) / len(rows))
    meta = json.loads((result.adapter_dir / "pricer.json").read_text())
    assert meta["interval"]["levels"] == [0.1, 0.9] and meta["interval"]["scale"] > 0
    assert all(r["price_low"] <= r["predicted"] <= r["price_high"] for r in rows if r["predicted"] is not None)

    texts = [r["title"] for r in rows[:3]]
    assert main(["predict", "--adapter", str(result.adapter_dir), *texts, "--json"]) == 0
    for priced in json.loads(capsys.readouterr().out):
        if priced["price"] is not None:
            assert priced["price_low"] <= priced["price"] <= priced["price_high"]
    assert main(["predict", "--adapter", str(result.adapter_dir), texts[0], "--levels", "0.9,0.1"]) == 2
    assert "0 < low < high < 1" in capsys.readouterr().err

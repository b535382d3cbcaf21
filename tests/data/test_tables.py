"""A retailer's own catalog as CSV, Parquet or jsonl: read with a column mapping, built into splits,
cleaned as training cleans, and every row kept (unreadable ones with their problem)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from pricer.data.curate import item_from_raw
from pricer.data.tables import BAD_ROW, NO_ANSWER, Columns, product_of, read_table, texts_of, write_priced
from pricer.errors import DataError, SpecError

RAW = {"title": "Stainless Steel Electric Kettle, 1.7 L", "price": "$39.99", "main_category": "Appliances",
       "description": ["Boils a litre in four minutes. " * 8], "features": ["Auto shut-off", "BPA free lid"],
       "details": {"Brand": "Acme", "Batteries Required?": "No", "Item Weight": "1.2 kg"}}


def _catalog_rows(sample_path: Path, n: int) -> list[dict]:
    """Sample items as a retailer's columns: name, blurb, cost, plus a column pricing must keep."""
    rows = []
    with sample_path.open() as handle:
        for i, line in enumerate(handle):
            if i == n:
                break
            item = json.loads(line)
            title, _, body = item["text"].partition("\n")
            rows.append({"sku": f"SKU-{i:04d}", "Product Name": title, "Blurb": body, "Cost": item["price"]})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_row_reads_as_curation_reads_the_same_raw_record() -> None:
    """The same product as a raw Amazon record and as a table row gives the same prompt text."""
    values = {"title": RAW["title"], "description": RAW["description"][0], "features": RAW["features"],
              "details": RAW["details"]}
    text = product_of(values, ("title", "description", "features", "details"))
    assert text == item_from_raw(RAW).text
    assert text.startswith("Stainless Steel Electric Kettle, 1.7 L\n") and "Batteries" not in text


def test_unreadable_csv_and_jsonl_rows_are_kept_with_their_problem(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("sku,title,description\nA1,Red kettle,A kettle\nA2,Blue mug,A mug,EXTRA\nA3\nA4,,\n")
    table = read_table(path)
    pairs = texts_of(table, Columns(text=("title", "description")))
    assert [row.values.get("sku") for row, _ in pairs] == ["A1", "A2", "A3", "A4"]
    assert [bool(row.problem) for row, _ in pairs] == [False, True, True, True]
    assert pairs[1][0].problem.startswith(BAD_ROW) and "4 fields" in pairs[1][0].problem
    assert pairs[3][0].problem == "no text in title, description"
    assert pairs[0][1] == "Red kettle\nA kettle"

    path = tmp_path / "catalog.jsonl"
    path.write_text('{"title": "Red kettle", "description": "A kettle"}\n{broken\n\n[1, 2]\n')
    pairs = texts_of(read_table(path), Columns())
    assert [row.number for row, _ in pairs] == [1, 2, 3]
    assert [row.problem.split(":")[0] for row, _ in pairs] == ["", BAD_ROW, BAD_ROW]


def test_priced_output_keeps_every_row_and_column_in_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "catalog.csv"
    path.write_text("sku,title,description\nA1,Red kettle,A kettle\nA2,Blue mug,A mug,EXTRA\nA3,Green pot,A pot\n")
    table = read_table(path)
    rows = [row for row, _ in texts_of(table, Columns())]
    for suffix in (".csv", ".jsonl", ".parquet"):
        problems = ["", rows[1].problem, NO_ANSWER]
        out = write_priced(tmp_path / f"priced{suffix}", table.header, rows, [24.0, None, None], None, problems)
        if suffix == ".parquet":
            records = pq.read_table(out).to_pylist()
        elif suffix == ".jsonl":
            records = [json.loads(line) for line in out.read_text().splitlines()]
        else:
            records = list(csv.DictReader(out.open(newline="")))
        assert [r["sku"] for r in records] == ["A1", "A2", "A3"]
        assert [str(r["predicted_price"]) for r in records][0] in ("24.0", "24")
        assert records[1]["predict_problem"].startswith(BAD_ROW)
        assert records[2]["predict_problem"] == "the model wrote no price"
        assert records[1]["predicted_price"] in (None, "")


def test_a_retailer_csv_and_parquet_build_into_splits_with_a_column_mapping(tmp_path: Path,
                                                                           sample_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pricer.data.dataset import build, load_items, load_splits

    rows = _catalog_rows(sample_path, 300)
    columns = Columns.parse("Product Name,Blurb", "Cost")
    csv_path = _write_csv(tmp_path / "shop.csv", rows)
    report = build(csv_path, tmp_path / "built", columns=columns, progress=False)
    assert report.lines == 300 and report.kept > 200
    splits = load_splits(tmp_path / "built")
    assert sum(len(splits[s]) for s in splits) == report.kept

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "shop.parquet")
    items = load_items(tmp_path / "shop.parquet", columns)
    assert items[0].title == rows[0]["Product Name"] and items[0].price == rows[0]["Cost"]
    assert [i.text for i in items] == [i.text for i in load_items(csv_path, columns)]

    with pytest.raises(DataError, match="no price column 'price'.*--price-column"):
        load_items(csv_path, Columns.parse("Product Name,Blurb"))
    with pytest.raises(DataError, match="Title.*not in the table.*--text-columns"):
        load_items(csv_path, Columns.parse("Title", "Cost"))
    with pytest.raises(SpecError, match="also a text column"):
        Columns.parse("Product Name,Cost", "Cost")


def test_data_build_and_a_bad_row_through_the_cli(tmp_path: Path, sample_path: Path, capsys) -> None:
    from sweeps.cli.main import main

    rows = _catalog_rows(sample_path, 120)
    path = _write_csv(tmp_path / "shop.csv", rows)
    with path.open("a") as handle:
        handle.write("SKU-BAD,only a title\n")
    assert main(["data", "build", "--source", str(path), "--out", str(tmp_path / "built"),
                 "--text-columns", "Product Name,Blurb", "--price-column", "Cost"]) == 0
    summary = json.loads((tmp_path / "built" / "build_summary.json").read_text())
    assert summary["lines"] == 121 and summary["dropped"].get(BAD_ROW) == 1
    assert Counter(summary["dropped"]) and summary["kept"] > 80


def test_predict_checks_the_catalog_and_the_output_before_loading_a_model(tmp_path: Path, capsys) -> None:
    from sweeps.cli.main import main

    catalog = tmp_path / "shop.csv"
    catalog.write_text("sku,Name\nA1,Red kettle\n")
    missing = str(tmp_path / "no-adapter")  # loading it would fail: every error below comes first
    cases = [(["--input", str(catalog), "--out", str(tmp_path / "priced.txt")], "expected one of .jsonl, .csv"),
             (["--input", str(catalog), "--text-columns", "Title"], "Title not in the table"),
             (["--input", str(catalog), "Red kettle"], "not both"),
             (["Red kettle", "--out", str(tmp_path / "p.csv")], "go with --input")]
    for argv, expected in cases:
        assert main(["predict", "--adapter", missing, *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and "not an adapter folder" not in err, err
    assert not (tmp_path / "priced.txt").exists()

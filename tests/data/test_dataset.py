"""build / load_splits / load_items on the real sample and the raw fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES

from pricer.data.dataset import SUMMARY_FILE, build, load_items, load_splits
from pricer.errors import DataError

RAW = FIXTURES / "raw_meta.jsonl"


def test_built_sample_has_three_splits_and_a_summary(built_data: Path):
    data = load_splits(built_data)
    assert list(data) == ["train", "validation", "test"]
    assert data["train"].column_names == ["title", "category", "price", "text", "details"]
    sizes = {name: len(split) for name, split in data.items()}
    summary = json.loads((built_data / SUMMARY_FILE).read_text())
    assert summary["lines"] == 4940 and summary["dropped"] == {"duplicate": 13}
    assert summary["kept"] == sum(sizes.values()) == 4927
    assert {name: s["n"] for name, s in summary["splits"].items()} == sizes
    assert 0.08 < sizes["test"] / summary["kept"] < 0.12
    assert summary["splits"]["train"]["min"] >= 0.5 and summary["splits"]["train"]["max"] <= 999.49
    assert not set(data["train"]["title"]) & set(data["test"]["title"])


def test_a_jsonl_splits_on_the_fly_exactly_like_the_built_folder(built_data: Path, sample_path: Path):
    on_the_fly = load_splits(sample_path)
    built = load_splits(built_data)
    for name in ("train", "validation", "test"):
        assert on_the_fly[name]["title"] == built[name]["title"]
    assert load_splits(sample_path, seed=7)["test"]["title"] != built["test"]["title"]


def test_raw_build_reports_every_drop_by_reason(tmp_path: Path):
    report = build(RAW, tmp_path / "raw", progress=False)
    assert report.lines == 16 and report.kept == 5
    assert report.dropped == {"bad_json": 1, "bad_price": 1, "duplicate": 1, "empty_line": 1, "no_price": 2,
                              "no_title": 1, "not_an_object": 1, "price_out_of_range": 2, "too_short": 1}
    data = load_splits(tmp_path / "raw")  # empty splits must load back too
    assert sum(len(s) for s in data.values()) == 5


def test_balanced_build_caps_dollar_buckets(sample_path: Path):
    report = build(sample_path, None, balance=5, progress=False)
    assert report.out is None and report.dropped["over_bucket_cap"] > 1000
    assert report.kept + sum(report.dropped.values()) == report.lines == 4940


def test_limit_reads_only_the_first_lines(tmp_path: Path, sample_path: Path):
    report = build(sample_path, tmp_path / "small", limit=300, progress=False)
    assert report.lines == 300 and report.kept == 300


def test_bad_paths_raise_data_errors_naming_them(tmp_path: Path):
    with pytest.raises(DataError, match="nowhere.jsonl"):
        build(tmp_path / "nowhere.jsonl", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="not a built dataset"):
        load_splits(tmp_path)
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text('{"title": "x", "price": null}\nnot json\n')
    with pytest.raises(DataError, match=r"no usable items \(bad_json 1, no_price 1\)"):
        build(only_bad, None, progress=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(DataError, match="not a folder"):
        build(RAW, a_file, progress=False)


def test_load_items_reads_a_jsonl_or_a_built_folders_test_split(built_data: Path):
    assert len(load_items(RAW)) == 6  # a reader's items: curated, not de-duplicated
    test = load_items(built_data)
    assert len(test) == len(load_splits(built_data)["test"]) and test[0].price > 0


def test_dataset_rows_become_items_one_way_and_a_row_curation_would_drop_is_named() -> None:
    from pricer.data.curate import item_from_curated
    from pricer.data.dataset import as_items
    from pricer.errors import DataError

    good = {"title": " Blue kettle ", "category": "Appliances", "price": 24.99, "details": "",
            "text": "Blue kettle\n" + "A 1.7 litre electric kettle with a blue enamel finish. " * 3}
    item = as_items([good])[0]
    assert item == item_from_curated(good) and item.title == "Blue kettle"
    assert as_items([item]) == [item]  # an Item passes through
    with pytest.raises(DataError, match=r"dataset row 1: price_out_of_range.*pricer data build"):
        as_items([good, {**good, "price": 5000.0}])

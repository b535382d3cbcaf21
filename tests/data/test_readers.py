"""Readers: raw Amazon 2023 metadata and curated jsonl, bad lines counted by reason."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES

from pricer.data.readers import category_of, iter_lines, read_items
from pricer.errors import DataError

RAW = FIXTURES / "raw_meta.jsonl"


def test_raw_fixture_keeps_good_lines_and_counts_each_bad_one_by_reason():
    drops: Counter = Counter()
    items = list(read_items(RAW, drops=drops))
    assert [i.price for i in items] == [34.99, 189.0, 79.95, 42.5, 175.0, 15.0]
    assert drops == {"empty_line": 1, "bad_json": 1, "not_an_object": 1, "no_title": 1, "no_price": 2,
                     "bad_price": 1, "price_out_of_range": 2, "too_short": 1}
    assert len(items) + sum(drops.values()) == len(RAW.read_text().splitlines())


def test_raw_item_is_curated_like_the_recipe():
    kettle = next(read_items(RAW))
    title_line, body = kettle.text.split("\n")
    assert title_line == "Brightwell 1.0 L Electric Kettle, Brushed Steel, Model"  # BW1000KT is a part number
    assert "Batteries" not in body and "Date First" not in body and "By Manufacturer" not in body
    assert "KT-1500X2" not in body and "Available March 3, 2021" in body
    assert not any(c in body for c in '{}[]":')
    assert json.loads(kettle.details)["Brand"] == "Brightwell"
    assert kettle.category == "Appliances"


def test_main_category_becomes_the_folder_style_name():
    categories = {i.category for i in read_items(RAW)}
    assert categories == {"Appliances", "Musical_Instruments", "Tools_and_Home_Improvement",
                          "Toys_and_Games", "Cell_Phones_and_Accessories"}


def test_a_meta_category_file_name_sets_the_category(tmp_path: Path):
    source = tmp_path / "meta_Office_Products.jsonl"
    shutil.copy(RAW, source)
    assert category_of(source) == "Office_Products"
    assert {i.category for i in read_items(source)} == {"Office_Products"}
    url = "hf://datasets/McAuley-Lab/Amazon-Reviews-2023/raw/meta_categories/meta_Appliances.jsonl"
    assert category_of(url) == "Appliances"


def test_limit_counts_source_lines_good_and_bad():
    drops: Counter = Counter()
    items = list(read_items(RAW, limit=5, drops=drops))
    assert len(items) == 4 and drops == {"empty_line": 1}
    assert len(list(iter_lines(RAW, limit=2))) == 2


def test_missing_source_names_the_path(tmp_path: Path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError, match=str(missing)):
        list(read_items(missing))


def test_curated_sample_reads_every_line(sample_path: Path):
    drops: Counter = Counter()
    items = list(read_items(sample_path, drops=drops))
    assert len(items) == 4940 and not drops
    first = json.loads(sample_path.open().readline())
    assert items[0].text == first["text"] and items[0].details == first["details"]


def test_curated_and_raw_lines_mix_and_bad_bytes_are_not_fatal(tmp_path: Path, sample_path: Path):
    curated = sample_path.open().readline().encode()
    raw = RAW.read_bytes().splitlines()[0]
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(curated + raw.replace(b"boils", b"bo\xffils") + b"\n\n")
    drops: Counter = Counter()
    items = list(read_items(source, drops=drops))
    assert [i.category for i in items] == ["Appliances", "Appliances"]
    assert "bo ils" in items[1].text and drops == {"empty_line": 1}


def test_an_unreachable_url_is_a_data_error_naming_it():
    url = "https://pricer.invalid/meta_Appliances.jsonl"  # .invalid never resolves (RFC 2606)
    with pytest.raises(DataError, match="pricer.invalid"):
        list(read_items(url, limit=10))

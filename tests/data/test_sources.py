"""Several sources, the amazon2023:<Category> shorthand, and a missing or unknown one named in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from pricer.bench.data import write_raw_lines
from pricer.data.dataset import build, load_splits
from pricer.data.sources import AMAZON2023_CATEGORIES, RECIPE_CATEGORIES, expand, expand_all
from pricer.errors import DataError, SpecError


@pytest.fixture(scope="module")
def two_raw_files(sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """1,200 raw-schema Amazon 2023 lines made from the real sample, over two files."""
    return write_raw_lines(sample_path, 1200, tmp_path_factory.mktemp("raw"))


def test_the_shorthand_names_the_hubs_raw_category_file() -> None:
    assert expand("amazon2023:Musical_Instruments") == (
        "hf://datasets/McAuley-Lab/Amazon-Reviews-2023/raw/meta_categories/meta_Musical_Instruments.jsonl")
    assert set(RECIPE_CATEGORIES) < set(AMAZON2023_CATEGORIES)
    assert expand("items.jsonl") == "items.jsonl"


def test_an_unknown_category_is_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(DataError) as error:
        expand_all(["amazon2023:Applainces"])
    message = str(error.value)
    assert "'Applainces'" in message and "Appliances" in message and "Toys_and_Games" in message
    assert "\n" not in message


def test_a_source_list_with_one_missing_file_names_it(two_raw_files: list[Path], tmp_path: Path) -> None:
    missing = tmp_path / "meta_Nowhere.jsonl"
    with pytest.raises(DataError, match=r"meta_Nowhere\.jsonl: no such file \(source 2 of 3\)"):
        build([two_raw_files[0], missing, two_raw_files[1]], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_several_sources_are_read_in_order_and_deduplicated_across_them(two_raw_files: list[Path],
                                                                       tmp_path: Path) -> None:
    both = build(two_raw_files, tmp_path / "both", workers=1, progress=False)
    second = build(two_raw_files[1], None, workers=1, progress=False)
    assert both.lines == 1200 and second.lines == 600 and both.sources == [str(p) for p in two_raw_files]
    assert both.kept + sum(both.dropped.values()) == both.lines
    data = load_splits(tmp_path / "both")
    lots = [re.search(r"\(lot (\d+) no (\d+)\)$", t) for split in data.values() for t in split["title"]]
    numbers = {1000 * int(m.group(1)) + int(m.group(2)) for m in lots}
    assert min(numbers) < 600 <= max(numbers)  # items from both files
    # a copy of the second file read last adds lines but no item: every curated copy is a duplicate
    again = build([*two_raw_files, _copy(two_raw_files[1], tmp_path / "copy.jsonl")], None, workers=1,
                  progress=False)
    assert again.lines == 1800 and again.kept == both.kept
    new_duplicates = again.dropped["duplicate"] - both.dropped.get("duplicate", 0)
    assert new_duplicates == second.kept + second.dropped.get("duplicate", 0)


def _copy(path: Path, to: Path) -> Path:
    to.write_bytes(path.read_bytes())
    return to


def test_data_build_takes_several_sources_on_the_command_line(two_raw_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "built"
    run = subprocess.run([sys.executable, "-m", "sweeps.cli", "data", "build", "--source", str(two_raw_files[0]),
                          "--source", str(two_raw_files[1]), "--out", str(out), "--sample-cap", "3",
                          "--category-weights", "Appliances=1,*=5", "--workers", "2"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "of 2 source(s)" in run.stdout and "items per category, before and after" in run.stdout
    assert "items per price band" in run.stdout and "Musical_Instruments" in run.stdout
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["lines"] == 1200 and summary["sampling"]["cap"] == 3
    assert summary["categories_before"]["Appliances"] > summary["categories"]["Appliances"]

    bad = subprocess.run([sys.executable, "-m", "sweeps.cli", "data", "build", "--source", "amazon2023:Kitchen",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "unknown Amazon 2023 category 'Kitchen'" in bad.stderr


def test_a_study_names_the_bad_entry_of_its_sources(tmp_path: Path) -> None:
    from pricer.declared import validate
    from sweeps.spec.sections import DataSpec

    def data(**section):
        return validate(DataSpec, section, "x.yaml: data")

    with pytest.raises(SpecError, match=r"sources\[1\]: amazon2023:Toys: unknown Amazon 2023 category 'Toys'"):
        data(sources=["amazon2023:Appliances", "amazon2023:Toys"])
    with pytest.raises(SpecError, match="source or sources, not both"):
        data(source="a.jsonl", sources=["b.jsonl"])
    with pytest.raises(SpecError, match="balance or sampling, not both"):
        data(sources=["a.jsonl"], balance=5, sampling={"cap": 5})
    with pytest.raises(SpecError, match=r"sampling\.cap: required"):
        data(sources=["a.jsonl"], sampling={"category_weights": "inverse"})
    spec = data(sources=["amazon2023:Appliances", "items.jsonl"], sampling={"cap": 1200, "keep_all_from": 240})
    assert spec.resolve_all(None)[0] == "amazon2023:Appliances" and spec.sampling.category_weights == "inverse"

"""Curation that scales: byte-range shards, the same splits whatever the worker count, a build
cached by its sources' content and settings, and the exact scrub it is built on."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from pricer.bench.data import write_raw_lines
from pricer.data.corpus import Curation, curate
from pricer.data.curate import DIGITS, ODD_CHARACTERS, scrub
from pricer.data.dataset import build, cached_build, load_splits
from pricer.data.readers import iter_lines, range_lines
from pricer.data.shards import assign_shards
from pricer.data.sources import expand_all


@pytest.fixture(scope="module")
def raw_files(sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_raw_lines(sample_path, 1000, tmp_path_factory.mktemp("raw"))


def test_byte_range_shards_read_every_line_once(raw_files: list[Path]) -> None:
    shards = assign_shards([str(p) for p in raw_files], workers=2, min_bytes=50_000)
    assert len(shards) > 10 and [s.index for s in shards] == list(range(len(shards)))
    for path in raw_files:
        ranges = [s for s in shards if s.source == str(path)]
        read = [line for s in ranges for line in range_lines(path, s.start, s.end)]
        assert read == list(iter_lines(path))


def test_the_splits_do_not_depend_on_the_worker_count(raw_files: list[Path], tmp_path: Path) -> None:
    sources = expand_all(raw_files)
    curation = Curation(seed=3, balance=2)
    corpora = []
    for workers, min_bytes in ((1, 1 << 30), (2, 40_000)):
        scratch = tmp_path / f"scratch-{workers}"
        scratch.mkdir()
        corpus = curate(sources, curation, scratch, workers=workers, min_shard_bytes=min_bytes)
        corpora.append((len(corpus.paths), corpus.drops, {n: [i.title for i in corpus.items(p)]
                                                          for n, p in corpus.splits.items()}))
    (one_shard_each, drops_1, splits_1), (many_shards, drops_2, splits_2) = corpora
    assert one_shard_each == 2 and many_shards > 10
    assert drops_1 == drops_2 and drops_1["over_bucket_cap"] > 0
    assert splits_1 == splits_2
    report = build(raw_files, tmp_path / "built", seed=3, balance=2, workers=2, progress=False)
    assert report.dropped == dict(sorted(drops_1.items()))
    built = load_splits(tmp_path / "built")
    assert {name: built[name]["title"] for name in splits_1} == splits_1


def test_a_study_rebuilds_when_a_source_or_a_setting_changes(raw_files: list[Path], tmp_path: Path) -> None:
    from sweeps.run.studies import prepare_data
    from sweeps.spec.study import load_study

    sources = [tmp_path / p.name for p in raw_files]
    for src, dst in zip(raw_files, sources, strict=True):
        shutil.copy(src, dst)
    study = tmp_path / "studies" / "s.yaml"
    study.parent.mkdir()
    text = textwrap.dedent(f"""\
        name: cache-check
        data: {{sources: [{sources[0]}, {sources[1]}], seed: 5, workers: 1}}
        search_space: {{lora_r: {{choices: [4]}}}}
        fixed: {{model: smollm2-135m-instruct, max_steps: 1}}
        n_trials: 1
        workdir: {tmp_path / "runs"}
        """)
    study.write_text(text)
    first = prepare_data(load_study(study), progress=False)
    built_at = (first / "dataset_dict.json").stat().st_mtime_ns
    assert prepare_data(load_study(study), progress=False) == first
    assert (first / "dataset_dict.json").stat().st_mtime_ns == built_at  # reused, not rebuilt

    with open(sources[1], "a") as handle:  # a source that changed is read again
        handle.write(raw_files[0].read_text().splitlines()[1].replace('(lot 0 no 1)"', '(lot 999 no 1)"') + "\n")
    changed = prepare_data(load_study(study), progress=False)
    assert changed != first and sum(len(s) for s in load_splits(changed).values()) == \
        sum(len(s) for s in load_splits(first).values()) + 1

    study.write_text(text.replace("seed: 5", "seed: 6"))
    assert prepare_data(load_study(study), progress=False) not in (first, changed)
    assert len(list((tmp_path / "runs").glob("data-*"))) == 3
    assert not list((tmp_path / "runs").glob("*.partial-*"))


def test_cached_build_reuses_the_same_sources_and_settings(raw_files: list[Path], tmp_path: Path) -> None:
    out = cached_build(raw_files, tmp_path, workers=1, progress=False)
    os.utime(raw_files[0], ns=(1, 1))  # touched: another modification time
    assert cached_build(raw_files, tmp_path, workers=1, progress=False) != out
    assert cached_build(raw_files, tmp_path, workers=1, progress=False, balance=3) != out


def test_scrubs_fast_character_classes_match_the_unicode_definitions() -> None:
    import re
    import unicodedata

    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert re.findall(f"[{DIGITS}]", every) == [c for c in every if c.isdigit()]
    odd = {"Cc", "Co", "Cs"}
    assert ODD_CHARACTERS.findall(every) == [c for c in every if c == "\ufffd" or unicodedata.category(c) in odd]
    assert scrub("Model KT-1500X2 ² widget①abc x  y\x01z") == "Model ² x y z"


def test_first_copies_keeps_what_dedupe_keeps() -> None:
    from collections import Counter

    import numpy as np

    from pricer.data.corpus import first_copies
    from pricer.data.curate import dedupe
    from pricer.data.shards import key64
    from pricer.items import Item

    # "B" first comes with a text already taken (dropped), so its later copy with a new text is kept
    items = [Item("A", "C", 1.0, "one"), Item("a", "C", 2.0, "two"), Item("B", "C", 3.0, "one"),
             Item("C", "C", 4.0, "three"), Item("b", "C", 5.0, "four"), Item("D", "C", 6.0, "three")]
    keys = [np.array([key64(f(i)) for i in items], dtype=np.uint64) for f in (lambda i: i.title.casefold(),
                                                                              lambda i: i.text)]
    kept = [items[p] for p in np.flatnonzero(first_copies(*keys))]
    assert kept == list(dedupe(items, Counter())) == [items[0], items[3], items[4]]


def test_bench_data_reports_speed_and_the_process_trees_peak_memory(tmp_path: Path, capsys) -> None:
    import json

    from sweeps.cli.main import main

    assert main(["bench", "data", "--lines", "300", "--workers", "2", "--dir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [run] = result["runs"]
    assert run["workers"] == 2 and result["lines"] == run["lines"] == 300
    assert 250 < run["kept"] < 300  # one line in 20 is unpriced
    assert 0 < run["peak_anonymous_gib"] < run["peak_rss_gib"] < 2 and run["cpu_seconds"] > 0
    assert run["speed_vs_first"] == 1.0
    assert len(list(tmp_path.glob("raw-300-*.jsonl"))) == 2 and not list(tmp_path.glob("built-*"))
    assert main(["bench", "data", "--lines", "300", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err

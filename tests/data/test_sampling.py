"""The recipe's category-weighted sampling on the real sample: the minority's share rises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pricer.data.dataset import build
from pricer.data.sampling import Sampling, counts_by_band, sampled_positions
from pricer.errors import SpecError


def _share(counts: dict[str, int], name: str) -> float:
    return counts.get(name, 0) / sum(counts.values())


@pytest.mark.parametrize("weights", ["inverse", {"Appliances": 1, "*": 5}])
def test_category_weights_favour_the_under_represented(sample_path: Path, weights) -> None:
    # Appliances is 44 % of the sample, Cell_Phones_and_Accessories 1.7 %
    report = build(sample_path, None, sampling=Sampling(cap=8, category_weights=weights), workers=1, progress=False)
    before, after = report.categories_before, report.categories
    assert report.dropped["over_bucket_cap"] > 1000
    assert _share(after, "Appliances") < _share(before, "Appliances")
    if weights == "inverse":  # the smallest category gains too; with the recipe's 1-vs-5 only Appliances loses
        assert _share(after, "Cell_Phones_and_Accessories") > _share(before, "Cell_Phones_and_Accessories")
    uniform = build(sample_path, None, balance=8, workers=1, progress=False)
    assert uniform.kept == report.kept  # the same cap per dollar, only the draw differs
    assert _share(after, "Appliances") < _share(uniform.categories, "Appliances")
    assert sum(report.bands.values()) == report.kept and sum(report.bands_before.values()) == report.kept + \
        report.dropped["over_bucket_cap"]


def test_buckets_from_keep_all_from_up_keep_everything(sample_path: Path) -> None:
    capped = build(sample_path, None, sampling=Sampling(cap=2), workers=1, progress=False)
    kept_high = build(sample_path, None, sampling=Sampling(cap=2, keep_all_from=250), workers=1, progress=False)
    for band in ("$250-500", "$500-1000"):
        assert kept_high.bands[band] == kept_high.bands_before[band] > capped.bands[band]
    assert kept_high.bands["$0-10"] == capped.bands["$0-10"]


def test_sampling_is_reproducible_and_follows_the_seed() -> None:
    rng = np.random.default_rng(0)
    prices = rng.uniform(5, 15, 3000)
    codes = (rng.uniform(size=3000) < 0.2).astype(np.int64)  # category 1: a 20 % minority
    sampling = Sampling(cap=50)
    kept = sampled_positions(prices, codes, ["Big", "Small"], sampling, seed=1)
    assert kept == sampled_positions(prices, codes, ["Big", "Small"], sampling, seed=1)
    assert kept != sampled_positions(prices, codes, ["Big", "Small"], sampling, seed=2)
    assert len(kept) == len(set(kept)) == 50 * len(set(np.rint(prices).astype(int)))
    assert codes[kept].mean() > 0.4  # inverse weights: 4x the weight, about half of each bucket
    assert sum(counts_by_band(prices[kept]).values()) == len(kept)


def test_category_weights_parse_from_the_command_line() -> None:
    assert Sampling.parse_weights("Automotive=1,*=5") == {"Automotive": 1.0, "*": 5.0}
    assert Sampling.parse_weights("inverse") == "inverse"
    with pytest.raises(SpecError, match="--category-weights: 'Automotive' is not CATEGORY=WEIGHT"):
        Sampling.parse_weights("Automotive")

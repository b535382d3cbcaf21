"""Price parsing and scoring, checked by hand on small inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pricer.metrics import Metrics, band, parse_price, scatter_chart, score


@pytest.mark.parametrize("text, price", [
    ("$1,234.50", 1234.5), ("12", 12.0), ("12.", 12.0), ("   42.00", 42.0), (" $ 7.5 dollars", 7.5),
    ("99.00\n\nHow much does this cost", 99.0), ("Price is $149.99", 149.99), (".5", 0.5),
    ("-5", 5.0), ("1,2,3", 1.0), ("12,345,678", 12345678.0),
    ("garbage", None), ("", None), ("$", None), ("...", None), (None, None),
])
def test_parse_price(text, price):
    assert parse_price(text) == price


def test_score_by_hand():
    truths = [100.0, 50.0, 60.0, 200.0]
    preds = [110.0, 95.0, None, 300.0]  # errors 10 (hit), 45 (near), 60 as $0 (near), 100 (far)
    m = score(truths, preds)
    assert m.mae == pytest.approx((10 + 45 + 60 + 100) / 4)
    logs = [math.log(111 / 101), math.log(96 / 51), math.log(1 / 61), math.log(301 / 201)]
    assert m.rmsle == pytest.approx(math.sqrt(sum(x * x for x in logs) / 4))
    assert (m.hit_rate, m.band_rate, m.n, m.misses) == (0.25, 0.5, 4, 1)


def test_hits_and_bands_are_dollars_or_percent():
    assert band(500, 590) == "hit"     # $90 but 18 %
    assert band(30, 69) == "hit"       # 130 % but $39
    assert band(500, 690) == "near"    # $190 but 38 %
    assert band(100, 179) == "near"    # $79
    assert band(100, 180) == "far"     # $80 and 80 %
    assert band(1000, 1400) == "far"   # exactly 40 %


def test_per_category_breakdown():
    m = score([10.0, 20.0, 300.0], [12.0, 20.0, 100.0], categories=["A", "A", "B"])
    assert m.per_category["A"]["mae"] == pytest.approx(1.0) and m.per_category["A"]["n"] == 2
    assert m.per_category["B"] == {"mae": 200.0, "rmsle": pytest.approx(math.log(301 / 101)),
                                   "hit_rate": 0.0, "band_rate": 0.0, "n": 1, "misses": 0}
    d = m.to_dict()
    assert set(d) >= {"mae", "rmsle", "hit_rate", "band_rate", "n", "misses", "per_category"}


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="hit_rate"):
        Metrics(mae=1.0, rmsle=0.1, hit_rate=1.5, band_rate=0.0, n=2)
    with pytest.raises(ValueError, match="misses"):
        Metrics(mae=1.0, rmsle=0.1, hit_rate=0.5, band_rate=0.0, n=2, misses=3)
    with pytest.raises(ValueError, match="2 truths, 1 predictions"):
        score([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="nothing"):
        score([], [])


def test_scatter_chart_writes_a_png(tmp_path: Path):
    path = scatter_chart([10.0, 100.0, 500.0], [12.0, None, 900.0], tmp_path / "charts" / "s.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_the_bootstrap_interval_holds_the_mean_is_seeded_and_narrows_with_more_items() -> None:
    import random

    from pricer.metrics import bootstrap_interval

    rng = random.Random(3)
    few = [rng.expovariate(1 / 50) for _ in range(40)]
    many = few * 10
    low, high = bootstrap_interval(few)
    assert low < sum(few) / len(few) < high
    assert bootstrap_interval(few) == (low, high)  # same items, same interval
    assert bootstrap_interval(few, seed=1) != (low, high)
    many_low, many_high = bootstrap_interval(many)
    assert many_high - many_low < (high - low) / 2  # 10x the items: about 1/sqrt(10) as wide
    assert bootstrap_interval([7.0]) == (7.0, 7.0)

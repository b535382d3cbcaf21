"""Price ranges from the median walk's masses, their coverage, and split-conformal calibration."""

from __future__ import annotations

import math
import random

import pytest

from pricer.errors import SpecError
from pricer.predict.intervals import (
    PriceRange,
    check_levels,
    conformal_scale,
    interval_scores,
    parse_levels,
    range_of,
    weighted_quantile,
)
from pricer.predict.pricetree import weighted_median


def test_the_range_holds_the_median_and_the_quantiles_of_the_mass() -> None:
    mass = {5: 0.1, 12: 0.2, 40: 0.4, 90: 0.2, 400: 0.1}  # cumulative 0.1, 0.3, 0.7, 0.9, 1.0
    r = range_of(mass, (0.1, 0.9))
    assert (r.low, r.price, r.high) == (5.0, 40.0, 90.0)
    assert r.price == weighted_median(mass)
    assert range_of(mass, (0.31, 0.95)) == PriceRange(40.0, 40.0, 400.0)
    assert weighted_quantile({}, 0.5) is None and range_of({}) is None


def test_unnormalised_mass_gives_the_same_range() -> None:
    mass = {3: 1.0, 30: 2.0, 300: 1.0}
    assert range_of(mass) == range_of({k: v / 40 for k, v in mass.items()})


def test_scaling_widens_in_log_space_and_keeps_the_median_inside() -> None:
    r = PriceRange(99.0, 49.0, 199.0)
    wide, narrow = r.scaled(2.0), r.scaled(0.5)
    assert wide.low < r.low < narrow.low <= r.price <= narrow.high < r.high < wide.high
    assert math.log1p(wide.high) - math.log1p(99) == pytest.approx(2 * (math.log1p(199) - math.log1p(99)))
    assert (r.scaled(0.0).low, r.scaled(0.0).high) == pytest.approx((99.0, 99.0))


def test_coverage_counts_misses_as_not_covered_and_width_is_relative_to_the_truth() -> None:
    ranges = [PriceRange(10, 8, 12), PriceRange(100, 50, 150), None]
    coverage, width = interval_scores(ranges, [11.0, 200.0, 30.0])
    assert coverage == pytest.approx(1 / 3)
    assert width == pytest.approx((4 / 11 + 100 / 200) / 2)


def test_conformal_factor_makes_held_out_coverage_nominal() -> None:
    rng = random.Random(0)

    def sample(n: int) -> tuple[list[PriceRange], list[float]]:
        # ranges three times too narrow for the noise: raw coverage far below 80 %
        prices = [math.exp(rng.uniform(1, 6)) for _ in range(n)]
        truths = [p * math.exp(rng.gauss(0, 0.6)) for p in prices]
        ranges = [PriceRange(p, p * math.exp(-0.26), p * math.exp(0.26)) for p in prices]
        return ranges, truths

    val, val_truths = sample(400)
    test, test_truths = sample(2000)
    raw, _ = interval_scores(test, test_truths)
    factor = conformal_scale(val, val_truths, 0.8)
    calibrated, _ = interval_scores([r.scaled(factor) for r in test], test_truths)
    assert raw < 0.45 and factor > 2
    assert 0.76 <= calibrated <= 0.84
    assert conformal_scale(val[:5], val_truths[:5], 0.8) is None  # too few items to calibrate on


@pytest.mark.parametrize("levels", [(0.0, 0.9), (0.1, 1.0), (0.9, 0.1), (0.5, 0.5), (-0.1, 0.9)])
def test_levels_outside_zero_one_are_refused_in_one_line(levels) -> None:
    with pytest.raises(SpecError, match=r"0 < low < high < 1"):
        check_levels(levels)


def test_cli_levels_parse() -> None:
    assert parse_levels("0.05,0.95") == (0.05, 0.95)
    with pytest.raises(SpecError, match="--levels"):
        parse_levels("ten,ninety")
    with pytest.raises(SpecError, match="--levels"):
        parse_levels("0.1")

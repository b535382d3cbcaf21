"""Combining predictors: the weighted geometric mean and the weights fitted on validation."""

from __future__ import annotations

import math

import pytest

from pricer.predict.ensemble import combine, fit_weights


def test_combine_is_a_weighted_geometric_mean_in_log1p_space() -> None:
    out = combine([[99.0, 9.0], [0.0, 99.0]], (0.5, 0.5))
    assert out[0] == pytest.approx(math.expm1(0.5 * math.log(100)))
    assert out[1] == pytest.approx(math.expm1(0.5 * math.log(10) + 0.5 * math.log(100)))


def test_a_member_that_gave_no_price_leaves_the_others_weights_renormalised() -> None:
    assert combine([[None, None], [20.0, None]], (0.7, 0.3)) == [pytest.approx(20.0), None]


def test_fit_weights_finds_the_member_that_is_right_and_mixes_complementary_ones() -> None:
    truths = [10.0, 100.0, 50.0, 500.0]
    right, wrong = truths, [200.0, 1.0, 400.0, 5.0]
    assert fit_weights([wrong, right], truths) == (0.0, 1.0)
    # one always 2x too high, the other 2x too low: the geometric mean is exact
    high, low = [2 * t for t in truths], [t / 2 for t in truths]
    weights = fit_weights([high, low], truths)
    assert weights[0] == pytest.approx(0.5, abs=0.1)

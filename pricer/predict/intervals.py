"""Price ranges: quantiles of the model's own price distribution, and their calibration.

Median decoding (`pricer.predict.pricetree`) walks the distribution over prices the model would
write; its 10th and 90th percentiles (the levels are configurable) make an 80 % range around the
median at no extra cost. A tiny model fine-tuned for minutes is rarely calibrated, so a trial
measures the range's coverage on the validation items and widens or narrows it by one factor
(split conformal, in log1p-price space around the median) until validation coverage is nominal.
The factor is recorded in the folder's ``pricer.json`` and applied whenever the folder prices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pricer.errors import SpecError

DEFAULT_LEVELS = (0.1, 0.9)
# fewer validation items than this give no calibration (the factor stays 1): a factor fitted on a
# handful of items moves the range more than it corrects it
MIN_CALIBRATION_ITEMS = 20


def check_levels(levels: Sequence[float], where: str = "--levels") -> tuple[float, float]:
    """``(low, high)`` with ``0 < low < high < 1``; SpecError names `where` otherwise."""
    try:
        low, high = (float(v) for v in levels)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: two quantile levels, low and high (got {levels!r})") from None
    if not (0 < low < high < 1):
        raise SpecError(f"{where}: levels must satisfy 0 < low < high < 1, e.g. 0.1,0.9 (got {low:g},{high:g})")
    return low, high


def parse_levels(text: str) -> tuple[float, float]:
    """The CLI's ``--levels 0.1,0.9``."""
    try:
        return check_levels([float(v) for v in text.split(",")])
    except ValueError:
        raise SpecError(f"--levels: two numbers in (0, 1), e.g. 0.1,0.9 (got {text!r})") from None


@dataclass(frozen=True)
class PriceRange:
    """A price with the range the model puts it in: ``low <= price <= high`` (dollars)."""

    price: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.price <= self.high:
            raise ValueError(f"PriceRange: need low <= price <= high (got {self.low}, {self.price}, {self.high})")

    def scaled(self, factor: float) -> PriceRange:
        """The range widened (factor > 1) or narrowed around the price, in log1p space: a $10
        item's range and a $500 item's grow by the same proportion."""
        if factor == 1.0:
            return self
        centre = math.log1p(self.price)

        def move(value: float) -> float:
            return max(0.0, math.expm1(centre + factor * (math.log1p(value) - centre)))

        return PriceRange(self.price, min(self.price, move(self.low)), max(self.price, move(self.high)))

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


def needed_scale(r: PriceRange, truth: float) -> float:
    """The smallest factor for which `r.scaled(factor)` covers `truth` (inf when the range has no
    width on that side)."""
    centre, target = math.log1p(r.price), math.log1p(truth)
    edge = math.log1p(r.high if target > centre else r.low)
    if target == centre:
        return 0.0
    if edge == centre:
        return math.inf
    return (target - centre) / (edge - centre)


def conformal_scale(ranges: Sequence[PriceRange | None], truths: Sequence[float], nominal: float) -> float | None:
    """Split conformal: the factor that makes `nominal` of these (validation) items covered, the
    ``ceil((n + 1) * nominal)``-th smallest factor any item needs. None when fewer than
    `MIN_CALIBRATION_ITEMS` items have a range, or no finite factor reaches the level.

    Items without a range (the model wrote no number) are left out: no factor covers them.
    """
    needs = sorted(needed_scale(r, t) for r, t in zip(ranges, truths, strict=True) if r is not None)
    n = len(needs)
    if n < MIN_CALIBRATION_ITEMS:
        return None
    k = min(n, math.ceil((n + 1) * nominal))
    factor = needs[k - 1]
    return factor if math.isfinite(factor) and factor > 0 else None


def interval_scores(ranges: Sequence[PriceRange | None], truths: Sequence[float]) -> tuple[float, float | None]:
    """(coverage, mean relative width): the share of items whose true price is inside its range
    (an item with no range is not covered), and the mean of ``(high - low) / true price`` over
    the items with a range (None when none has one)."""
    if len(ranges) != len(truths) or not truths:
        raise ValueError(f"interval_scores: {len(ranges)} ranges, {len(truths)} truths")
    covered = sum(r is not None and r.covers(t) for r, t in zip(ranges, truths, strict=True))
    widths = [(r.high - r.low) / t for r, t in zip(ranges, truths, strict=True) if r is not None and t > 0]
    return covered / len(truths), (sum(widths) / len(widths) if widths else None)


def weighted_quantile(mass: dict[int, float], level: float) -> float | None:
    """The smallest value at which the cumulative share of `mass` reaches `level` (to within
    float rounding: 0.1 + 0.2 of a total of 1.0000000000000002 reaches 0.3)."""
    total = sum(mass.values())
    if total <= 0:
        return None
    target = total * level * (1 - 1e-12)
    seen = 0.0
    for value in sorted(mass):
        seen += mass[value]
        if seen >= target:
            return float(value)
    return float(max(mass))


def range_of(mass: dict[int, float], levels: tuple[float, float] = DEFAULT_LEVELS) -> PriceRange | None:
    """The weighted median of one item's price masses with its two quantiles; None for no mass."""
    median = weighted_quantile(mass, 0.5)
    if median is None:
        return None
    low, high = (weighted_quantile(mass, level) for level in levels)
    return PriceRange(median, min(low, median), max(high, median))

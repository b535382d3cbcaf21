"""Two predictors on the same items: which prices better, by how much, and how sure that is.

Each item's dollar error under A and under B is a pair; the comparison is on the pairs, so the
items' own difficulty (a $900 lamp is hard for both) cancels out. The difference of mean errors
gets a paired percentile bootstrap interval (the same resampled items for both), and the
Wilcoxon signed-rank test (scipy) gives the p-value. A is said to beat B only when both agree:
the interval excludes zero and p < 0.05; otherwise they are "not told apart". The two can
disagree: the interval is about the mean of the differences, the signed-rank test about where
most of them lie (their median, roughly), and a few large differences can pull the mean away from
the median; `Paired.disagreement` says so in one line.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pricer.metrics import bootstrap_interval

ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    """A against B on `n` shared items.

    Args:
        a_mae / b_mae: mean dollar errors, each with its 95 % bootstrap interval.
        difference: mean of (A's error - B's error): negative when A is better.
        difference_interval: its paired bootstrap interval.
        p_value: Wilcoxon signed-rank, two-sided (1.0 when every pair is equal).
        median_difference: the median of (A's error - B's error), what the signed-rank test
            follows where the mean does not.
    """

    a: str
    b: str
    n: int
    a_mae: float
    a_interval: tuple[float, float]
    b_mae: float
    b_interval: tuple[float, float]
    difference: float
    difference_interval: tuple[float, float]
    p_value: float
    median_difference: float

    @property
    def told_apart(self) -> bool:
        low, high = self.difference_interval
        return self.p_value < ALPHA and (high < 0 or low > 0)

    def sentence(self) -> str:
        """One plain line: "A beats B by $3.10 [1.20, 5.00], p = 0.004", or "not told apart"
        (with `disagreement` after it when the interval and the test disagree)."""
        low, high = self.difference_interval
        if not self.told_apart:
            line = (f"{self.a} and {self.b} are not told apart on {self.n:,} items "
                    f"(A - B {dollars(self.difference, signed=True)} "
                    f"[{dollars(low, signed=True)}, {dollars(high, signed=True)}], p {_p(self.p_value)})")
            why = self.disagreement()
            return f"{line}. {why}" if why else line
        winner, loser = (self.a, self.b) if self.difference < 0 else (self.b, self.a)
        gap, (g_low, g_high) = abs(self.difference), sorted((abs(low), abs(high)))
        return (f"{winner} beats {loser} by ${gap:,.2f} [{g_low:,.2f}, {g_high:,.2f}] on {self.n:,} items, "
                f"p {_p(self.p_value)}")

    def disagreement(self) -> str:
        """Why the interval and the Wilcoxon test disagree, in one line; "" when they agree."""
        low, high = self.difference_interval
        interval_says, test_says = high < 0 or low > 0, self.p_value < ALPHA
        if interval_says == test_says:
            return ""
        mean, median = dollars(self.difference, signed=True), dollars(self.median_difference, signed=True)
        smallest_p = 2.0 ** (1 - self.n)  # the exact test's floor: every difference with one sign
        if interval_says and smallest_p >= ALPHA:
            return (f"The interval and the Wilcoxon test disagree because {self.n} items are too few for the test: "
                    f"its p can't go below {smallest_p:.3g} (mean difference {mean}, median {median})")
        why = "The interval and the Wilcoxon test disagree because the mean and the median of the differences disagree"
        if interval_says:
            return (f"{why}: a few large differences move the mean ({mean}, its interval clear of zero) while "
                    f"most items barely differ (median {median}, p {_p(self.p_value)})")
        return (f"{why}: most items lean one way (median {median}, p {_p(self.p_value)}) while a few large "
                f"differences pull the mean ({mean}) and widen its interval across zero")

    def to_dict(self) -> dict:
        return {**asdict(self), "told_apart": self.told_apart, "sentence": self.sentence(),
                "disagreement": self.disagreement()}


def dollars(value: float, *, signed: bool = False) -> str:
    """``$3.22``; with `signed` ``+$3.22`` / ``\u2212$3.22`` (a true minus sign before the dollar sign,
    never ``$-3.22``)."""
    sign = "\u2212" if value < 0 and round(abs(value), 2) > 0 else ("+" if signed else "")
    return f"{sign}${abs(value):,.2f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def wilcoxon_p(a_errors: Sequence[float], b_errors: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired errors (1.0 when all pairs tie)."""
    import numpy as np
    from scipy.stats import wilcoxon

    diff = np.asarray(a_errors, dtype=np.float64) - np.asarray(b_errors, dtype=np.float64)
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(a_errors, b_errors).pvalue)


def paired_interval(a_errors: Sequence[float], b_errors: Sequence[float], confidence: float = 0.95, *,
                    resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(A - B), resampling items (pairs stay together)."""
    return bootstrap_interval([x - y for x, y in zip(a_errors, b_errors, strict=True)], confidence,
                              resamples=resamples, seed=seed)


def compare(a: str, a_errors: Sequence[float], b: str, b_errors: Sequence[float]) -> Paired:
    """The paired comparison of two per-item error lists on the same items, in the same order.

    Raises:
        ValueError: lengths differ or nothing to compare (a caller's bug: the runs scored other items).
    """
    if len(a_errors) != len(b_errors) or not a_errors:
        raise ValueError(f"compare: {len(a_errors)} errors for {a}, {len(b_errors)} for {b}")
    n = len(a_errors)
    a_mae, b_mae = sum(a_errors) / n, sum(b_errors) / n
    return Paired(a=a, b=b, n=n, a_mae=a_mae, a_interval=bootstrap_interval(a_errors), b_mae=b_mae,
                  b_interval=bootstrap_interval(b_errors), difference=a_mae - b_mae,
                  difference_interval=paired_interval(a_errors, b_errors), p_value=wilcoxon_p(a_errors, b_errors),
                  median_difference=statistics.median(x - y for x, y in zip(a_errors, b_errors, strict=True)))

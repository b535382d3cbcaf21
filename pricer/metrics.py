"""How every prediction is judged: the price parser for model output, `score`, the scatter chart.

The recipe's yardsticks: average absolute error in dollars, RMSLE, and the hit rate (error under
$40 or under 20 % of the true price). Its chart colours a second, middle band (under $80 or
under 40 %, but not a hit); `band_rate` is the share of predictions in that band alone, so
hit_rate + band_rate + the share of misses-by-far add to 1.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HIT_DOLLARS, HIT_FRACTION = 40.0, 0.20
# what only the whole split has: the ranges' scores, and what pricing it cost
_WHOLE_SPLIT = ("coverage", "interval_width", "prompt_tokens_mean", "seconds_per_1000", "peak_rss_gib")
BAND_DOLLARS, BAND_FRACTION = 80.0, 0.40
# Price bands, in dollars, of the build report and the study report's errors: [0, 10), [10, 50),
# ... [500, 1000]; a price above the last edge counts in the last band.
PRICE_BANDS = (0, 10, 50, 100, 250, 500, 1000)
BAND_NAMES = tuple(f"${low:g}-{high:g}" for low, high in zip(PRICE_BANDS[:-1], PRICE_BANDS[1:], strict=True))

# "1,234.50" (commas only between thousands), "12", "12.", ".5"; a sign is ignored on purpose:
# "$-12" from a model is a dash, not a negative price.
PRICE_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+")


def parse_price(text: str | None) -> float | None:
    """The first price in a model's output, e.g. ``" $1,234.50"`` -> 1234.5; None when there is
    none (a miss, never an exception)."""
    if not isinstance(text, str):
        return None
    match = PRICE_NUMBER.search(text)
    if not match:
        return None
    value = float(match.group().replace(",", ""))
    return value if math.isfinite(value) else None


def price_band(price: float) -> int:
    """The index into `BAND_NAMES` of a price's band."""
    return min(max(bisect.bisect_right(PRICE_BANDS, price) - 1, 0), len(BAND_NAMES) - 1)


def band(truth: float, pred: float) -> str:
    """``"hit"``, ``"near"`` (the recipe's middle band) or ``"far"``."""
    error = abs(pred - truth)
    relative = error / truth if truth > 0 else math.inf
    if error < HIT_DOLLARS or relative < HIT_FRACTION:
        return "hit"
    if error < BAND_DOLLARS or relative < BAND_FRACTION:
        return "near"
    return "far"


@dataclass(frozen=True)
class Metrics:
    """Scores of one set of predictions.

    Args:
        mae: mean absolute error in dollars.
        rmsle: root mean squared log error, ``log1p`` of prices (negatives clipped to 0).
        hit_rate: share with error < $40 or < 20 % of the true price, in [0, 1].
        band_rate: share in the middle band only (< $80 or < 40 %, not a hit), in [0, 1].
        n: items scored, misses included.
        misses: predictions that could not be parsed (scored as $0).
        per_category: category -> the same keys as `to_dict` without ``per_category``.
        errors: the absolute error of each item, in the items' order (misses as $0); what the
            bootstrap interval and the paired tests between trials are computed from. Not in
            `to_dict`: JSON summaries stay small.
        coverage: the share of true prices inside the predicted price ranges, when the
            predictions came with ranges (`pricer.predict.intervals`), else None.
        interval_width: the ranges' mean ``(high - low) / true price``, else None.
        prompt_tokens_mean: the mean prompt length in tokens, for a model (None for a baseline).
        seconds_per_1000: wall seconds to price 1,000 of these items (prompts, neighbours and
            decoding; for a baseline its predict), when measured.
        peak_rss_gib: the pricing process's peak resident memory so far, when measured.
    """

    mae: float
    rmsle: float
    hit_rate: float
    band_rate: float
    n: int
    misses: int = 0
    per_category: dict[str, dict] = field(default_factory=dict)
    errors: tuple[float, ...] = field(default=(), repr=False, compare=False)
    coverage: float | None = None
    interval_width: float | None = None
    # what pricing cost, not what it scored: two runs of the same predictions compare equal
    prompt_tokens_mean: float | None = field(default=None, compare=False)
    seconds_per_1000: float | None = field(default=None, compare=False)
    peak_rss_gib: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.coverage is not None and not 0.0 <= self.coverage <= 1.0:
            raise ValueError(f"Metrics: coverage must be in [0, 1] (got {self.coverage})")
        if self.n < 1:
            raise ValueError(f"Metrics: n must be >= 1 (got {self.n})")
        if not 0 <= self.misses <= self.n:
            raise ValueError(f"Metrics: misses must be in [0, n={self.n}] (got {self.misses})")
        for name in ("hit_rate", "band_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Metrics: {name} must be in [0, 1] (got {getattr(self, name)})")
        if self.hit_rate + self.band_rate > 1.0 + 1e-9:
            raise ValueError("Metrics: hit_rate + band_rate must be <= 1")
        if self.mae < 0 or self.rmsle < 0:
            raise ValueError("Metrics: mae and rmsle must be >= 0")

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["errors"]
        return out

    def mae_interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """`bootstrap_interval` of the dollar error; None when the per-item errors are unknown."""
        return bootstrap_interval(self.errors, confidence) if self.errors else None


def bootstrap_interval(errors: Sequence[float], confidence: float = 0.95, *, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `errors` (seeded: the same items give the same
    interval, so two runs' intervals differ only by their errors).

    Two trials on 200 validation items whose intervals overlap are not told apart by their means;
    the leaderboard shows the interval so nobody ranks noise.
    """
    import numpy as np
    from scipy.stats import bootstrap

    values = np.asarray(errors, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap_interval: no errors")
    if values.size == 1:  # every resample is the one item (scipy refuses a single observation)
        return float(values[0]), float(values[0])
    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence,
                       method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _plain(truths: Sequence[float], preds: Sequence[float | None]) -> Metrics:
    n = len(truths)
    values = [0.0 if p is None else float(p) for p in preds]
    errors = [abs(p - t) for t, p in zip(truths, values, strict=True)]
    squared_logs = [(math.log1p(max(p, 0.0)) - math.log1p(max(t, 0.0))) ** 2
                    for t, p in zip(truths, values, strict=True)]
    bands = [band(t, p) for t, p in zip(truths, values, strict=True)]
    return Metrics(mae=sum(errors) / n, rmsle=math.sqrt(sum(squared_logs) / n),
                   hit_rate=bands.count("hit") / n, band_rate=bands.count("near") / n, n=n,
                   misses=sum(p is None for p in preds), errors=tuple(errors))


def score(truths: Sequence[float], preds: Sequence[float | None],
          categories: Sequence[str] | None = None) -> Metrics:
    """Score predictions against true prices; a None prediction is a miss, scored as $0.

    Args:
        categories: one per item; fills `Metrics.per_category` when given.

    Raises:
        ValueError: empty input or lengths that differ (a caller's bug).
    """
    if len(truths) != len(preds) or (categories is not None and len(categories) != len(truths)):
        raise ValueError(f"score: {len(truths)} truths, {len(preds)} predictions"
                         + (f", {len(categories)} categories" if categories is not None else ""))
    if len(truths) == 0:
        raise ValueError("score: nothing to score")
    overall = _plain(truths, preds)
    if categories is None:
        return overall
    groups: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(categories):
        groups[category].append(i)
    per_category = {}
    for category in sorted(groups):
        part = _plain([truths[i] for i in groups[category]], [preds[i] for i in groups[category]])
        per_category[category] = {k: v for k, v in part.to_dict().items()
                                  if k not in ("per_category", *_WHOLE_SPLIT)}
    return Metrics(**{**overall.to_dict(), "per_category": per_category, "errors": overall.errors})


BAND_COLOURS = {"hit": "tab:green", "near": "tab:orange", "far": "tab:red"}


def scatter_chart(truths: Sequence[float], preds: Sequence[float | None], path: Path,
                  title: str = "") -> Path:
    """True vs predicted price as a PNG, each point coloured by its band, with the y = x line.

    Misses are drawn at $0. Raises ValueError for empty or unequal inputs. Uses matplotlib's Agg canvas directly (no pyplot, no display).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = score(truths, preds)
    values = [0.0 if p is None else float(p) for p in preds]
    bands = [band(t, p) for t, p in zip(truths, values, strict=True)]
    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = max([*truths, *values, 1.0])
    ax.plot([0, top], [0, top], color="tab:blue", linewidth=1, label="y = x")
    for name, colour in BAND_COLOURS.items():
        xs = [t for t, b in zip(truths, bands, strict=True) if b == name]
        ys = [p for p, b in zip(values, bands, strict=True) if b == name]
        if xs:
            ax.scatter(xs, ys, s=8, color=colour, alpha=0.7, label=f"{name} ({len(xs)})")
    ax.set_xlim(0, top * 1.02)
    ax.set_ylim(0, top * 1.02)
    ax.set_xlabel("true price ($)")
    ax.set_ylabel("predicted price ($)")
    subtitle = f"MAE ${m.mae:,.2f}  RMSLE {m.rmsle:.2f}  hits {m.hit_rate:.1%}"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path

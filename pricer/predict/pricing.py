"""A retailer's product table: priced (`pricer predict --input`: every row kept, the price and its
range added, unreadable rows written without one) or scored against its own prices (`pricer
evaluate`: every priced row, those outside the training range reported on their own)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pricer.data.scoring import ScoringSet
from pricer.data.tables import NO_ANSWER, Columns, Table, texts_of, write_priced
from pricer.metrics import Metrics, score
from pricer.predict.intervals import PriceRange
from pricer.predict.predictor import Predictor, predict_items


@dataclass(frozen=True)
class PricingReport:
    """What `price_table` wrote.

    Args:
        problems: (row number, why) of every row written without a price.
        ranges: whether the table got ``price_low`` / ``price_high`` (median decoding only).
    """

    out: Path
    rows: int
    priced: int
    problems: list[tuple[int, str]]
    ranges: bool = False


def gives_ranges(predictor: Predictor) -> bool:
    """Whether a predictor prices with a range: a folder read by median decoding. An ensemble
    does not (its random forest member has no price distribution to take quantiles of), nor a
    folder that reads greedily."""
    return hasattr(predictor, "predict_ranges") and getattr(predictor, "decode", None) == "median"


def price_texts(predictor: Predictor, texts: Sequence[str], *, levels: tuple[float, float] | None = None,
                batch_size: int = 32, progress: bool = False) -> tuple[list[float | None], list[PriceRange | None] | None]:
    """Prices of prompt-ready texts, and their ranges when the predictor gives them (else None)."""
    if not gives_ranges(predictor):
        return predictor.predict(texts, batch_size=batch_size, progress=progress), None
    ranges = predictor.predict_ranges(texts, levels=levels, batch_size=batch_size, progress=progress)
    return [None if r is None else r.price for r in ranges], ranges


@dataclass(frozen=True)
class PricedRows:
    """`price_rows`'s answer, one entry per row in its order.

    Args:
        ranges: (low, high) per priced row when the predictor gives ranges, else None.
        problems: why a row has no price (its own problem, or `NO_ANSWER`); empty when priced.
    """

    prices: list[float | None]
    ranges: list[tuple[float, float] | None] | None
    problems: list[str]


def price_rows(predictor: Predictor, texts: Sequence[str], problems: Sequence[str], *,
               levels: tuple[float, float] | None = None, batch_size: int = 32,
               progress: bool = False) -> PricedRows:
    """Price the rows without a problem (a row with one is never sent to the model: it would price
    an empty text anyway), each price back at its row; a row the model gave no price is flagged
    `NO_ANSWER`."""
    readable = [i for i, problem in enumerate(problems) if not problem]
    prices: list[float | None] = [None] * len(texts)
    bounds: list[tuple[float, float] | None] = [None] * len(texts)
    predicted, ranges = (price_texts(predictor, [texts[i] for i in readable], levels=levels, batch_size=batch_size,
                                     progress=progress) if readable else ([], None))
    for k, (i, price) in enumerate(zip(readable, predicted, strict=True)):
        prices[i] = price
        if ranges is not None and ranges[k] is not None:
            bounds[i] = (ranges[k].low, ranges[k].high)
    flagged = [problem or ("" if price is not None else NO_ANSWER) for problem, price in zip(problems, prices, strict=True)]
    return PricedRows(prices, bounds if gives_ranges(predictor) else None, flagged)


EMPTY_TEXT = "empty text"


@dataclass(frozen=True)
class FreeText:
    """One free-form text's answer: its price and range, or the problem why there is none."""

    price: float | None
    range: PriceRange | None
    problem: str  # "" when priced


def price_free_texts(predictor: Predictor, values: Sequence[object], *, levels: tuple[float, float] | None = None,
                     batch_size: int = 32, progress: bool = False) -> list[FreeText]:
    """Free-form product texts (typed, piped or sent to the served model), cleaned as training
    texts were (`pricer.data.curate.clean_text`) and priced, one answer per value in order. A
    text that cleans to nothing (empty, blank, ``!!!``) or a value that is no string gets a
    problem, never a price: the model would price it anyway ($40)."""
    from pricer.data.curate import clean_text, has_words

    texts, problems = [], []
    for value in values:
        text = clean_text(value) if isinstance(value, str) else ""
        texts.append(text)
        problems.append("" if has_words(text) else
                        EMPTY_TEXT if isinstance(value, str) or value is None else
                        f"unreadable text (a {type(value).__name__}, not a string)")
    rows = price_rows(predictor, texts, problems, levels=levels, batch_size=batch_size, progress=progress)
    ranges = rows.ranges or [None] * len(texts)
    return [FreeText(None if price is None else float(price),
                     PriceRange(float(price), *bounds) if price is not None and bounds else None, problem)
            for price, bounds, problem in zip(rows.prices, ranges, rows.problems, strict=True)]


def price_table(predictor: Predictor, table: Table, out: str | Path, *, columns: Columns | None = None,
                levels: tuple[float, float] | None = None, batch_size: int = 32,
                progress: bool = True) -> PricingReport:
    """Price every row of a product table (`read_table`) with one loaded predictor and write the
    table with the price (and its range, `gives_ranges`) added (`write_priced`); unreadable rows
    are written too, with no price."""
    pairs = texts_of(table, columns or Columns())
    rows = [row for row, _ in pairs]
    priced = price_rows(predictor, [text for _, text in pairs], [row.problem for row in rows], levels=levels,
                        batch_size=batch_size, progress=progress)
    path = write_priced(out, table.header, rows, priced.prices, priced.ranges, priced.problems)
    problems = [(row.number, problem) for row, problem in zip(rows, priced.problems, strict=True) if problem]
    return PricingReport(path, len(rows), len(rows) - len(problems), problems, priced.ranges is not None)


@dataclass(frozen=True)
class CatalogScore:
    """`score_catalog`'s answer.

    Args:
        metrics: every scored row (with the ranges' coverage when the predictor gives ranges).
        in_range / out_of_range: the rows whose true price is inside / outside the range training
            data is curated to (None when there are none).
        outside: each out-of-range row: its row number, title, price, predicted price and error.
        unreadable: (row number, why) of each row that could not be scored.
    """

    metrics: Metrics
    in_range: Metrics | None
    out_of_range: Metrics | None
    outside: list[dict]
    unreadable: list[tuple[int, str]]

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(),
                "in_training_range": self.in_range.to_dict() if self.in_range else None,
                "out_of_training_range": ({**self.out_of_range.to_dict(), "rows": self.outside}
                                          if self.out_of_range else None),
                "unreadable": [{"row": n, "problem": why} for n, why in self.unreadable]}


def score_catalog(predictor: Predictor, scoring: ScoringSet, *, levels: tuple[float, float] | None = None,
                  batch_size: int = 32, progress: bool = False) -> CatalogScore:
    """Price every scorable row (`pricer.data.scoring.scoring_items`) and score it against the
    row's own price: all rows together, then those inside and outside the training price range."""
    from pricer.predict.evaluate import with_intervals

    items = scoring.items
    if gives_ranges(predictor):
        predictions, ranges = price_texts(predictor, [i.text for i in items], levels=levels,
                                          batch_size=batch_size, progress=progress)
    else:  # an ensemble's baselines also read details and category
        predictions, ranges = predict_items(predictor, items, batch_size=batch_size, progress=progress), None
    truths = [i.price for i in items]

    def part(keep: list[int]) -> Metrics | None:
        if not keep:
            return None
        metrics = score([truths[k] for k in keep], [predictions[k] for k in keep], [items[k].category for k in keep])
        return with_intervals(metrics, [ranges[k] for k in keep], [truths[k] for k in keep]) if ranges else metrics

    inside = scoring.in_range
    everything = part(list(range(len(items))))
    outside_idx = [k for k, ok in enumerate(inside) if not ok]
    outside = [{"row": scoring.rows[k], "title": items[k].title, "price": truths[k], "predicted": predictions[k],
                "error": abs((predictions[k] or 0.0) - truths[k])} for k in outside_idx]
    return CatalogScore(everything, part([k for k, ok in enumerate(inside) if ok]), part(outside_idx), outside,
                        list(scoring.unreadable))
